// Plugins by name. Each binary has its own catalog of built-ins (a daemon plugin named in a
// supernode's config is an unknown plugin there, not a run-time failure); a name that
// starts with `.` or `/` is a module path whose default export is the plugin, and it must
// say it is for this binary.

import { resolve } from 'node:path'
import { pathToFileURL } from 'node:url'

import { NaiadError, type NaiadPlugin, type PluginContextBase } from '@naiad/proto'

/** A binary's built-in plugins, loaded on demand so that a disabled one costs nothing. */
export type PluginCatalog<C extends PluginContextBase> = Record<string, () => Promise<NaiadPlugin<C>>>

function isPlugin(p: unknown): p is NaiadPlugin<PluginContextBase> {
  const x = p as Partial<NaiadPlugin<PluginContextBase>> | undefined
  return x !== undefined && x !== null && typeof x.name === 'string' && typeof x.setup === 'function' && Array.isArray(x.settings) && typeof x.host === 'string'
}

/** Loads plugins by name from `catalog`, or from a module path; each must be for `host`. */
export async function loadPlugins<C extends PluginContextBase>(names: readonly string[], catalog: PluginCatalog<C>, host: C['host']): Promise<Array<NaiadPlugin<C>>> {
  const out: Array<NaiadPlugin<C>> = []
  for (const name of names) {
    const builtin = catalog[name]
    if (builtin !== undefined) {
      out.push(await builtin())
      continue
    }
    if (!name.startsWith('.') && !name.startsWith('/')) {
      throw new NaiadError('PROTO_ERR_PLUGIN', `unknown plugin "${name}" (built in: ${Object.keys(catalog).join(', ')}; or give a module path)`)
    }
    let plugin: unknown
    try {
      plugin = (await import(pathToFileURL(resolve(name)).href) as { default?: unknown }).default
    } catch (err) {
      throw new NaiadError('PROTO_ERR_PLUGIN', `cannot load plugin ${name}: ${(err as Error).message}`, { cause: err })
    }
    if (!isPlugin(plugin)) throw new NaiadError('PROTO_ERR_PLUGIN', `cannot load plugin ${name}: its default export is not a plugin (make it with supernodePlugin or daemonPlugin)`)
    if (plugin.host !== host) throw new NaiadError('PROTO_ERR_PLUGIN', `plugin ${name} (${plugin.name}) is for ${plugin.host}, not ${host}`)
    // Its host matches: the context it was written against is this binary's.
    out.push(plugin as NaiadPlugin<C>)
  }
  return out
}
