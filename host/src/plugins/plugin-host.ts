// Builds the context a plugin sees and runs plugins' setup and cleanup. Shared by the
// daemon and the supernode, so a plugin behaves the same in both.

import { subscribe, unsubscribe } from 'node:diagnostics_channel'

import type { FastifyInstance } from 'fastify'
import type { Logger } from 'pino'
import { NaiadError, orderPlugins, type FabricNode, type NaiadPlugin, type PluginContext } from '@naiad/proto'

export interface PluginHostOptions {
  host: PluginContext['host']
  http: FastifyInstance
  fabric: FabricNode
  logger: Logger
  /** `plugin-config` from the config file: settings per plugin name. */
  settings: Record<string, Record<string, unknown>>
  extensions: Record<string, unknown>
}

export class PluginHost {
  private readonly cleanups: Array<() => Promise<void> | void> = []

  private readonly options: PluginHostOptions

  constructor(options: PluginHostOptions) {
    this.options = options
  }

  async setup(plugins: NaiadPlugin[]): Promise<void> {
    let ordered: NaiadPlugin[]
    try {
      ordered = orderPlugins(plugins)
    } catch (err) {
      throw new NaiadError('PROTO_ERR_PLUGIN', (err as Error).message, { cause: err })
    }
    for (const plugin of ordered) {
      const logger = this.options.logger.child({ plugin: plugin.name })
      const ctx: PluginContext = {
        host: this.options.host,
        logger,
        settings: this.options.settings[plugin.name] ?? {},
        fabric: this.options.fabric,
        extensions: this.options.extensions,
        route: (method, path, handler) => {
          this.options.http.route({
            method,
            url: path,
            handler: async (req, reply) => {
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
        },
        subscribe: (name, listener) => {
          const fn = listener as (message: unknown, name: string | symbol) => void
          subscribe(name, fn)
          this.cleanups.push(() => { unsubscribe(name, fn) })
        },
        every: (intervalMs, fn) => {
          const timer = setInterval(() => {
            Promise.resolve().then(fn).catch((err: unknown) => logger.warn({ err: (err as Error).message }, 'plugin job failed'))
          }, intervalMs)
          timer.unref()
          this.cleanups.push(() => clearInterval(timer))
        },
        onClose: (fn) => { this.cleanups.push(fn) }
      }
      try {
        await plugin.setup(ctx)
      } catch (err) {
        throw new NaiadError('PROTO_ERR_PLUGIN', `plugin ${plugin.name} failed to set up: ${(err as Error).message}`, { cause: err })
      }
      logger.debug({ version: plugin.version }, 'plugin ready')
    }
  }

  async close(): Promise<void> {
    for (const fn of this.cleanups.splice(0).reverse()) await fn()
  }
}
