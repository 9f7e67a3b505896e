// Backpressure between the scheduler service and a daemon's scheduler client, in-process
// over a real fabric: a saturated scheduler (its pace up, or busy) slows the client's reports
// and polls, loses no report and is never taken for dead; reports of several tasks made in
// one turn travel as one call; a task's digests cross the wire once.

import { subscribe, unsubscribe } from 'node:diagnostics_channel'
import { createHash } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import pino from 'pino'
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest'
import { FabricSchedulerClient, ReportBatcher } from '@naiad/peer'
import { call, createFabricNode, PROTOCOLS, SchedulerRequest, SchedulerResponse, taskIdOf, type FabricNode, type Host, type NaiadError, type PieceResult } from '@naiad/proto'

import { PRESSURE_DEFAULTS, PressureGauge, type Pressure } from '../src/scheduler/pressure.ts'
import { Scheduler, type SchedulerPersistence } from '../src/scheduler/scheduler.ts'
import { PACE_SPREAD, paceShare, SCHEDULER_CALL_EVENT, serveScheduler, spreadPace } from '../src/scheduler/service.ts'

const none: SchedulerPersistence = { markTask() {}, markPieces() {}, markPeer() {}, deletePeer() {}, markHost() {} }
const host: Host = { id: '', hostname: 'd', ip: '', idc: '', location: '', multiaddrs: [], uploadSlots: 4, isSeed: false, labels: [], dataPort: 0, dataTransport: '' }
const url = (name: string): string => `http://origin.test/${name}`
const T1 = taskIdOf({ url: url('one') })
const T2 = taskIdOf({ url: url('two') })
const piece = (num: number): PieceResult => ({ num, parentId: '', length: 1, costMs: 1, sha256: new Uint8Array(0), errorCode: '' })
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))
const code = async (p: Promise<unknown>): Promise<string> => p.then(() => 'ok', (err: unknown) => (err as NaiadError).code)

/** A pressure the test sets by hand. */
class FixedPressure implements Pressure {
  paceMs = 0
  overloaded = false
  deferred = 0
  busy(): boolean { return this.overloaded }
}

interface Call { call: string; reports: number; busy: boolean; at: number }

describe('scheduler backpressure', () => {
  let dir: string
  let supernode: FabricNode
  let daemon: FabricNode
  let info: Server
  let client: FabricSchedulerClient
  const scheduler = new Scheduler({ hostTtlMs: 30_000 }, none)
  const pressure = new FixedPressure()
  const calls: Call[] = []
  const onCall = (m: unknown): void => { calls.push({ ...(m as Omit<Call, 'at'>), at: performance.now() }) }
  const batchers: ReportBatcher[] = []

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'naiad-backpressure-'))
    supernode = await createFabricNode({ dataDir: join(dir, 'sn'), listen: ['/ip4/127.0.0.1/tcp/0'] })
    daemon = await createFabricNode({ dataDir: join(dir, 'd'), listen: ['/ip4/127.0.0.1/tcp/0'] })
    await serveScheduler(supernode, scheduler, undefined, pressure)
    info = createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ peerId: supernode.peerId.toString(), multiaddrs: supernode.getMultiaddrs().map(String) }))
    })
    await new Promise<void>((resolve) => info.listen(0, '127.0.0.1', resolve))
    client = new FabricSchedulerClient(daemon, { supernodeUrl: `http://127.0.0.1:${(info.address() as AddressInfo).port}`, timeoutMs: 10_000, logger: pino({ level: 'silent' }) })
    await client.announceHost(host)
    for (const [id, name] of [[T1, 'one'], [T2, 'two']]) {
      await client.registerTask({ taskId: id, url: url(name), headers: [], digest: '', range: '', filter: [] })
    }
    subscribe(SCHEDULER_CALL_EVENT, onCall)
  })
  afterEach(() => {
    for (const b of batchers.splice(0)) b.close()
    pressure.paceMs = 0
    pressure.overloaded = false
  })
  afterAll(async () => {
    unsubscribe(SCHEDULER_CALL_EVENT, onCall)
    await client?.close()
    info?.close()
    await daemon?.stop()
    await supernode?.stop()
    if (dir !== undefined) await rm(dir, { recursive: true, force: true })
  })

  const batcher = (taskId: string, delayMs = 50): ReportBatcher => {
    const b = new ReportBatcher(client, { taskId, delayMs, timeoutMs: 10_000, trusted: () => false })
    batchers.push(b)
    return b
  }
  /** Adds results n, n+1, … every 10 ms for `ms`; returns the next number. */
  const feed = async (b: ReportBatcher, from: number, ms: number): Promise<number> => {
    const end = performance.now() + ms
    let n = from
    while (performance.now() < end) {
      b.add(piece(n++))
      await sleep(10)
    }
    return n
  }
  const held = (taskId: string): number => scheduler.tasks.get(taskId)!.peers.get(daemon.peerId.toString())!.bitmap.count()
  const reportCalls = (since: number): Call[] => calls.filter((c) => c.at >= since && c.reports > 0)

  it('slows reporting to the pace a saturated scheduler asks for, losing no result and never going down', async () => {
    const b = batcher(T1)
    const t0 = performance.now()
    let n = await feed(b, 0, 2000)
    const unpacedMs = performance.now() - t0
    const unpaced = reportCalls(t0).length
    // Saturated: every answer now says 400 ms. The client learns it from the next answer.
    pressure.paceMs = 400
    n = await feed(b, n, 600)
    const t1 = performance.now()
    n = await feed(b, n, 2000)
    const pacedMs = performance.now() - t1
    const paced = reportCalls(t1).length
    await b.flush({})
    expect(held(T1)).toBe(n)
    expect(client.available).toBe(true)
    // The pace each answer names is the gauge's, stretched by up to half (spreadPace).
    expect(client.paceMs).toBeGreaterThanOrEqual(400)
    expect(client.paceMs).toBeLessThanOrEqual(400 * (1 + PACE_SPREAD))
    // Paced: at most one call per 400 ms of the time it really took (a loaded machine only
    // stretches it), and one that may have been under way. Unpaced (a 50 ms beat, about 20 a
    // second when quiet, 4 at load 45): more calls than that pace would have let through in
    // the same time, counted over 2 s so that a stalled moment does not decide it.
    const allowed = (ms: number): number => Math.floor(ms / 400) + 1
    expect(paced).toBeLessThanOrEqual(allowed(pacedMs))
    expect(paced).toBeGreaterThanOrEqual(2)
    expect(unpaced).toBeGreaterThan(allowed(unpacedMs))
  })

  it('puts off get_parents while busy: the client keeps polling at the pace, and the supernode is not marked down', async () => {
    pressure.overloaded = true
    pressure.paceMs = 300
    const t0 = performance.now()
    expect(await code(client.getParents(T1, 8))).toBe('SN_ERR_BUSY')
    // A busy answer names at least 500 ms; a poll before then does not leave the daemon.
    expect(client.paceMs).toBeGreaterThanOrEqual(500)
    const outcomes = new Set<string>()
    while (performance.now() - t0 < 1500) {
      outcomes.add(await code(client.getParents(T1, 8)))
      await sleep(20)
    }
    expect(outcomes).toEqual(new Set(['SN_ERR_BUSY']))
    const asked = calls.filter((c) => c.at >= t0 && c.call === 'get_parents')
    expect(asked.every((c) => c.busy)).toBe(true)
    // 1.5 s at one poll per 500 ms: the first, then about three more (not the ~70 tried).
    expect(asked.length).toBeGreaterThanOrEqual(2)
    expect(asked.length).toBeLessThanOrEqual(5)
    expect(client.available).toBe(true)
    // Reports are never put off.
    await client.reportPieces({ taskId: T1, results: [piece(1_000)] })
    expect(scheduler.tasks.get(T1)!.peers.get(daemon.peerId.toString())!.bitmap.has(1_000)).toBe(true)

    // The supernode recovers: after the pace the next poll is answered, and polls are no longer held back.
    pressure.overloaded = false
    pressure.paceMs = 0
    await sleep(client.paceMs + 50)
    expect(await code(client.getParents(T1, 8))).toBe('ok')
    expect(client.paceMs).toBe(0)
    expect(await code(client.getParents(T1, 8))).toBe('ok')
  })

  it('puts off the registration of a daemon that waits out a busy answer, and never that of one that does not say so', async () => {
    const T3 = taskIdOf({ url: url('put-off') })
    const T4 = taskIdOf({ url: url('older-daemon') })
    pressure.overloaded = true
    pressure.paceMs = 300
    // The daemon's client says it waits out a busy registration (features bit busyRegister).
    expect(await code(client.registerTask({ taskId: T3, url: url('put-off'), headers: [], digest: '', range: '', filter: [] }))).toBe('SN_ERR_BUSY')
    expect(client.paceMs).toBeGreaterThanOrEqual(500)
    expect(client.available).toBe(true)
    expect(scheduler.tasks.get(T3)?.peers.has(daemon.peerId.toString()) ?? false).toBe(false)
    // A daemon of an earlier build would take SN_ERR_BUSY for a refusal and go to the origin: served.
    const addrs = supernode.getMultiaddrs()
    const res = await call(daemon, addrs, PROTOCOLS.scheduler, SchedulerRequest, SchedulerResponse, { registerTask: { taskId: T4, url: url('older-daemon'), headers: [], digest: '', range: '', filter: [] } }, { timeoutMs: 10_000 })
    expect(res.error).toBeUndefined()
    expect(scheduler.tasks.get(T4)!.peers.has(daemon.peerId.toString())).toBe(true)
    // Once the supernode keeps up, the registration put off goes through.
    pressure.overloaded = false
    pressure.paceMs = 0
    await sleep(client.paceMs + 50)
    expect(await code(client.registerTask({ taskId: T3, url: url('put-off'), headers: [], digest: '', range: '', filter: [] }))).toBe('ok')
    expect(scheduler.tasks.get(T3)!.peers.has(daemon.peerId.toString())).toBe(true)
  })

  it('sends the reports several tasks make in one turn as one call', async () => {
    const a = batcher(T1, 100)
    const b = batcher(T2, 100)
    const t0 = performance.now()
    for (let i = 0; i < 5; i++) {
      a.add(piece(2_000 + i))
      b.add(piece(2_000 + i))
      await sleep(30)
    }
    await Promise.all([a.flush({}), b.flush({})])
    // The beat is common to both tasks: their reports left together.
    const batches = reportCalls(t0).filter((c) => c.call === 'report_batch')
    expect(batches.length).toBeGreaterThanOrEqual(1)
    expect(batches.every((c) => c.reports === 2)).toBe(true)
    for (const id of [T1, T2]) for (let i = 0; i < 5; i++) expect(scheduler.tasks.get(id)!.peers.get(daemon.peerId.toString())!.bitmap.has(2_000 + i)).toBe(true)
  })

  it('sends a task\'s digests once: the client asks only for new ones and hands on all of them', async () => {
    // A fresh task whose trusted source is another peer; the daemon only downloads it.
    const id = taskIdOf({ url: url('three') })
    scheduler.announceHost('source', { ...host, id: 'source' })
    scheduler.registerTask('source', { taskId: id, url: url('three'), headers: [], digest: '', range: '', filter: [] })
    await client.registerTask({ taskId: id, url: url('three'), headers: [], digest: '', range: '', filter: [] })
    const publish = (nums: number[]): void => {
      scheduler.reportPieces('source', { taskId: id, results: nums.map((n) => ({ ...piece(n), sha256: createHash('sha256').update(`${n}`).digest() })), contentLength: 8, pieceSize: 1, pieceCount: 8, sha256: new Uint8Array(0), state: '', error: undefined })
    }
    const spy = vi.spyOn(scheduler, 'getParents')
    try {
      publish([0, 1, 2])
      expect((await client.getParents(id, 8)).task!.pieces.map((p) => p.num)).toEqual([0, 1, 2])
      publish([3, 4])
      const second = (await client.getParents(id, 8)).task!
      expect(second.pieces.map((p) => p.num)).toEqual([0, 1, 2, 3, 4])
      expect(second.pieces[4].sha256).toEqual(createHash('sha256').update('4').digest())
      // The second call named the three it held: the answer on the wire carried two.
      expect(spy.mock.calls[1][3]).toMatchObject({ count: 3 })
      expect(spy.mock.results[1].value.task.pieces).toHaveLength(2)
    } finally {
      spy.mockRestore()
    }
  })
})

describe('the pace an answer names', () => {
  it('is the gauge\'s stretched by a share fixed for each daemon, never shorter, so that daemons told at once come back spread', () => {
    expect(spreadPace(0, 0.7)).toBe(0)
    expect(spreadPace(1_000, 0)).toBe(1_000)
    expect(spreadPace(1_000, 1)).toBe(1_000 * (1 + PACE_SPREAD))
    // One daemon always hears the same stretch (its report beat keeps one grid).
    expect(paceShare('12D3KooWexample')).toBe(paceShare('12D3KooWexample'))
    // 768 daemons (peer IDs differ in their tails) told 5 s in one second: their next calls
    // spread over 2.5 s, not one instant.
    const ids = Array.from({ length: 768 }, (_, i) => `12D3KooW${createHash('sha256').update(`peer ${i}`).digest('base64url').slice(0, 44)}`)
    const paces = ids.map((id) => spreadPace(5_000, paceShare(id)))
    expect(Math.min(...paces)).toBeGreaterThanOrEqual(5_000)
    expect(Math.max(...paces)).toBeLessThanOrEqual(7_500)
    const perQuarterSecond = new Map<number, number>()
    for (const p of paces) perQuarterSecond.set(Math.floor(p / 250), (perQuarterSecond.get(Math.floor(p / 250)) ?? 0) + 1)
    // Ten quarter-seconds of about 77 each; none holds more than a fifth of them.
    expect(perQuarterSecond.size).toBeGreaterThanOrEqual(9)
    expect(Math.max(...perQuarterSecond.values())).toBeLessThan(768 / 5)
  })
})

describe('pressure gauge', () => {
  /** Feeds `seconds` of samples (every 100 ms) of one utilisation and lag. */
  const feed = (g: PressureGauge, seconds: number, utilization: number, lagMs = 0): void => {
    for (let i = 0; i < seconds * 10; i++) g.sample(utilization, lagMs)
  }

  it('raises the pace while the loop is saturated, at most to its ceiling, and lowers it to none once it is not', () => {
    const g = new PressureGauge()
    feed(g, 1, 0.3)
    expect(g.paceMs).toBe(0)
    feed(g, 0.5, 1)
    expect(g.paceMs).toBe(250)
    const paces: number[] = []
    for (let i = 0; i < 120; i++) {
      feed(g, 1, 1)
      paces.push(g.paceMs)
    }
    // Grows, never more than doubling a step, up to its ceiling (15 s).
    expect(PRESSURE_DEFAULTS.maxPaceMs).toBe(15_000)
    expect(paces.every((p, i) => i === 0 || (p >= paces[i - 1] && p <= 2 * paces[i - 1]))).toBe(true)
    expect(paces.at(-1)).toBe(15_000)
    // A loop at the target utilisation keeps its pace; an idle one drops it.
    feed(g, 20, PRESSURE_DEFAULTS.target)
    expect(g.paceMs).toBe(15_000)
    feed(g, 60, 0.1)
    expect(g.paceMs).toBe(0)
    expect(g.busy()).toBe(false)
  })

  it('changes the pace at most once a pace (daemons hear of it at their next call)', () => {
    const g = new PressureGauge()
    feed(g, 0.5, 1)
    feed(g, 0.5, 1)
    feed(g, 0.5, 1)
    const before = g.paceMs
    expect(before).toBeGreaterThan(250)
    // Below one pace of saturation, no step; after it, one.
    feed(g, (before - 100) / 1000, 1)
    expect(g.paceMs).toBe(before)
    feed(g, 0.2, 1)
    expect(g.paceMs).toBeGreaterThan(before)
  })

  it('steps down only on the load the lower pace brings: it waits until every daemon has heard of it', () => {
    // Daemons whose calls keep the loop busy in proportion to 1 / pace (450 / pace: 60 % at
    // 750 ms), and who hear of a new pace at their next call, one old pace after the change.
    const run = (startPaceMs: number): { lowest: number; last: number } => {
      const g = new PressureGauge()
      feed(g, 0.5, 1)
      while (g.paceMs < startPaceMs) feed(g, 0.1, 1)
      let heard = g.paceMs
      let pending: { pace: number; at: number } | undefined
      let set = g.paceMs
      let lowest = Infinity
      for (let ms = 0; ms < 60_000; ms += 100) {
        if (pending !== undefined && ms >= pending.at) {
          heard = pending.pace
          pending = undefined
        }
        g.sample(heard === 0 ? 1 : Math.min(1, 450 / heard), 0)
        if (g.paceMs !== set) {
          pending = { pace: g.paceMs, at: ms + heard }
          set = g.paceMs
        }
        if (ms > 2_000) lowest = Math.min(lowest, g.paceMs)
      }
      return { lowest, last: g.paceMs }
    }
    for (const start of [2_000, 8_000]) {
      const { lowest, last } = run(start)
      // It settles between the utilisations that move it (50-70 %: 643-900 ms) and never
      // goes below 450 ms, where the loop would be saturated.
      expect(lowest).toBeGreaterThanOrEqual(450)
      expect(last).toBeGreaterThanOrEqual(Math.floor(450 / PRESSURE_DEFAULTS.high))
      expect(last).toBeLessThanOrEqual(Math.ceil(450 / PRESSURE_DEFAULTS.low))
    }
  })

  it('doubles the pace at each step while calls queue (a large lag on a busy loop), which utilisation alone cannot show', () => {
    const time = (lagMs: number, pace: number): number => {
      const g = new PressureGauge()
      let ms = 0
      while (g.paceMs < pace && ms < 60_000) {
        g.sample(1, lagMs)
        ms += 100
      }
      return ms
    }
    // Saturated and queueing: 250, 500, 1,000, 2,000 ms within about 2.5 s.
    expect(time(300, 2_000)).toBeLessThanOrEqual(3_000)
    // Saturated without a queue: the utilisation's 1.67× a step (1 / the target), nearly
    // twice as slow.
    expect(time(0, 2_000)).toBeGreaterThan(4_500)
  })

  it('is busy, and raises the pace for a large lag, only while the loop is busy too', () => {
    const g = new PressureGauge()
    // Other processes hold the CPU: the timer is late, the loop mostly idle. Neither are calls
    // put off nor daemons slowed: that would only starve them.
    feed(g, 1, 0.2, 800)
    expect(g.busy()).toBe(false)
    expect(g.paceMs).toBe(0)
    // Late and busy (below the utilisation that raises the pace by itself): calls that can
    // wait are put off, and the pace rises.
    feed(g, 1, 0.65, 800)
    expect(g.busy()).toBe(true)
    expect(g.paceMs).toBeGreaterThan(0)
    feed(g, 2, 0.65, 0)
    expect(g.busy()).toBe(false)
  })
})
