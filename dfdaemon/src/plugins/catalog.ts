// The daemon's built-in plugins, loaded by name when the config enables them. The catalog is
// typed by the daemon's plugin context: a supernode plugin here is a type error.

import { metricsPlugin, type PluginCatalog } from '@naiad/host'

import type { DaemonPluginContext } from '../plugin-api/context.ts'

export const DAEMON_PLUGINS: PluginCatalog<DaemonPluginContext> = {
  metrics: async () => metricsPlugin<DaemonPluginContext>('dfdaemon'),
  doctor: async () => (await import('./doctor.ts')).doctorPlugin,
  slo: async () => (await import('./slo/index.ts')).sloDaemonPlugin,
  health: async () => (await import('./health/index.ts')).daemonHealthPlugin,
  qos: async () => (await import('./qos/index.ts')).qosPlugin
}
