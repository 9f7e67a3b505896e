// The plugin host on its own, in process: settings checked against each plugin's schema,
// a plugin for another binary refused, the binary's registry shared, and every
// registration undone by its disposer or at close. Timers run on a fake clock.

import { channel } from 'node:diagnostics_channel'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import Fastify, { type FastifyInstance } from 'fastify'
import { pino } from 'pino'
import { Counter } from 'prom-client'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { defineOptions, definePlugin, DoctorReportRequest, DoctorReportResponse, EVENTS, type FabricNode, type NaiadPlugin } from '@naiad/proto'

import { loadPlugins, metricsPlugin, PluginHost, type HostContext, type PluginCatalog, type PluginScope } from '../src/index.ts'

/** A host's own extension point, as a binary would add one: a list plugins push into. */
interface TestContext extends HostContext<'supernode'> {
  readonly filters: string[]
  addFilter(name: string): () => Promise<void> | void
}

/** The fabric node as far as the host uses it: protocols handled and unhandled. */
function fakeFabric(): FabricNode & { handled: Set<string> } {
  const handled = new Set<string>()
  return {
    handled,
    handle: async (protocol: string) => { handled.add(protocol) },
    unhandle: async (protocol: string) => { handled.delete(protocol) }
  } as unknown as FabricNode & { handled: Set<string> }
}

const SETTINGS = defineOptions([
  { key: 'interval', type: 'duration', min: 1, default: '10s', help: 'how often' },
  { key: 'limits.max', type: 'int', default: 3, help: 'at most' },
  { key: 'mode', type: 'enum', values: ['fast', 'safe'], default: 'safe', help: 'how' }
])

describe('plugin host', () => {
  let http: FastifyInstance
  let fabric: ReturnType<typeof fakeFabric>
  const filters: string[] = []

  const host = (settings: Record<string, Record<string, unknown>> = {}): PluginHost<'supernode', TestContext> => new PluginHost({
    host: 'supernode', http, fabric, logger: pino({ level: 'silent' }), settings,
    stats: { things: { help: 'things held', read: () => 42 } },
    extend: (base, scope: PluginScope): TestContext => ({
      ...base,
      filters,
      addFilter: (name) => {
        filters.push(name)
        return scope.track(() => { filters.splice(filters.indexOf(name), 1) })
      }
    })
  })

  beforeEach(() => {
    http = Fastify()
    fabric = fakeFabric()
    filters.length = 0
    vi.useFakeTimers()
  })

  afterEach(async () => {
    vi.useRealTimers()
    await http.close()
  })

  it('gives a plugin its settings typed and defaulted, and refuses bad ones naming the key', async () => {
    let seen: unknown
    const plugin = definePlugin<TestContext, typeof SETTINGS>({
      name: 'probe', version: '1.0.0', host: 'supernode', settings: SETTINGS,
      setup(ctx) {
        // Typed: a number, a number, a union.
        const interval: number = ctx.settings.interval
        const max: number = ctx.settings['limits.max']
        const mode: 'fast' | 'safe' = ctx.settings.mode
        seen = { interval, max, mode }
      }
    })
    await host({ probe: { interval: '2s', limits: { max: 5 } } }).setup([plugin])
    expect(seen).toEqual({ interval: 2000, max: 5, mode: 'safe' })
    await expect(host({ probe: { mode: 'reckless' } }).setup([plugin])).rejects.toMatchObject({ code: 'PROTO_ERR_BAD_CONFIG', message: expect.stringContaining('plugin-config.probe.mode') })
    await expect(host({ probe: { intervall: '1s' } }).setup([plugin])).rejects.toMatchObject({ code: 'PROTO_ERR_BAD_CONFIG', message: expect.stringContaining('plugin-config.probe.intervall: unknown setting') })
    await expect(host({ probe: { interval: '0s' } }).setup([plugin])).rejects.toMatchObject({ code: 'PROTO_ERR_BAD_CONFIG' })
  })

  it('refuses a plugin made for another binary', async () => {
    const daemonOnly = definePlugin<HostContext<'dfdaemon'>>({ name: 'elsewhere', version: '1.0.0', host: 'dfdaemon', setup() {} })
    // A type error first (the type check runs over the tests too), refused at run time as well.
    // @ts-expect-error a dfdaemon plugin does not go into a supernode's catalog
    const catalog: PluginCatalog<TestContext> = { elsewhere: async () => daemonOnly }
    expect(Object.keys(catalog)).toEqual(['elsewhere'])
    definePlugin<HostContext<'dfdaemon'>>({
      name: 'reaches-too-far', version: '1.0.0', host: 'dfdaemon',
      // @ts-expect-error a daemon plugin's context has no supernode extension points
      setup(ctx) { ctx.addFilter('x') }
    })
    await expect(host().setup([daemonOnly as unknown as NaiadPlugin<TestContext>])).rejects.toMatchObject({ code: 'PROTO_ERR_PLUGIN', message: expect.stringContaining('for dfdaemon, not supernode') })
  })

  it('undoes each registration when disposed, and the rest at close, newest first', async () => {
    const events: unknown[] = []
    const ticks: number[] = []
    const order: string[] = []
    let disposers: Array<() => Promise<void> | void> = []
    const plugin = definePlugin<TestContext>({
      name: 'probe', version: '1.0.0', host: 'supernode',
      async setup(ctx) {
        const route = ctx.route('GET', '/probe', () => ({ body: { ok: true } }))
        const sub = ctx.subscribe(EVENTS.taskStarted, (m) => events.push(m.taskId))
        const timer = ctx.every(1000, () => { ticks.push(Date.now()) })
        const filter = ctx.addFilter('isolated')
        const served = await ctx.serve('/naiad/probe/1.0.0', DoctorReportRequest, DoctorReportResponse, async () => ({}))
        ctx.onClose(() => { order.push('first') })
        ctx.onClose(() => { order.push('second') })
        disposers = [route, sub, timer, filter, served]
      }
    })
    const h = host()
    await h.setup([plugin])
    await http.ready()

    expect((await http.inject('/probe')).json()).toEqual({ ok: true })
    channel(EVENTS.taskStarted).publish({ taskId: 't1', url: 'http://o/x' })
    await vi.advanceTimersByTimeAsync(2500)
    expect({ events, ticks: ticks.length, filters: [...filters], handled: [...fabric.handled] }).toEqual({ events: ['t1'], ticks: 2, filters: ['isolated'], handled: ['/naiad/probe/1.0.0'] })

    const [route, sub, timer, filter] = disposers
    await route()
    await sub()
    await timer()
    await filter()
    expect((await http.inject('/probe')).statusCode).toBe(404)
    channel(EVENTS.taskStarted).publish({ taskId: 't2', url: 'http://o/x' })
    await vi.advanceTimersByTimeAsync(5000)
    expect({ events, ticks: ticks.length, filters: [...filters] }).toEqual({ events: ['t1'], ticks: 2, filters: [] })

    await h.close()
    expect(fabric.handled.size).toBe(0)
    expect(order).toEqual(['second', 'first'])
    // Disposing again after close does nothing.
    for (const d of disposers) await d()
    expect(order).toEqual(['second', 'first'])
  })

  it('owns the one registry: the metrics plugin serves what another plugin registered there, and the host stats', async () => {
    const other = definePlugin<TestContext>({
      name: 'other', version: '1.0.0', host: 'supernode',
      setup(ctx) {
        new Counter({ name: 'naiad_other_total', help: 'other', registers: [ctx.metrics] }).inc(7)
      }
    })
    await host({ metrics: { defaultMetrics: false } }).setup([metricsPlugin<TestContext>('supernode'), other])
    await http.ready()
    vi.useRealTimers()
    const text = (await http.inject('/metrics')).body
    expect(text).toContain('naiad_things 42')
    expect(text).toContain('naiad_other_total 7')
    expect(text).not.toContain('process_cpu')
  })

  it('loads built-ins by name and a module by path, refusing one for another binary', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'naiad-plugins-'))
    try {
      await writeFile(join(dir, 'daemon-only.mjs'), "export default { name: 'x', version: '1', host: 'dfdaemon', settings: [], setup() {} }\n")
      await writeFile(join(dir, 'not-a-plugin.mjs'), 'export default 42\n')
      const catalog: PluginCatalog<TestContext> = { metrics: async () => metricsPlugin<TestContext>('supernode') }
      expect((await loadPlugins(['metrics'], catalog, 'supernode')).map((p) => p.name)).toEqual(['metrics'])
      await expect(loadPlugins(['qos'], catalog, 'supernode')).rejects.toMatchObject({ code: 'PROTO_ERR_PLUGIN', message: expect.stringContaining('unknown plugin "qos"') })
      await expect(loadPlugins([join(dir, 'daemon-only.mjs')], catalog, 'supernode')).rejects.toMatchObject({ code: 'PROTO_ERR_PLUGIN', message: expect.stringContaining('is for dfdaemon, not supernode') })
      await expect(loadPlugins([join(dir, 'not-a-plugin.mjs')], catalog, 'supernode')).rejects.toMatchObject({ code: 'PROTO_ERR_PLUGIN' })
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })
})
