/**
 * @naiad/node-tools — tools an operator runs on a node, beside the daemon: `dfdaemon doctor`
 * (checks the node against rules) and `dfdaemon init-config` (writes a container runtime's
 * mirror configuration). The daemon's binary keeps them as sub-commands; its doctor plugin
 * runs the same checks periodically.
 *
 * @example
 * import { doctorCommand, doctorMain, initConfigMain } from '@naiad/node-tools'
 * import { runCli } from '@naiad/proto'
 * await runCli(doctorCommand(DFDAEMON_COMMAND), argv, async ({ values }) => doctorMain(values))
 * await initConfigMain(['--runtime', 'containerd', '--registry', 'docker.io', '--dry-run'])
 */

export { doctorCommand, doctorMain, daemonFactsFromConfig, runDoctor, type DaemonConfigValues } from './doctor/command.ts'
export { DOCTOR_SETTINGS, DOCTOR_DEFAULTS, doctorSettings, readDoctorSettings, type DoctorSettingValues } from './doctor/settings.ts'
export { findOnPath, fuseDeviceError, type DaemonFacts, type DoctorSettings } from './doctor/facts.ts'
export type { DoctorReport, Finding, RuleResult } from './doctor/rules.ts'
export { INIT_CONFIG_COMMAND, initConfigMain, runtimeConfig, writeRuntimeConfig, containerdHostsToml, podmanRegistriesConf, dockerDaemonJson, RUNTIMES, type RegistryOptions, type Runtime, type RuntimeConfig } from './init-config/runtime-config.ts'
