// Runs plugins for one binary: validates each one's settings against the schema it declares,
// builds its typed context (the base every host offers, plus what `extend` adds for this
// binary), and undoes every registration when the plugin host closes. The daemon and the
// supernode each make one, so a plugin behaves the same in both.

import { subscribe, unsubscribe } from 'node:diagnostics_channel'

import type { FastifyInstance } from 'fastify'
import type { Logger } from 'pino'
import { Registry } from 'prom-client'
import {
  loadSettings, NaiadError, orderPlugins, serve,
  type Disposer, type FabricNode, type NaiadPlugin, type PluginContextBase, type PluginHostName
} from '@naiad/proto'

/** Gauges a host offers: name → help text and a reader (the metrics plugin exports them). */
export type Stats = Record<string, { help: string; read: () => number }>

/** What every host offers a plugin, with the binary's metrics. */
export interface HostContext<H extends PluginHostName = PluginHostName> extends PluginContextBase<H> {
  /** The binary's one Prometheus registry: plugins add their metrics to it, the metrics plugin serves it. */
  readonly metrics: Registry
  /** The host's own gauges (cache bytes, scheduler tasks, …). */
  readonly stats: Stats
}

/** Registrations of one plugin: what a host's own extension points hand out goes through `track`, so it is undone at close. */
export interface PluginScope {
  readonly logger: Logger
  /** Registers `undo` to run at close and returns a disposer that runs it now instead (once). */
  track(undo: () => Promise<void> | void): Disposer
}

export interface PluginHostOptions<H extends PluginHostName, C extends HostContext<H>> {
  host: H
  http: FastifyInstance
  fabric: FabricNode
  logger: Logger
  /** `plugin-config` from the config file: settings per plugin name. */
  settings: Record<string, Record<string, unknown>>
  stats?: Stats
  /** The binary's part of the context: its extension points, registered through `scope`. */
  extend(base: HostContext<H>, scope: PluginScope): C
}

/** Undo functions in registration order; each runs once, whether disposed early or at close. */
class Disposables {
  private readonly undo = new Set<() => Promise<void> | void>()

  track(fn: () => Promise<void> | void): Disposer {
    this.undo.add(fn)
    return async () => {
      if (!this.undo.delete(fn)) return
      await fn()
    }
  }

  async close(onError: (err: unknown) => void): Promise<void> {
    const all = [...this.undo].reverse()
    this.undo.clear()
    for (const fn of all) {
      try {
        await fn()
      } catch (err) {
        onError(err)
      }
    }
  }
}

export class PluginHost<H extends PluginHostName, C extends HostContext<H>> {
  /** The binary's Prometheus registry, owned here so that no plugin has to create or find it. */
  readonly metrics = new Registry()
  private readonly disposables = new Disposables()
  private readonly options: PluginHostOptions<H, C>

  constructor(options: PluginHostOptions<H, C>) {
    this.options = options
  }

  async setup(plugins: ReadonlyArray<NaiadPlugin<C>>): Promise<void> {
    let ordered: Array<NaiadPlugin<C>>
    try {
      ordered = orderPlugins(plugins)
    } catch (err) {
      throw new NaiadError('PROTO_ERR_PLUGIN', (err as Error).message, { cause: err })
    }
    for (const plugin of ordered) {
      if (plugin.host !== this.options.host) {
        throw new NaiadError('PROTO_ERR_PLUGIN', `plugin ${plugin.name} is for ${String(plugin.host)}, not ${this.options.host}`)
      }
      // Bad settings are the operator's: PROTO_ERR_BAD_CONFIG naming plugin-config.<name>.<key>.
      const settings = loadSettings(plugin.settings, this.options.settings[plugin.name], `plugin-config.${plugin.name}`)
      const ctx = { ...this.context(plugin.name), settings }
      try {
        await plugin.setup(ctx)
      } catch (err) {
        if (err instanceof NaiadError && err.code === 'PROTO_ERR_BAD_CONFIG') throw err
        throw new NaiadError('PROTO_ERR_PLUGIN', `plugin ${plugin.name} failed to set up: ${(err as Error).message}`, { cause: err })
      }
      ctx.logger.debug({ version: plugin.version }, 'plugin ready')
    }
  }

  /** Undoes every registration still in place, newest first. */
  async close(): Promise<void> {
    await this.disposables.close((err) => this.options.logger.warn({ err: (err as Error).message }, 'plugin cleanup failed'))
  }

  private context(name: string): C {
    const logger = this.options.logger.child({ plugin: name })
    const scope: PluginScope = { logger, track: (undo) => this.disposables.track(undo) }
    const base: HostContext<H> = {
      host: this.options.host,
      logger,
      fabric: this.options.fabric,
      metrics: this.metrics,
      stats: this.options.stats ?? {},
      route: (method, path, handler) => {
        // Fastify cannot take a route away once added: a disposed route answers 404.
        let active = true
        this.options.http.route({
          method,
          url: path,
          handler: async (req, reply) => {
            if (!active) return reply.code(404).send({ code: 'PROTO_ERR_PLUGIN', message: `${path} is gone (plugin ${name} closed)` })
            const out = await handler({
              params: req.params as Record<string, string>,
              query: req.query as Record<string, string>,
              body: req.body
            })
            reply.code(out.status ?? 200)
            for (const [k, v] of Object.entries(out.headers ?? {})) reply.header(k, v)
            return out.body
          }
        })
        return scope.track(() => { active = false })
      },
      subscribe: (event, listener) => {
        const fn = listener as (message: unknown, name: string | symbol) => void
        subscribe(event, fn)
        return scope.track(() => { unsubscribe(event, fn) })
      },
      every: (intervalMs, fn) => {
        const timer = setInterval(() => {
          Promise.resolve().then(fn).catch((err: unknown) => logger.warn({ err: (err as Error).message }, 'plugin job failed'))
        }, intervalMs)
        timer.unref()
        return scope.track(() => clearInterval(timer))
      },
      serve: async (protocol, request, response, handler, options) => {
        await serve(this.options.fabric, protocol, request, response, handler, options)
        return scope.track(() => this.options.fabric.unhandle(protocol))
      },
      onClose: (fn) => { scope.track(fn) }
    }
    return this.options.extend(base, scope)
  }
}
