// The daemon's built-in plugins, loaded by name when the config enables them.

import { metricsPlugin, type PluginCatalog } from '@naiad/host'

export const DAEMON_PLUGINS: PluginCatalog = {
  metrics: async () => metricsPlugin,
  doctor: async () => (await import('./doctor.ts')).doctorPlugin,
  slo: async () => (await import('./slo/index.ts')).sloDaemonPlugin,
  health: async () => (await import('./health/index.ts')).daemonHealthPlugin,
  qos: async () => (await import('./qos/index.ts')).qosPlugin
}
