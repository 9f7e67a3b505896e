// The slo plugin against real processes: a supernode (with its seed) and three daemons,
// all with the plugin enabled, pulling from a TestOrigin. A set of pulls — served by the
// seed, by a peer and the seed, from the origin while the supernode is down, and one that
// fails — must come back as traces whose sources and byte counts equal what the seed, the
// peers and the origin really served, whose durations fit in the wall-clock the test
// measured, and whose SLO report and histograms agree with them.

import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  apiHeaders, downloadVia, getJson, makeBlob, metric, startDaemon, startMemberNode, startSupernode, TestOrigin, waitFor,
  type DaemonHandle, type DoneEvent, type ErrorEvent, type SupernodeHandle
} from '@naiad/testkit'
import { multiaddr } from '@multiformats/multiaddr'
import { call, NaiadError, SLO_TRACE_PROTOCOL, TraceAck, TraceBatch, type PullTrace } from '@naiad/proto'

import { readSloSettings } from '../src/plugins/slo/objectives.ts'

const MiB = 1024 * 1024
const GiB = 1024 * MiB
const SIZES = { '/a': 24 * MiB, '/b': 12 * MiB, '/c': 8 * MiB }
const DASHBOARD = fileURLToPath(new URL('../../docker/grafana/naiad-slo.json', import.meta.url))

interface TraceView {
  id: string
  taskId: string
  peerId: string
  url: string
  result: 'succeeded' | 'failed'
  error: { code: string; message: string } | null
  startedAt: string
  finishedAt: string
  durationMs: number
  contentLength: number
  bytes: { peer: number; seed: number; origin: number }
  scheduled: boolean
  pieceFailures: number
  parents: Array<{ peerId: string; isSeed: boolean; bytes: number; pieces: number }>
  backToSource: Array<{ at: string; reason: string }>
  timeline: Array<{ event: string; at: string; offsetMs: number; code?: string; reason?: string }>
}

interface ObjectiveView {
  name: string
  eligible: number
  good: number
  compliance: number | null
  errorBudget: number
  errorBudgetRemaining: number
  burnRate: number
  burnRateShort: number
  met: boolean
}

interface SloView {
  generatedAt: string
  sli: { pulls: number; succeeded: number; failed: number; successRate: number; secondsPerGiB: number; backToSourceRatio: number; bytes: { peer: number; seed: number; origin: number } }
  objectives: ObjectiveView[]
}

interface Pending { buffered: number; sent: number; failures: number; open: number }

const OBJECTIVES = [
  { name: 'pull-speed', sli: 'seconds-per-gib', threshold: 30, target: 0.99, window: '1h' },
  { name: 'success', sli: 'success-rate', target: 0.999, window: '1h' },
  { name: 'swarm', sli: 'back-to-source-ratio', threshold: 0.5, target: 0.9, window: '1h', shortWindow: '5m' }
]

describe('slo plugin', () => {
  let dir: string
  let origin: TestOrigin
  let sn: SupernodeHandle
  let snArgs: string[]
  const daemons: DaemonHandle[] = []
  const blobs = Object.fromEntries(Object.entries(SIZES).map(([p, size]) => [p, makeBlob(size, p)]))

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'naiad-slo-'))
    origin = await new TestOrigin().start()
    for (const [path, data] of Object.entries(blobs)) origin.files.set(path, { data })
    await writeFile(join(dir, 'supernode.yaml'), [
      'plugins: [metrics, slo]',
      'plugin-config:',
      '  slo:',
      '    retention: 1d',
      `    objectives: ${JSON.stringify(OBJECTIVES)}`,
      ''
    ].join('\n'))
    await writeFile(join(dir, 'dfdaemon.yaml'), [
      'plugins: [metrics, slo]',
      'plugin-config:',
      '  slo: { retryInterval: 300ms }',
      ''
    ].join('\n'))
    snArgs = ['--config', join(dir, 'supernode.yaml')]
    sn = await startSupernode(join(dir, 'sn'), { args: snArgs })
    for (const i of [1, 2, 3]) daemons.push(await startDaemon(join(dir, `d${i}`), sn.url, { args: ['--config', join(dir, 'dfdaemon.yaml')] }))
  })

  afterAll(async () => {
    await Promise.all(daemons.map((d) => d.process.stop()))
    await sn?.process.stop()
    await origin?.stop()
    await rm(dir, { recursive: true, force: true })
  })

  const pending = (d: DaemonHandle): Promise<Pending> => getJson<Pending>(`${d.apiUrl}/api/v1/traces/pending`)

  async function pull(d: DaemonHandle, path: string): Promise<{ result: DoneEvent | ErrorEvent; wallMs: number }> {
    const t0 = Date.now()
    const result = await downloadVia(d.apiUrl, { url: `${origin.url}${path}` })
    return { result, wallMs: Date.now() - t0 }
  }

  it('traces a set of pulls as they happened, and reports SLIs, objectives and histograms that agree with the traces', async () => {
    const [d1, d2, d3] = daemons

    // Back to source: with the supernode down, d3 pulls /c from the origin and keeps its trace.
    await sn.process.stop()
    const c = await pull(d3, '/c')
    expect(c.result.event, JSON.stringify(c.result)).toBe('done')
    await waitFor(async () => { const p = await pending(d3); return p.buffered === 1 && p.failures > 0 }, 20_000, 'd3 to hold the undelivered trace')

    const restarted = Date.now()
    sn = await startSupernode(join(dir, 'sn'), { port: sn.port, args: snArgs })
    await waitFor(async () => (await pending(d3)).buffered === 0, 30_000, 'd3 to deliver its buffered trace')
    await waitFor(async () => {
      const peers = await getJson<Array<{ id: string; lastSeen: string }>>(`${sn.url}/api/v1/peers`)
      return daemons.every((d) => peers.some((p) => p.id === d.peerId && Date.parse(p.lastSeen) > restarted))
    }, 30_000, 'every daemon to announce itself to the restarted supernode')

    // The seed serves d1; d2 gets the same file from d1 and the seed; the seed serves d3.
    const seedUploads = (): Promise<number> => metric(sn.url, 'naiad_upload_bytes_total')
    const uploads = (d: DaemonHandle): Promise<number> => metric(d.apiUrl, 'naiad_upload_bytes_total')
    const s0 = await seedUploads()
    const a1 = await pull(d1, '/a')
    const s1 = await seedUploads()
    const d1u0 = await uploads(d1)
    const a2 = await pull(d2, '/a')
    const s2 = await seedUploads()
    const d1u1 = await uploads(d1)
    const b3 = await pull(d3, '/b')
    const s3 = await seedUploads()
    // A file the origin does not have fails with a stable code.
    const m1 = await pull(d1, '/missing')
    for (const r of [a1, a2, b3]) expect(r.result.event, JSON.stringify(r.result)).toBe('done')
    expect(m1.result.event).toBe('error')
    const failCode = (m1.result as ErrorEvent).code
    expect(failCode).toBe('DFD_ERR_ORIGIN_STATUS')

    for (const d of daemons) await waitFor(async () => { const p = await pending(d); return p.buffered === 0 && p.open === 0 }, 30_000, 'every trace to be delivered')
    const traces = await getJson<TraceView[]>(`${sn.url}/api/v1/traces?limit=1000`)
    expect(traces).toHaveLength(5)
    const find = (d: DaemonHandle, path: string): TraceView => {
      const t = traces.filter((x) => x.peerId === d.peerId && x.url === `${origin.url}${path}`)
      expect(t, `one trace of ${path} on ${d.peerId}`).toHaveLength(1)
      return t[0]
    }
    const tc = find(d3, '/c')
    const ta1 = find(d1, '/a')
    const ta2 = find(d2, '/a')
    const tb3 = find(d3, '/b')
    const tm1 = find(d1, '/missing')
    const snInfo = await getJson<{ peerId: string }>(`${sn.url}/api/v1/info`)

    // Sources and byte counts equal what the origin, the seed and the peers served.
    expect(tc.bytes).toEqual({ peer: 0, seed: 0, origin: origin.bytesServed('/c') })
    expect(origin.bytesServed('/c')).toBe(SIZES['/c'])
    expect(tc.scheduled).toBe(false)
    expect(tc.backToSource.length).toBeGreaterThanOrEqual(1)
    expect(tc.backToSource[0].reason).toMatch(/scheduler/)

    expect(ta1.bytes).toEqual({ peer: 0, seed: s1 - s0, origin: 0 })
    expect(s1 - s0).toBe(SIZES['/a'])
    expect(ta1.parents).toEqual([expect.objectContaining({ peerId: snInfo.peerId, isSeed: true, bytes: SIZES['/a'] })])
    expect(ta1.backToSource).toEqual([])
    expect(ta1.scheduled).toBe(true)

    if (ta2.pieceFailures === 0) {
      expect(ta2.bytes).toEqual({ peer: d1u1 - d1u0, seed: s2 - s1, origin: 0 })
    } else {
      // A piece abandoned as slow on a loaded machine may have been sent by its parent
      // all the same; the trace counts only the bytes d2 stored.
      console.log(`a@d2 abandoned ${ta2.pieceFailures} piece(s): d1 sent ${d1u1 - d1u0}, the seed ${s2 - s1}`)
      expect(ta2.bytes.peer).toBeLessThanOrEqual(d1u1 - d1u0)
      expect(ta2.bytes.seed).toBeLessThanOrEqual(s2 - s1)
      expect(ta2.bytes.origin).toBe(0)
    }
    expect(ta2.bytes.peer).toBeGreaterThan(0)
    expect(ta2.bytes.peer + ta2.bytes.seed).toBe(SIZES['/a'])
    expect(ta2.parents.find((p) => p.peerId === d1.peerId)?.bytes).toBe(ta2.bytes.peer)

    expect(tb3.bytes).toEqual({ peer: 0, seed: s3 - s2, origin: 0 })
    expect(s3 - s2).toBe(SIZES['/b'])
    // The seed alone went to the origin for /a and /b.
    expect(origin.bytesServed('/a')).toBe(SIZES['/a'])
    expect(origin.bytesServed('/b')).toBe(SIZES['/b'])

    expect(tm1.result).toBe('failed')
    expect(tm1.error?.code).toBe(failCode)
    expect(tm1.bytes).toEqual({ peer: 0, seed: 0, origin: 0 })
    expect(tm1.timeline.at(-1)).toMatchObject({ event: 'failed', code: failCode })
    // The seed failed on the 404 first; the daemon then tried the origin itself, as its trace says.
    expect(tm1.backToSource.length).toBeGreaterThanOrEqual(1)
    expect(origin.requests.filter((r) => r.path === '/missing').length).toBeGreaterThanOrEqual(2)

    for (const [name, t, r] of [['c@d3', tc, c], ['a@d1', ta1, a1], ['a@d2', ta2, a2], ['b@d3', tb3, b3], ['missing@d1', tm1, m1]] as const) {
      console.log(`${name}: ${t.result} ${t.error?.code ?? ''} trace ${t.durationMs} ms, wall ${r.wallMs} ms, bytes ${JSON.stringify(t.bytes)}, back-to-source ${JSON.stringify(t.backToSource.map((b) => b.reason))}`)
    }

    // Durations fit in the wall-clock the test measured; timelines are in order.
    const walls = new Map([[tc, c.wallMs], [ta1, a1.wallMs], [ta2, a2.wallMs], [tb3, b3.wallMs], [tm1, m1.wallMs]])
    for (const [t, wall] of walls) {
      expect(t.durationMs, t.url).toBeGreaterThan(0)
      expect(t.durationMs, t.url).toBeLessThanOrEqual(wall)
      expect(Date.parse(t.finishedAt) - Date.parse(t.startedAt)).toBeLessThanOrEqual(wall)
      expect(t.timeline[0].event).toBe('started')
      const offsets = t.timeline.map((e) => e.offsetMs)
      expect(offsets).toEqual([...offsets].sort((x, y) => x - y))
      if (t.result === 'succeeded') {
        expect(t.contentLength).toBe(SIZES[new URL(t.url).pathname as keyof typeof SIZES])
        expect(t.timeline.map((e) => e.event)).toContain('first-piece')
        expect(t.timeline.at(-1)?.event).toBe('succeeded')
      }
    }

    // Filters.
    const byTask = await getJson<TraceView[]>(`${sn.url}/api/v1/traces?task=${ta1.taskId}`)
    expect(byTask.map((t) => t.id).sort()).toEqual([ta1.id, ta2.id].sort())
    const byPeer = await getJson<TraceView[]>(`${sn.url}/api/v1/traces?peer=${d3.peerId}`)
    expect(byPeer.map((t) => t.id).sort()).toEqual([tc.id, tb3.id].sort())

    // The SLO report equals what the traces say.
    const slo = await getJson<SloView>(`${sn.url}/api/v1/slo`)
    const badWindow = await fetch(`${sn.url}/api/v1/slo?window=soon`, { headers: apiHeaders(sn.url) })
    expect(badWindow.status).toBe(400)
    expect(await badWindow.json()).toMatchObject({ code: 'SN_ERR_BAD_REQUEST' })
    const lastMinute = await getJson<SloView>(`${sn.url}/api/v1/slo?window=1m`)
    expect(lastMinute.sli.pulls).toBe(traces.filter((t) => Date.parse(t.finishedAt) >= Date.parse(lastMinute.generatedAt) - 60_000).length)
    console.log(`slo: ${JSON.stringify(slo.sli)} ${JSON.stringify(slo.objectives.map((o) => [o.name, o.eligible, o.good, o.burnRate]))}`)
    const ok = traces.filter((t) => t.result === 'succeeded')
    const sum = (xs: number[]): number => xs.reduce((a, b) => a + b, 0)
    const bytes = { peer: sum(traces.map((t) => t.bytes.peer)), seed: sum(traces.map((t) => t.bytes.seed)), origin: sum(traces.map((t) => t.bytes.origin)) }
    const allBytes = bytes.peer + bytes.seed + bytes.origin
    expect(slo.sli).toMatchObject({ pulls: 5, succeeded: 4, failed: 1, bytes })
    expect(slo.sli.successRate).toBeCloseTo(4 / 5, 9)
    expect(slo.sli.secondsPerGiB).toBeCloseTo(sum(ok.map((t) => t.durationMs)) / 1000 / (sum(ok.map((t) => t.contentLength)) / GiB), 6)
    expect(slo.sli.backToSourceRatio).toBeCloseTo(bytes.origin / allBytes, 9)
    expect(bytes.origin).toBe(SIZES['/c'])

    const perGiB = (t: TraceView): number => (t.durationMs / 1000) / (t.contentLength / GiB)
    const since = (ms: number): TraceView[] => traces.filter((t) => Date.parse(t.finishedAt) >= Date.parse(slo.generatedAt) - ms)
    const expected = (name: string, target: number, eligible: (ts: TraceView[]) => TraceView[], good: (t: TraceView) => boolean, shortMs: number): Partial<ObjectiveView> => {
      const e = eligible(traces)
      const g = e.filter(good).length
      const es = eligible(since(shortMs))
      const burn = e.length === 0 ? 0 : (1 - g / e.length) / (1 - target)
      const burnShort = es.length === 0 ? 0 : (1 - es.filter(good).length / es.length) / (1 - target)
      return { name, eligible: e.length, good: g, compliance: g / e.length, burnRate: burn, burnRateShort: burnShort, errorBudgetRemaining: 1 - burn, met: g / e.length >= target }
    }
    const want = [
      expected('pull-speed', 0.99, (ts) => ts.filter((t) => t.result === 'succeeded' && t.contentLength > 0), (t) => perGiB(t) <= 30, 5 * 60_000),
      expected('success', 0.999, (ts) => ts, (t) => t.result === 'succeeded', 5 * 60_000),
      expected('swarm', 0.9, (ts) => ts.filter((t) => t.bytes.peer + t.bytes.seed + t.bytes.origin > 0), (t) => t.bytes.origin <= 0.5 * (t.bytes.peer + t.bytes.seed + t.bytes.origin), 5 * 60_000)
    ]
    expect(slo.objectives.map((o) => o.name)).toEqual(want.map((w) => w.name))
    for (const [i, w] of want.entries()) {
      const got = slo.objectives[i]
      expect(got.eligible, w.name).toBe(w.eligible)
      expect(got.good, w.name).toBe(w.good)
      expect(got.met, w.name).toBe(w.met)
      for (const k of ['compliance', 'burnRate', 'burnRateShort', 'errorBudgetRemaining'] as const) expect(got[k], `${w.name}.${k}`).toBeCloseTo(w[k] as number, 6)
    }
    // The failed pull alone spends the success objective's budget 200 times over.
    expect(slo.objectives[1]).toMatchObject({ eligible: 5, good: 4, met: false })
    expect(slo.objectives[1].burnRate).toBeCloseTo(0.2 / 0.001, 6)
    expect(slo.objectives[2]).toMatchObject({ eligible: 4, good: 3 })

    // The histograms count the pulls, including the one delivered after the restart.
    expect(await metric(sn.url, 'naiad_slo_pull_duration_seconds_count')).toBe(5)
    expect(await metric(sn.url, 'naiad_slo_pull_duration_seconds_count', { result: 'failed' })).toBe(1)
    expect(await metric(sn.url, 'naiad_slo_pull_duration_seconds_sum')).toBeCloseTo(sum(traces.map((t) => t.durationMs)) / 1000, 6)
    expect(await metric(sn.url, 'naiad_slo_pull_seconds_per_gib_count')).toBe(4)
    expect(await metric(sn.url, 'naiad_slo_pull_seconds_per_gib_sum')).toBeCloseTo(sum(ok.map(perGiB)), 4)
    for (const source of ['peer', 'seed', 'origin'] as const) expect(await metric(sn.url, 'naiad_slo_pull_bytes_total', { source })).toBe(bytes[source])
    expect(await metric(sn.url, 'naiad_slo_pull_failures_total', { code: failCode })).toBe(1)
    expect(await metric(sn.url, 'naiad_slo_burn_rate', { objective: 'success', window: 'long' })).toBeCloseTo(200, 6)

    // Every query of the Grafana dashboard names a metric the supernode exports, and every
    // slo metric is on the dashboard.
    const exposition = await (await fetch(`${sn.url}/metrics`)).text()
    const families = new Map([...exposition.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map((m) => [m[1], m[2]]))
    const dashboard = JSON.parse(await readFile(DASHBOARD, 'utf8')) as { panels: Array<{ title: string; targets: Array<{ expr: string }> }> }
    const used = new Set<string>()
    for (const panel of dashboard.panels) {
      expect(panel.targets.length, panel.title).toBeGreaterThan(0)
      for (const { expr } of panel.targets) {
        const names = [...expr.matchAll(/\bnaiad_[a-z0-9_]+/g)].map((m) => m[0])
        expect(names.length, expr).toBeGreaterThan(0)
        for (const name of names) {
          const base = name.replace(/_(bucket|sum|count)$/, '')
          const known = families.has(name) || (families.get(base) === 'histogram' && base !== name)
          expect(known, `${panel.title}: ${name} is not exported`).toBe(true)
          used.add(families.has(name) ? name : base)
        }
      }
    }
    const sloFamilies = [...families.keys()].filter((n) => n.startsWith('naiad_slo_'))
    expect(sloFamilies.length).toBeGreaterThanOrEqual(9)
    for (const name of sloFamilies) expect(used.has(name), `${name} is on the dashboard`).toBe(true)
  })

  it('stores a batch sent twice once, under the sender\'s authenticated peer ID, and skips malformed and expired traces', async () => {
    const { node } = await startMemberNode(join(dir, 'client'), sn)
    try {
      const info = await getJson<{ peerId: string; multiaddrs: string[] }>(`${sn.url}/api/v1/info`)
      const addrs = info.multiaddrs.map((a) => multiaddr(a.includes('/p2p/') ? a : `${a}/p2p/${info.peerId}`))
      const now = Date.now()
      const trace = (id: string, over: Partial<PullTrace> = {}): PullTrace => ({
        traceId: id, taskId: 'f'.repeat(64), url: 'http://origin.test/x', startedAtMs: now - 2000, registeredAtMs: now - 1990, scheduled: true,
        firstPieceAtMs: now - 1500, finishedAtMs: now, durationMs: 2000, result: 'succeeded', errorCode: '', errorMessage: '', contentLength: 4 * MiB,
        bytesPeer: 4 * MiB, bytesSeed: 0, bytesOrigin: 0, backToSource: [], parents: [{ peerId: daemons[0].peerId, isSeed: false, bytes: 4 * MiB, pieces: 1 }],
        pieces: 1, pieceFailures: 0, ...over
      })
      const before = await metric(sn.url, 'naiad_slo_pull_duration_seconds_count')
      const batch = [trace('direct-1'), trace('', {}), trace('direct-2', { result: 'maybe' }), trace('direct-3', { finishedAtMs: now - 3 * 86_400_000, startedAtMs: now - 3 * 86_400_000 - 10 })]
      for (let i = 0; i < 2; i++) {
        const ack = await call(node, addrs, SLO_TRACE_PROTOCOL, TraceBatch, TraceAck, { traces: batch }, { timeoutMs: 10_000 })
        expect(ack.error).toBeUndefined()
        expect(ack.accepted).toBe(2) // direct-1, and direct-3 acknowledged but past the 1d retention
      }
      const mine = await getJson<TraceView[]>(`${sn.url}/api/v1/traces?peer=${node.peerId.toString()}`)
      expect(mine.map((t) => t.id)).toEqual(['direct-1'])
      expect(mine[0]).toMatchObject({ peerId: node.peerId.toString(), durationMs: 2000, bytes: { peer: 4 * MiB, seed: 0, origin: 0 } })
      expect(mine[0].timeline.map((e) => e.event)).toEqual(['started', 'registered', 'first-piece', 'succeeded'])
      expect(await metric(sn.url, 'naiad_slo_pull_duration_seconds_count')).toBe(before + 1)
    } finally {
      await node.stop()
    }
  })

  it('rejects bad objectives naming the key', () => {
    const code = (raw: Record<string, unknown>): string | undefined => {
      try { readSloSettings(raw) } catch (err) { return err instanceof NaiadError ? `${err.code} ${err.message}` : String(err) }
      return undefined
    }
    expect(code({})).toBeUndefined()
    expect(code({ objectives: [{ name: 'x', sli: 'latency', target: 0.9 }] })).toMatch(/^PROTO_ERR_BAD_CONFIG plugin-config\.slo\.objectives\[0\]\.sli/)
    expect(code({ objectives: [{ name: 'x', sli: 'success-rate', target: 1 }] })).toMatch(/objectives\[0\]\.target/)
    expect(code({ objectives: [{ name: 'x', sli: 'seconds-per-gib', target: 0.9 }] })).toMatch(/objectives\[0\]\.threshold/)
    expect(code({ objectives: [{ name: 'x', sli: 'success-rate', target: 0.9, window: 'soon' }] })).toMatch(/objectives\[0\]\.window/)
    expect(code({ retention: '30m' })).toMatch(/plugin-config\.slo\.retention/)
  })
})
