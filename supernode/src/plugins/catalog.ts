// The supernode's built-in plugins, loaded by name when the config enables them. The catalog
// is typed by the supernode's plugin context: a daemon plugin here is a type error.

import { metricsPlugin, type PluginCatalog } from '@naiad/host'

import type { SupernodePluginContext } from '../plugin-api/context.ts'

export const SUPERNODE_PLUGINS: PluginCatalog<SupernodePluginContext> = {
  metrics: async () => metricsPlugin<SupernodePluginContext>('supernode'),
  preheat: async () => (await import('./preheat/index.ts')).preheatPlugin,
  doctor: async () => (await import('./doctor/index.ts')).doctorAggregatorPlugin,
  slo: async () => (await import('./slo/index.ts')).sloSupernodePlugin,
  health: async () => (await import('./health/index.ts')).healthPlugin
}
