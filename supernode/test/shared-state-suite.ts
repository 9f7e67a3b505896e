// The shared stores' contract, run on every database the state can live in (SQLite and
// PostgreSQL, see shared-state.test.ts): migrations, admission nodes, the remedy budget,
// preheat jobs and their leases, SLO traces, doctor reports.

import { expect, it } from 'vitest'
import { createLogger, type HealthFacts, type PullTrace } from '@naiad/proto'

import { NodeRegistry } from '../src/admission/node-registry.ts'
import { migrate, MIGRATIONS } from '../src/database/migrations.ts'
import type { Sql } from '../src/database/sql.ts'
import { ReportStore } from '../src/plugins/doctor/report-store.ts'
import { HealthEngine } from '../src/plugins/health/engine.ts'
import { HealthEventStore } from '../src/plugins/health/event-store.ts'
import { readHealthSettings } from '../src/plugins/health/settings.ts'
import { JobStore, type JobArgs } from '../src/plugins/preheat/job-store.ts'
import { evaluate, indicators, readSloSettings } from '../src/plugins/slo/objectives.ts'
import { TraceStore } from '../src/plugins/slo/trace-store.ts'

export interface Backend {
  /** A fresh, migrated database; `another` opens a second client on it (another process or supernode). */
  fresh(): Promise<{ sql: Sql; another(): Promise<Sql> }>
  /**
   * Whether two clients' transactions truly run at once. SQLite's handle is synchronous:
   * one process's clients share one handle, so the race is between callers of that handle.
   */
  concurrent: boolean
}

const PEER_A = '12D3KooWAaAaAaAaAaAaAaAaAaAaAaAaAaAaAaAaAaAaAaAaAaAa'
const PEER_B = '12D3KooWBbBbBbBbBbBbBbBbBbBbBbBbBbBbBbBbBbBbBbBbBbBb'
const T0 = 1_700_000_000_000

const fileJob: JobArgs = { type: 'file', urls: ['https://origin.example/a', 'https://origin.example/b'], platform: '', scope: 'seed', headers: { accept: '*/*' }, parallelism: 2, deadlineMs: 0, ttlMs: 60_000 }

function trace(id: string, over: Partial<PullTrace> = {}): PullTrace {
  return {
    traceId: id, taskId: 't'.repeat(64), url: 'https://origin.example/a', result: 'succeeded', errorCode: '', errorMessage: '',
    startedAtMs: T0, registeredAtMs: T0 + 1, scheduled: true, firstPieceAtMs: -1, finishedAtMs: T0 + 2000, durationMs: 2000,
    contentLength: 1 << 30, bytesPeer: 3 << 28, bytesSeed: 0, bytesOrigin: 1 << 28, backToSource: [{ atMs: 5, reason: 'no parent' }],
    parents: [{ peerId: PEER_B, isSeed: false, bytes: 3 << 28, pieces: 3 }], pieces: 4, pieceFailures: 0, ...over
  } as PullTrace
}

export function sharedStateSuite(backend: Backend): void {
  it('migrations: every step once, recorded with when; again nothing; a newer database is refused', async () => {
    const { sql, another } = await backend.fresh()
    const rows = await sql.all<{ version: number; applied_at: number }>('SELECT version, applied_at FROM schema_migrations ORDER BY version')
    expect(rows.map((r) => r.version)).toEqual(MIGRATIONS.map((m) => m.version))
    expect(rows.every((r) => Math.abs(r.applied_at - Date.now()) < 600_000)).toBe(true)
    expect(await migrate(await another())).toEqual([])
    await sql.run('INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)', [999, Date.now()])
    await expect(migrate(sql)).rejects.toMatchObject({ code: 'SN_ERR_DATABASE' })
  })

  it('admission: joins, lists, revokes; another process sees both on refresh', async () => {
    const { sql, another } = await backend.fresh()
    const here = await NodeRegistry.open(sql)
    const there = await NodeRegistry.open(await another())
    await here.join(PEER_A, 'node-a', 'tok', T0)
    await here.join(PEER_B, 'node-b', 'tok', T0 + 1)
    expect(there.isAdmitted(PEER_A)).toBe(false)
    expect(await there.refresh()).toEqual([])
    expect(there.isAdmitted(PEER_A)).toBe(true)
    await there.revoke(PEER_B, T0 + 2)
    expect(await here.refresh()).toEqual([PEER_B])
    expect(here.isRevoked(PEER_B)).toBe(true)
    expect(here.revokedSince(T0)).toEqual([PEER_B])
    expect((await here.list()).map((n) => [n.id, n.hostname, n.revokedAt])).toEqual([[PEER_A, 'node-a', null], [PEER_B, 'node-b', T0 + 2]])
    await expect(here.join(PEER_B, 'node-b', 'tok')).rejects.toMatchObject({ code: 'SN_ERR_NODE_REVOKED' })
    await expect(here.revoke('12D3KooWCcCcCcCcCcCcCcCcCcCcCcCcCcCcCcCcCcCcCcCcCcCc')).rejects.toMatchObject({ code: 'SN_ERR_NODE_NOT_FOUND' })
  })

  it('health: two supernodes racing for the remedy budget never take more than it', async () => {
    const { sql, another } = await backend.fresh()
    const clients = [new HealthEventStore(sql), new HealthEventStore(backend.concurrent ? await another() : sql)]
    const budget = { max: 5, windowMs: 60_000 }
    // An old remedy, outside the window, takes no slot.
    await clients[0].add({ at: T0 - 61_000, host: 'old', rule: 'r', action: 'isolate', decision: 'applied', reason: '', facts: null })
    const attempts = clients.flatMap((c, i) => Array.from({ length: 12 }, (_, k) =>
      c.reserve({ at: T0 + k, host: `h${i}-${k}`, rule: 'r', action: 'isolate', reason: 'race', facts: { k } }, budget)))
    const results = await Promise.all(attempts)
    const taken = results.filter((r) => 'event' in r)
    expect(taken).toHaveLength(5)
    expect((await clients[1].budgetUsed(T0 + 20 - budget.windowMs)).count).toBe(5)
    const full = results.find((r) => 'full' in r)
    expect(full).toMatchObject({ full: { count: 5 } })
    // Slots free up as the window moves past them.
    const later = await clients[1].reserve({ at: T0 + 61_000, host: 'late', rule: 'r', action: 'heal', reason: '', facts: null }, budget)
    expect('event' in later).toBe(true)
    expect((await clients[0].list({ host: 'late' }))[0]).toMatchObject({ decision: 'applied', action: 'heal' })
  })

  it('health: the breaker is judged on every supernode\'s hosts, and each flip is recorded once', async () => {
    const { sql, another } = await backend.fresh()
    const healthy = { diskFreeBytes: 1e10, diskFreeRatio: 0.5, samples: 20, pieceFailureRate: 0, uploadSamples: 0, uploadErrorRate: 0, meanPieceCostMs: 10, clockOffsetMs: 0, clockRttMs: 1, fuseDevice: true, fusermount: true, windowMs: 60_000 } as HealthFacts
    const failing = { ...healthy, pieceFailureRate: 0.9 }
    let now = T0
    const settings = readHealthSettings({
      rules: [{ name: 'bad', when: 'pieceFailureRate > 0.3', action: 'isolate' }], remedies: { max: 10, window: '1m' },
      breaker: { maxUnhealthyPercent: 30, minHosts: 5, closeAfter: '0s' }
    })
    const engine = async (self: string, s: Sql): Promise<HealthEngine> => {
      const e = new HealthEngine({ settings, events: new HealthEventStore(s), logger: createLogger('test', 'silent'), isGone: () => false, schedulerFacts: () => ({}), heal: undefined, self, now: () => now })
      await e.restore()
      return e
    }
    const a = await engine('sn-a', sql)
    const b = await engine('sn-b', backend.concurrent ? await another() : sql)
    // Alone, neither has enough hosts to trip (A: 0 of 3, B: 2 of 3); together 2 of 6 is over 30 %.
    for (const id of ['a1', 'a2', 'a3']) a.report(id, healthy)
    for (const id of ['b1', 'b2']) b.report(id, failing)
    b.report('b3', healthy)
    now += 1000
    await a.evaluate()
    await Promise.all([a.evaluate(), b.evaluate()])
    expect(b.breakerState).toMatchObject({ open: true, unhealthy: 2, population: 6 })
    expect(['b1', 'b2'].map((id) => b.levelOf(id))).toEqual(['healthy', 'healthy'])
    const events = await new HealthEventStore(sql).list()
    expect(events.filter((e) => e.decision === 'breaker-open')).toHaveLength(1)
    expect(events.filter((e) => e.decision === 'suppressed').map((e) => e.host).sort()).toEqual(['b1', 'b2'])
    // A supernode leaving takes its hosts out: B alone is under minHosts, and the breaker closes.
    await a.leave()
    now += 1000
    await b.evaluate()
    expect(b.breakerState).toMatchObject({ open: false, population: 3 })
    expect(['b1', 'b2'].map((id) => b.levelOf(id))).toEqual(['isolated', 'isolated'])

    // A supernode started later knows B's remedies (isolated everywhere) without counting B's hosts.
    const c = await engine('sn-c', backend.concurrent ? await another() : sql)
    expect(c.levelOf('b1')).toBe('isolated')
    c.report('c1', healthy)
    now += 1000
    await Promise.all([b.evaluate(), c.evaluate()])
    expect(c.breakerState).toMatchObject({ population: 4 })
    expect([...c.hosts.keys()]).toEqual(['c1'])
    // b1 moves to C (B fell silent for it): it stays isolated, and C judges it from now on.
    c.report('b1', healthy)
    expect(c.levelOf('b1')).toBe('isolated')
  })

  it('health: host states and events survive a new client', async () => {
    const { sql, another } = await backend.fresh()
    const store = new HealthEventStore(sql)
    await store.saveHost({ id: 'h', level: 'isolated', step: 'isolate', stepAt: T0 }, 'sn-a')
    await store.saveHost({ id: 'h', level: 'degraded', step: 'degrade', stepAt: T0 + 1 }, 'sn-a')
    await store.saveHost({ id: 'gone', level: 'isolated', step: 'isolate', stepAt: T0 }, 'sn-a')
    await store.saveHost({ id: 'gone', level: 'healthy', step: 'none', stepAt: 0 }, 'sn-a')
    // Another supernode judges this one now: the first's recovery of it does not remove its row.
    await store.saveHost({ id: 'moved', level: 'isolated', step: 'isolate', stepAt: T0 }, 'sn-b')
    await store.saveHost({ id: 'moved', level: 'healthy', step: 'none', stepAt: 0 }, 'sn-a')
    const e = await store.add({ at: T0, host: 'h', rule: 'r', action: 'degrade', decision: 'suppressed', reason: 'why', facts: { a: 1 } })
    const other = new HealthEventStore(await another())
    expect((await other.hosts()).sort((x, y) => x.id.localeCompare(y.id))).toEqual([
      { id: 'h', level: 'degraded', step: 'degrade', stepAt: T0 + 1, supernode: 'sn-a' },
      { id: 'moved', level: 'isolated', step: 'isolate', stepAt: T0, supernode: 'sn-b' }
    ])
    expect(await other.list({ afterId: e.id - 1 })).toEqual([e])
    await other.prune(T0 + 1)
    expect(await store.list()).toEqual([])
  })

  it('preheat: jobs, blobs and nodes; secrets never stored; a lease keeps a job on one supernode until it runs out', async () => {
    const { sql, another } = await backend.fresh()
    const a = new JobStore(sql)
    const b = new JobStore(await another())
    const job = await a.create('preheat', { ...fileJob, password: 'hunter2', headers: { authorization: 'Basic x' } }, T0, { owner: 'sn-a', ms: 30_000 })
    expect(job).toMatchObject({ state: 'PENDING', resolved: false, createdAt: T0 })
    expect(JSON.stringify(job.args)).not.toContain('hunter2')
    expect(job.args).toMatchObject({ credentials: true, headers: { authorization: '<redacted>' } })
    await a.addBlobs(job.id, fileJob.urls!.map((url) => ({ kind: 'file' as const, url, digest: null, size: -1 })))
    await a.addBlobs(job.id, fileJob.urls!.map((url) => ({ kind: 'file' as const, url, digest: null, size: -1 })))
    await a.updateBlob(job.id, 0, { state: 'SUCCESS', bytes: 7, size: 7, cached: true, taskId: 'x', finishedAt: T0 + 5 })
    await a.update(job.id, { state: 'RUNNING', resolved: true, startedAt: T0 + 1 }, T0 + 1)
    await a.addNodes(job.id, [{ hostId: PEER_A, hostname: 'node-a', labels: { zone: 'a' } }], [0, 1])
    await a.updateNodeBlob(job.id, PEER_A, 1, { state: 'FAILURE', errorCode: 'DFD_ERR_TASK_FAILED', error: 'no', fromPeers: 3, cached: false })
    await a.updateNode(job.id, PEER_A, { errorCode: 'PROTO_ERR_TIMEOUT', error: 'slow' })

    expect((await b.blobs(job.id)).map((x) => [x.idx, x.state, x.bytes, x.size, x.cached])).toEqual([[0, 'SUCCESS', 7, 7, true], [1, 'PENDING', 0, -1, false]])
    expect(await b.nodes(job.id)).toEqual([{ jobId: job.id, hostId: PEER_A, hostname: 'node-a', labels: { zone: 'a' }, errorCode: 'PROTO_ERR_TIMEOUT', error: 'slow' }])
    expect((await b.nodeBlobs(job.id, PEER_A)).map((x) => [x.idx, x.state, x.fromPeers])).toEqual([[0, 'PENDING', 0], [1, 'FAILURE', 3]])
    expect((await b.unfinished()).map((j) => [j.id, j.state, j.resolved])).toEqual([[job.id, 'RUNNING', true]])

    // Leases: B cannot take A's job while A renews; once A's lease ran out (A died), B can, and A learns it lost it.
    expect(await b.claim(job.id, 'sn-b', 30_000, T0 + 10_000)).toBe(false)
    expect(await a.renew('sn-a', [job.id], 30_000, T0 + 20_000)).toEqual(new Set([job.id]))
    expect(await b.claim(job.id, 'sn-b', 30_000, T0 + 40_000)).toBe(false)
    expect(await b.claim(job.id, 'sn-b', 30_000, T0 + 50_001)).toBe(true)
    expect(await a.renew('sn-a', [job.id], 30_000, T0 + 50_002)).toEqual(new Set())
    await b.release('sn-b')
    expect(await a.claim(job.id, 'sn-a', 30_000, T0 + 50_003)).toBe(true)

    await a.update(job.id, { state: 'SUCCESS', finishedAt: T0 + 60 }, T0 + 60)
    expect(await b.claim(job.id, 'sn-b', 30_000, T0 + 999_999)).toBe(false)
    expect(await b.expired(T0 + 60 + 60_000)).toEqual([job.id])
    await b.delete(job.id)
    expect(await a.get(job.id)).toBeUndefined()
    expect(await a.blobs(job.id)).toEqual([])
    expect(await a.nodeBlobs(job.id)).toEqual([])
  })

  it('slo: a trace is stored once; SLIs and objectives are computed in the database', async () => {
    const { sql } = await backend.fresh()
    const store = new TraceStore(sql)
    expect(await store.insert(PEER_A, trace('t1'), T0 + 3000)).toBe(true)
    expect(await store.insert(PEER_A, trace('t1'), T0 + 3000)).toBe(false)
    await store.insert(PEER_B, trace('t2', { result: 'failed', errorCode: 'DFD_ERR_TASK_FAILED', finishedAtMs: T0 + 4000, contentLength: 0, bytesPeer: 0, bytesOrigin: 0 }), T0 + 4000)
    const rows = await store.list({ peerId: PEER_A, limit: 10 })
    expect(rows).toHaveLength(1)
    expect(rows[0]).toMatchObject({ traceId: 't1', scheduled: true, firstPieceAt: null, backToSource: [{ atMs: 5, reason: 'no parent' }], contentLength: 1 << 30 })
    const sli = await indicators(store, 60_000, '1m', T0 + 5000)
    expect(sli).toMatchObject({ pulls: 2, succeeded: 1, failed: 1, successRate: 0.5, secondsPerGiB: 2, backToSourceRatio: 0.25 })
    const settings = readSloSettings({
      objectives: [
        { name: 'ok', sli: 'success-rate', target: 0.9, window: '1h' },
        { name: 'fast', sli: 'seconds-per-gib', threshold: 3, target: 0.5, window: '1h' },
        { name: 'p2p', sli: 'back-to-source-ratio', threshold: 0.2, target: 0.5, window: '1h' }
      ]
    })
    const reports = await Promise.all(settings.objectives.map((o) => evaluate(store, o, T0 + 5000)))
    expect(reports.map((r) => [r.name, r.eligible, r.good])).toEqual([['ok', 2, 1], ['fast', 1, 1], ['p2p', 1, 0]])
    expect(await store.prune(T0 + 3500)).toBe(1)
    expect((await store.list({ limit: 10 })).map((r) => r.traceId)).toEqual(['t2'])
  })

  it('doctor: the latest report per node', async () => {
    const { sql, another } = await backend.fresh()
    const store = new ReportStore(sql)
    await store.put({ peerId: PEER_B, hostname: 'b', receivedAt: T0, report: '{"v":1}' })
    await store.put({ peerId: PEER_A, hostname: 'a', receivedAt: T0, report: '{"v":1}' })
    await store.put({ peerId: PEER_A, hostname: 'a2', receivedAt: T0 + 1, report: '{"v":2}' })
    const other = new ReportStore(await another())
    expect(await other.get(PEER_A)).toEqual({ peerId: PEER_A, hostname: 'a2', receivedAt: T0 + 1, report: '{"v":2}' })
    expect((await other.all()).map((r) => r.peerId)).toEqual([PEER_A, PEER_B])
    expect(await other.get('nobody')).toBeUndefined()
  })
}
