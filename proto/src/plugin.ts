// The plugin contract. A plugin names the binary it is for (`host`), the settings it takes
// (a schema the host validates `plugin-config.<name>` against before setup) and a setup that
// receives that binary's typed context: the supernode's and the daemon's contexts extend the
// base below with what each binary offers (see their public entries), so a plugin that asks
// for what its host does not have is a type error, not a run-time failure. Every
// registration returns a disposer, and the host runs what is left of them at close. The
// core never imports a plugin: binaries load them by name from their catalog.

import type { Logger } from 'pino'

import type { OptionSpec, OptionValues } from './config/options.ts'
import type { Fields, Infer, MessageSchema } from './codec/wire.ts'
import type { EventPayloads } from './events.ts'
import type { FabricNode } from './fabric/node.ts'
import type { HandlerContext, ServeOptions } from './fabric/rpc.ts'

/** The binaries that host plugins. */
export type PluginHostName = 'supernode' | 'dfdaemon'

/** Undoes one registration; the host calls those still registered when it closes. */
export type Disposer = () => Promise<void> | void

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

export type RouteHandler = (req: HttpRequestInfo) => Promise<HttpReply> | HttpReply

/** What every host offers a plugin. */
export interface PluginContextBase<H extends PluginHostName = PluginHostName> {
  /** Which binary hosts the plugin. */
  readonly host: H
  readonly logger: Logger
  readonly fabric: FabricNode
  /** Adds a route to the binary's HTTP API (the supernode API, or the daemon's local API); disposed, it answers 404. */
  route(method: HttpMethod, path: string, handler: RouteHandler): Disposer
  /** Subscribes to a diagnostics_channel event (see events.ts). */
  subscribe<K extends keyof EventPayloads>(event: K, listener: (message: EventPayloads[K]) => void): Disposer
  /** Runs `fn` every `intervalMs`; errors are logged, not thrown. */
  every(intervalMs: number, fn: () => Promise<void> | void): Disposer
  /** Serves a request/response fabric protocol (see proto's `serve`). */
  serve<Q extends Fields, R extends Fields>(
    protocol: string, request: MessageSchema<Q>, response: MessageSchema<R>,
    handler: (req: Infer<Q>, ctx: HandlerContext) => Promise<Partial<Infer<R>>>, options?: ServeOptions
  ): Promise<Disposer>
  /** Registers cleanup run when the host shuts down, in reverse order. */
  onClose(fn: () => Promise<void> | void): void
}

/** A plugin as a host loads it: its settings already erased to the schema. */
export interface NaiadPlugin<C extends PluginContextBase = PluginContextBase> {
  readonly name: string
  readonly version: string
  /** The binary the plugin is for; a plugin for another is refused at load and is a type error in a catalog. */
  readonly host: C['host']
  /** Names of plugins that must be set up first. */
  readonly dependencies?: readonly string[]
  /** The settings `plugin-config.<name>` may hold; the host validates them and fills in defaults before setup. */
  readonly settings: readonly OptionSpec[]
  setup(ctx: C & { readonly settings: Record<string, unknown> }): Promise<void> | void
}

/** What a plugin's author writes: settings typed by their schema. */
export interface PluginDefinition<C extends PluginContextBase, O extends readonly OptionSpec[]> {
  name: string
  version: string
  host: C['host']
  dependencies?: readonly string[]
  settings?: O
  setup(ctx: C & { readonly settings: OptionValues<O> }): Promise<void> | void
}

/**
 * Makes a plugin of a definition. Hosts export a version bound to their context
 * (`supernodePlugin`, `daemonPlugin`), so that the definition's settings and context are
 * both inferred.
 */
export function definePlugin<C extends PluginContextBase, const O extends readonly OptionSpec[] = readonly []>(def: PluginDefinition<C, O>): NaiadPlugin<C> {
  return {
    name: def.name,
    version: def.version,
    host: def.host,
    dependencies: def.dependencies,
    settings: def.settings ?? [],
    // The host validated the settings against `def.settings`: they are OptionValues<O>.
    setup: (ctx) => def.setup(ctx as C & { readonly settings: OptionValues<O> })
  }
}

/** Orders plugins so that each comes after its dependencies; rejects missing ones and cycles. */
export function orderPlugins<P extends NaiadPlugin<PluginContextBase>>(plugins: readonly P[]): P[] {
  const byName = new Map(plugins.map((p) => [p.name, p]))
  const out: P[] = []
  const state = new Map<string, 'visiting' | 'done'>()
  const visit = (p: P, path: string[]): void => {
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
