/**
 * @naiad/dfdaemon — the per-node daemon.
 *
 * @example
 * import { createDaemon, DOWNLOAD_DEFAULTS } from '@naiad/dfdaemon'
 * const daemon = await createDaemon({
 *   dataDir: '/var/lib/naiad/dfdaemon', logger, supernodeUrl: 'http://10.0.0.1:8002',
 *   apiListen: '127.0.0.1:65003', p2pListen: ['/ip4/0.0.0.0/tcp/65002'], cacheQuota: 20 * 2 ** 30,
 *   uploadSlots: 16, download: DOWNLOAD_DEFAULTS, keepaliveMs: 5000, host: { idc: '', location: '' }
 * })
 * await daemon.start()
 * const result = await daemon.download({ url: 'https://example.com/file', headers: {} })
 */

export { createDaemon, Daemon, DOWNLOAD_DEFAULTS, splitHostPort, type DaemonOptions, type DaemonComponents } from './daemon.ts'
export { daemonOptionsFromConfig } from './config/from-config.ts'
export { DFDAEMON_COMMAND } from './config/options.ts'
export type { DownloadRequest, DownloadResult, DownloadProgress, PeerTaskOptions } from './download/peer-task.ts'
export type { SchedulerClient } from './scheduler/client.ts'
export { DiskPieceStore, type PieceStore, type StoredPiece, type StoredTask } from './storage/piece-store.ts'
export { PluginHost } from './plugins/host.ts'
export { loadPlugins, BUILTIN_PLUGIN_NAMES } from './plugins/catalog.ts'
export type { Stats } from './plugins/metrics.ts'
export { INIT_CONFIG_COMMAND, runtimeConfig, writeRuntimeConfig, containerdHostsToml, podmanRegistriesConf, dockerDaemonJson } from './init-config/runtime-config.ts'
export { ControlServer, CONTROL_DEFAULTS, type ControlHandler, type ControlRegistry } from './control/control-server.ts'
export type { DownloadCommandArgs, DownloadCommandResult, InfoCommandResult } from './control/commands.ts'
export { ORIGIN_DEFAULTS, type OriginOptions } from './source/origin.ts'
export type { DownloadEvent, DownloadRequestBody } from '@naiad/proto'
