// The plugin contract. A plugin is `{ name, version, dependencies, setup(ctx) }`; through
// `ctx` it reaches only what the host binary chooses to expose. The core never imports a
// plugin: binaries load them by name from their catalog when the config enables them.

import type { Logger } from 'pino'

import type { FabricNode } from './fabric/node.ts'

export type HttpMethod = 'GET' | 'POST' | 'PUT' | 'DELETE' | 'HEAD'

export interface HttpReply {
  status?: number
  headers?: Record<string, string>
  body: string | Uint8Array | object
}

export interface HttpRequestInfo {
  params: Record<string, string>
  query: Record<string, string>
  body: unknown
}

export interface PluginContext {
  /** Which binary hosts the plugin. */
  readonly host: 'supernode' | 'dfdaemon'
  readonly logger: Logger
  /** The plugin's own settings from the `plugin-config.<name>` config key. */
  readonly settings: Record<string, unknown>
  readonly fabric: FabricNode
  /** Adds a route to the binary's HTTP API (the supernode API, or the daemon's local API). */
  route(method: HttpMethod, path: string, handler: (req: HttpRequestInfo) => Promise<HttpReply> | HttpReply): void
  /** Subscribes to a diagnostics_channel event (see events.ts); undone on close. */
  subscribe<T>(channel: string, listener: (message: T) => void): void
  /** Runs `fn` every `intervalMs` until close; errors are logged, not thrown. */
  every(intervalMs: number, fn: () => Promise<void> | void): void
  /** Registers cleanup run when the host shuts down, in reverse order. */
  onClose(fn: () => Promise<void> | void): void
  /** Host-specific extension points (scheduler filters, SQLite tables), by name. */
  readonly extensions: Record<string, unknown>
}

export interface NaiadPlugin {
  name: string
  version: string
  /** Names of plugins that must be set up first. */
  dependencies?: string[]
  setup(ctx: PluginContext): Promise<void> | void
}

/** Orders plugins so that each comes after its dependencies; rejects missing ones and cycles. */
export function orderPlugins(plugins: NaiadPlugin[]): NaiadPlugin[] {
  const byName = new Map(plugins.map((p) => [p.name, p]))
  const out: NaiadPlugin[] = []
  const state = new Map<string, 'visiting' | 'done'>()
  const visit = (p: NaiadPlugin, path: string[]): void => {
    const s = state.get(p.name)
    if (s === 'done') return
    if (s === 'visiting') throw new Error(`plugin dependency cycle: ${[...path, p.name].join(' -> ')}`)
    state.set(p.name, 'visiting')
    for (const dep of p.dependencies ?? []) {
      const d = byName.get(dep)
      if (d === undefined) throw new Error(`plugin ${p.name} needs plugin ${dep}, which is not enabled`)
      visit(d, [...path, p.name])
    }
    state.set(p.name, 'done')
    out.push(p)
  }
  for (const p of plugins) visit(p, [])
  return out
}
