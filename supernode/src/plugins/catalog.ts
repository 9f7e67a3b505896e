// The supernode's own built-in plugins, loaded by name like the shared ones.

import type { NaiadPlugin } from '@naiad/proto'

export const SUPERNODE_PLUGINS: Record<string, () => Promise<NaiadPlugin>> = {
  preheat: async () => (await import('./preheat/index.ts')).preheatPlugin,
  doctor: async () => (await import('./doctor/index.ts')).doctorAggregatorPlugin,
  slo: async () => (await import('./slo/index.ts')).sloSupernodePlugin,
  health: async () => (await import('./health/index.ts')).healthPlugin
}
