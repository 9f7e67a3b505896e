// Plugins by name. Each binary has its own catalog of built-ins (a daemon plugin named in a
// supernode's config is an unknown plugin there, not a run-time failure); a name that
// starts with `.` or `/` is a module path whose default export is the plugin.

import { resolve } from 'node:path'
import { pathToFileURL } from 'node:url'

import { NaiadError, type NaiadPlugin } from '@naiad/proto'

export type PluginCatalog = Record<string, () => Promise<NaiadPlugin>>

/** Loads plugins by name from `catalog`, or from a module path. */
export async function loadPlugins(names: string[], catalog: PluginCatalog): Promise<NaiadPlugin[]> {
  const out: NaiadPlugin[] = []
  for (const name of names) {
    const builtin = catalog[name]
    if (builtin !== undefined) {
      out.push(await builtin())
      continue
    }
    if (!name.startsWith('.') && !name.startsWith('/')) {
      throw new NaiadError('PROTO_ERR_PLUGIN', `unknown plugin "${name}" (built in: ${Object.keys(catalog).join(', ')}; or give a module path)`)
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
