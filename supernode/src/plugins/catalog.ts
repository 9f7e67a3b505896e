// The supernode's built-in plugins, loaded by name when the config enables them.

import { metricsPlugin, type PluginCatalog } from '@naiad/host'

export const SUPERNODE_PLUGINS: PluginCatalog = {
  metrics: async () => metricsPlugin,
  preheat: async () => (await import('./preheat/index.ts')).preheatPlugin,
  doctor: async () => (await import('./doctor/index.ts')).doctorAggregatorPlugin,
  slo: async () => (await import('./slo/index.ts')).sloSupernodePlugin,
  health: async () => (await import('./health/index.ts')).healthPlugin
}
