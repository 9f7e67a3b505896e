// Registration on its own, against a scheduler stub in process: what a supernode that keeps
// flapping costs a download (bounded), that an abort ends the wait for a scheduler, and what
// a node holding a task complete announces (digests only as the task's trusted source).
// The late-answer and bounded-wait rules, through a whole engine: register-retry.test.ts.

import pino from 'pino'
import { describe, expect, it } from 'vitest'
import { Bitmap, NaiadError, type ReportPiecesRequest, type TaskInfo } from '@naiad/proto'

import { Registration, registrationRequest } from '../src/download/registration.ts'
import type { SchedulerClient } from '../src/scheduler/client.ts'

const log = pino({ level: 'silent' })
const OPTIONS = { schedulerTimeoutMs: 1000, stallTimeoutMs: 10_000 }
const REQUEST = registrationRequest('t1', { url: 'http://origin/blob', headers: { authorization: 'Bearer x' }, digest: 'sha256:00' })

function info(backToSource: boolean): TaskInfo {
  return {
    id: 't1', url: 'http://origin/blob', state: 'running', contentLength: -1, pieceSize: 0, pieceCount: -1, pieces: [], sha256: new Uint8Array(0),
    error: undefined, backToSource, grant: new Uint8Array(0), sourcePeer: '', digestEpoch: 0, piecesFrom: 0
  } as TaskInfo
}

type Stub = SchedulerClient & { available: boolean; unavailableSince: number; registrations: number; reports: Array<Partial<ReportPiecesRequest>> }

function stub(registerTask: (s: Stub) => Promise<TaskInfo>): Stub {
  const s: Stub = {
    available: true,
    unavailableSince: 0,
    registrations: 0,
    reports: [],
    announceHost: async () => {},
    registerTask: async () => { s.registrations++; return registerTask(s) },
    reportPieces: async (req) => { s.reports.push(req) },
    getParents: async () => { throw new NaiadError('PROTO_ERR_TIMEOUT', 'not in this test') },
    leaveTask: async () => {},
    leaveHost: async () => {}
  }
  return s
}

const noStore = { bitmap: () => new Bitmap(), getPiece: () => undefined }

describe('registration', () => {
  it('builds the request from the download request', () => {
    expect(REQUEST).toEqual({ taskId: 't1', url: 'http://origin/blob', headers: [{ name: 'authorization', value: 'Bearer x' }], digest: 'sha256:00', range: '', filter: [] })
  })

  it('waits out a supernode too busy to register the task, after the pace it names, without counting attempts', async () => {
    // Four busy answers: more than the three attempts a late answer gets.
    const scheduler = stub(async (s) => {
      if (s.registrations <= 4) throw new NaiadError('SN_ERR_BUSY', 'the scheduler is saturated; ask again after pace_ms')
      return info(false)
    })
    Object.defineProperty(scheduler, 'paceMs', { value: 150 })
    const t0 = performance.now()
    const result = await new Registration(REQUEST, { scheduler, store: noStore, log }, OPTIONS).register(new AbortController().signal)
    expect(result).toMatchObject({ id: 't1', backToSource: false })
    expect(scheduler.registrations).toBe(5)
    // Four waits of the pace (timers fire late, never early).
    expect(performance.now() - t0).toBeGreaterThanOrEqual(4 * 150 - 10)
  })

  it('gives a supernode that goes down at every call and comes back ten attempts, then goes to the origin', async () => {
    const scheduler = stub(async (s) => {
      // Each call times out and the client marks the supernode down; the keep-alive finds it again at once.
      s.available = false
      s.unavailableSince = Date.now()
      setTimeout(() => { s.available = true; s.unavailableSince = 0 }, 0)
      throw new NaiadError('PROTO_ERR_TIMEOUT', 'the supernode answered late')
    })
    const result = await new Registration(REQUEST, { scheduler, store: noStore, log }, OPTIONS).register(new AbortController().signal)
    expect(result).toBeUndefined()
    expect(scheduler.registrations).toBe(10)
  })

  it('ends the wait for a scheduler that may come back when the download is cancelled', async () => {
    const scheduler = Object.assign(stub(async () => info(false)), { available: false, unavailableSince: Date.now() })
    const ac = new AbortController()
    const registering = new Registration(REQUEST, { scheduler, store: noStore, log }, OPTIONS).register(ac.signal)
    setTimeout(() => ac.abort(new NaiadError('PROTO_ERR_ABORTED', 'the caller went away')), 50)
    await expect(registering).rejects.toMatchObject({ code: 'PROTO_ERR_ABORTED' })
    expect(scheduler.registrations).toBe(0)
  })

  describe('announcing a task held complete', () => {
    const sha = (n: number): Buffer => Buffer.alloc(32, n)
    const held = new Bitmap()
    held.set(0)
    held.set(2)
    const store = { bitmap: () => held, getPiece: (_id: string, num: number) => ({ num, offset: num * 10, length: 10, sha256: sha(num) }) }
    const task = { contentLength: 25, pieceSize: 10, pieceCount: 3, sha256: sha(9) }

    it('reports its pieces with their digests and the layout when the scheduler makes it the source', async () => {
      const scheduler = stub(async () => info(true))
      await new Registration(REQUEST, { scheduler, store, log }, OPTIONS).announceComplete(task, new AbortController().signal)
      expect(scheduler.reports).toEqual([{
        taskId: 't1', state: 'succeeded', ...task,
        results: [0, 2].map((num) => ({ num, parentId: '', length: 10, costMs: 0, sha256: sha(num), errorCode: '' }))
      }])
    })

    it('reports only which pieces it holds otherwise (its digests are no reference)', async () => {
      const scheduler = stub(async () => info(false))
      await new Registration(REQUEST, { scheduler, store, log }, OPTIONS).announceComplete(task, new AbortController().signal)
      expect(scheduler.reports).toEqual([{
        taskId: 't1', state: 'succeeded',
        results: [0, 2].map((num) => ({ num, parentId: '', length: 10, costMs: 0, sha256: new Uint8Array(0), errorCode: '' }))
      }])
    })

    it('waits out a supernode too busy to register it, then reports its pieces', async () => {
      const scheduler = stub(async (s) => {
        if (s.registrations <= 2) throw new NaiadError('SN_ERR_BUSY', 'the scheduler is saturated; ask again after pace_ms')
        return info(false)
      })
      await new Registration(REQUEST, { scheduler, store, log }, OPTIONS).announceComplete(task, new AbortController().signal)
      expect(scheduler.registrations).toBe(3)
      expect(scheduler.reports).toMatchObject([{ taskId: 't1', state: 'succeeded' }])
    })

    it('drops the announce, without rejecting, when the scheduler refuses it or the node shuts down while it is busy', async () => {
      const refusing = stub(async () => { throw new NaiadError('SN_ERR_TASK_ID_MISMATCH', 'refused') })
      await new Registration(REQUEST, { scheduler: refusing, store, log }, OPTIONS).announceComplete(task, new AbortController().signal)
      expect({ registrations: refusing.registrations, reports: refusing.reports }).toEqual({ registrations: 1, reports: [] })

      const busy = stub(async () => { throw new NaiadError('SN_ERR_BUSY', 'the scheduler is saturated; ask again after pace_ms') })
      Object.defineProperty(busy, 'paceMs', { value: 60_000 })
      const ac = new AbortController()
      const announcing = new Registration(REQUEST, { scheduler: busy, store, log }, OPTIONS).announceComplete(task, ac.signal)
      setTimeout(() => ac.abort(new NaiadError('PROTO_ERR_ABORTED', 'daemon is shutting down')), 50)
      await announcing
      expect({ registrations: busy.registrations, reports: busy.reports }).toEqual({ registrations: 1, reports: [] })
    })

    it('says nothing to a scheduler known to be unavailable', async () => {
      const scheduler = Object.assign(stub(async () => info(true)), { available: false })
      await new Registration(REQUEST, { scheduler, store, log }, OPTIONS).announceComplete(task, new AbortController().signal)
      expect({ registrations: scheduler.registrations, reports: scheduler.reports }).toEqual({ registrations: 0, reports: [] })
    })
  })
})
