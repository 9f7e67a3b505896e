/**
 * @naiad/dfdaemon — the per-node daemon.
 *
 * @example
 * import { DOWNLOAD_DEFAULTS } from '@naiad/peer'
 * import { createDaemon } from '@naiad/dfdaemon'
 * const daemon = await createDaemon({
 *   dataDir: '/var/lib/naiad/dfdaemon', logger, supernodeUrl: 'http://10.0.0.1:8002',
 *   apiListen: '127.0.0.1:65003', p2pListen: ['/ip4/0.0.0.0/tcp/65002'], cacheQuota: 20 * 2 ** 30,
 *   uploadSlots: 16, download: DOWNLOAD_DEFAULTS, keepaliveMs: 5000, host: { idc: '', location: '' }
 * })
 * await daemon.start()
 * const result = await daemon.download({ url: 'https://example.com/file', headers: {} })
 */

export { createDaemon, Daemon, type DaemonOptions, type DaemonComponents, type DaemonInfo } from './daemon.ts'
export { daemonOptionsFromConfig } from './config/from-config.ts'
export { DFDAEMON_COMMAND } from './config/options.ts'
export { DAEMON_PLUGINS } from './plugins/catalog.ts'
export { INIT_CONFIG_COMMAND, runtimeConfig, writeRuntimeConfig, containerdHostsToml, podmanRegistriesConf, dockerDaemonJson } from './init-config/runtime-config.ts'
export { ControlServer, CONTROL_DEFAULTS, type ControlHandler, type ControlRegistry } from './control/control-server.ts'
export type { DownloadCommandArgs, DownloadCommandResult, InfoCommandResult } from './control/commands.ts'
export type { DownloadEvent, DownloadRequestBody } from '@naiad/proto'
export { DOCTOR_COMMAND, doctorMain, doctorSettings, daemonFactsFromConfig, runDoctor } from './doctor/command.ts'
export { collectFacts, DOCTOR_DEFAULTS, type DaemonFacts, type DoctorSettings } from './doctor/facts.ts'
export { evaluateRules, formatReport, loadRules, rulesFromDocument, type DoctorReport, type Finding, type Rule, type RuleResult } from './doctor/rules.ts'
export { parseQuery, evaluate as evaluateQuery, QueryError, type Query, type Value as FactValue } from './doctor/query.ts'
