// Plugins by name. The binaries load the ones their config enables; a name that starts
// with `.` or `/` is a module path whose default export is the plugin.

import { resolve } from 'node:path'
import { pathToFileURL } from 'node:url'

import { NaiadError, type NaiadPlugin } from '@naiad/proto'

const BUILTIN: Record<string, () => Promise<NaiadPlugin>> = {
  metrics: async () => (await import('./metrics.ts')).metricsPlugin,
  doctor: async () => (await import('./doctor.ts')).doctorPlugin,
  slo: async () => (await import('./slo/index.ts')).sloDaemonPlugin,
  health: async () => (await import('./health/index.ts')).daemonHealthPlugin,
  qos: async () => (await import('./qos/index.ts')).qosPlugin
}

export const BUILTIN_PLUGIN_NAMES = Object.keys(BUILTIN)

/** Loads plugins by name; a host binary adds its own built-ins (the supernode's preheat, say) in `extra`. */
export async function loadPlugins(names: string[], extra: Record<string, () => Promise<NaiadPlugin>> = {}): Promise<NaiadPlugin[]> {
  const out: NaiadPlugin[] = []
  for (const name of names) {
    const builtin = extra[name] ?? BUILTIN[name]
    if (builtin !== undefined) {
      out.push(await builtin())
      continue
    }
    if (!name.startsWith('.') && !name.startsWith('/')) {
      throw new NaiadError('PROTO_ERR_PLUGIN', `unknown plugin "${name}" (built in: ${[...BUILTIN_PLUGIN_NAMES, ...Object.keys(extra)].join(', ')}; or give a module path)`)
    }
    try {
      const mod = await import(pathToFileURL(resolve(name)).href) as { default?: NaiadPlugin }
      if (mod.default === undefined || typeof mod.default.setup !== 'function') throw new Error('its default export is not a plugin')
      out.push(mod.default)
    } catch (err) {
      throw new NaiadError('PROTO_ERR_PLUGIN', `cannot load plugin ${name}: ${(err as Error).message}`, { cause: err })
    }
  }
  return out
}
