// The piece fetcher on its own, in process: a real piece store in a temporary directory and
// a data client that hands the writer bytes directly (no socket). A verified piece is stored
// and reported; each kind of failure does what it says to the parent and to the download;
// a slow piece is abandoned only while another parent holds it; a cancelled task's fetches
// are neither counted nor reported.

import { createHash } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import pino from 'pino'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { NaiadError, type PieceResult } from '@naiad/proto'

import type { DataClient, PieceSink } from '../src/channel/data-client.ts'
import { classifyFailure, PieceFetcher, type FailureVerdict, type FetchTask } from '../src/download/piece-fetcher.ts'
import { ParentSet, type ParentState } from '../src/download/parent-set.ts'
import { StagingPool } from '../src/download/staging.ts'
import { QosHooks } from '../src/qos/hooks.ts'
import { DiskPieceStore } from '../src/storage/piece-store.ts'

const PIECE = 64 * 1024
const CONTENT = Buffer.from(Uint8Array.from({ length: 3 * PIECE - 1000 }, (_, i) => i % 251))
const pieceOf = (n: number): Buffer => CONTENT.subarray(n * PIECE, Math.min(CONTENT.length, (n + 1) * PIECE))
const sha = (b: Uint8Array): Buffer => createHash('sha256').update(b).digest()
const NONE = new Uint8Array(0)

type Serve = (num: number, sink: PieceSink, signal: AbortSignal) => Promise<void>

/** A parent that sends the piece's bytes (or `bytes`), heading them with their digest when `announce`. */
const sends = (bytes?: (n: number) => Buffer, announce = false): Serve => async (num, sink) => {
  const data = bytes?.(num) ?? pieceOf(num)
  sink.header({ num, length: data.length, sha256: announce ? sha(data) : NONE }, { pause: () => {}, resume: () => {} })
  sink.data(data)
  await sink.end({ sha256: NONE, contentSha256: NONE })
}
/** A parent that sends nothing until the fetch is cancelled. */
const hangs: Serve = (_num, _sink, signal) => new Promise((_resolve, reject) => {
  const cancel = (): void => reject(new NaiadError('PROTO_ERR_ABORTED', 'cancelled'))
  if (signal.aborted) return cancel()
  signal.addEventListener('abort', cancel, { once: true })
})
const throws = (code: string): Serve => async () => { throw new NaiadError(code as 'PROTO_ERR_DIAL', `${code} from the test`) }

describe('piece fetcher', () => {
  let dir: string
  let n = 0

  beforeAll(async () => { dir = await mkdtemp(join(tmpdir(), 'naiad-piece-fetcher-')) })
  afterAll(async () => { await rm(dir, { recursive: true, force: true }) })

  /** One download's fetcher, its parents (each holding every piece) and what it told the task. */
  function setup(serve: Record<string, Serve>, options: { digests?: boolean; source?: string; quota?: number; qos?: QosHooks } = {}) {
    const id = `task-${n++}`
    const store = new DiskPieceStore({ dir: join(dir, id), quota: options.quota ?? 16 * PIECE })
    store.ensureTask(id, 'http://origin/blob', PIECE)
    store.setTaskLength(id, CONTENT.length, 3)
    const parents = new ParentSet(new Set())
    parents.update(Object.keys(serve).map((pid) => ({ id: pid, multiaddrs: ['/ip4/127.0.0.1/tcp/1'], bitmap: new Uint8Array([0b111]), score: 1, isSeed: false, dataPort: 2, dataTransport: 'tcp' })))
    const data: Pick<DataClient, 'fetch'> = {
      fetch: async (target, req, sink, { signal }) => {
        try {
          await serve[target.peerId](req.num, sink, signal)
        } catch (err) {
          sink.abort(err as Error)
          throw err
        }
      }
    }
    const reports: PieceResult[] = []
    const stored: Array<{ num: number; length: number; sha256: Buffer | undefined }> = []
    const verdicts: Array<{ verdict: FailureVerdict; code: string }> = []
    let settled = 0
    const waiters: Array<() => void> = []
    const clock = { now: 1_000_000 }
    const task: FetchTask = {
      id,
      piece: (num) => ({ offset: num * PIECE, length: pieceOf(num).length }),
      digest: (num) => options.digests === false ? undefined : sha(pieceOf(num)),
      isSource: (peerId) => peerId === options.source,
      grant: () => NONE,
      traffic: () => ({ priority: 'on-demand', tenantKey: 'http://origin/blob', direction: 'download' }),
      stored: ({ num, length, sha256 }) => stored.push({ num, length, sha256 }),
      progressed: () => {},
      failed: (verdict, err) => verdicts.push({ verdict, code: err.code }),
      settled: () => { settled++; for (const w of waiters.splice(0)) w() }
    }
    const fetcher = new PieceFetcher(task, {
      store, data, parents, reports: { add: (r) => reports.push(r) }, staging: new StagingPool(), qos: options.qos,
      log: pino({ level: 'silent' }), now: () => clock.now
    }, { pieceTimeoutMs: 1000, reserveWaitMs: 0, slowPieceMinMs: 500 })
    /** Resolves once `count` fetches have ended in all. */
    const ended = async (count: number): Promise<void> => {
      while (settled < count) await new Promise<void>((r) => waiters.push(r))
    }
    const parent = (pid: string): ParentState => parents.get(pid)!
    return { id, store, parents, parent, fetcher, reports, stored, verdicts, ended, clock }
  }

  it('stores a verified piece, reports it, and frees the parent\'s slot', async () => {
    const t = setup({ a: sends() })
    const task = new AbortController()
    t.fetcher.start(2, t.parent('a'), false, task.signal)
    expect(t.fetcher.has(2)).toBe(true)
    expect(t.parent('a').inflight).toBe(1)
    await t.ended(1)
    expect(t.store.bitmap(t.id).has(2)).toBe(true)
    expect(await t.store.read(t.id, 2 * PIECE, pieceOf(2).length)).toEqual(pieceOf(2))
    expect(t.stored).toEqual([{ num: 2, length: pieceOf(2).length, sha256: sha(pieceOf(2)) }])
    expect(t.reports).toEqual([expect.objectContaining({ num: 2, parentId: 'a', length: pieceOf(2).length, errorCode: '' })])
    expect({ size: t.fetcher.size, inflight: t.parent('a').inflight, verdicts: t.verdicts }).toEqual({ size: 0, inflight: 0, verdicts: [] })
    await t.store.close()
  })

  it('blocks a parent that sends a corrupt piece, for every task of the node', async () => {
    const t = setup({ a: sends((num) => Buffer.alloc(pieceOf(num).length, 1)) })
    t.fetcher.start(0, t.parent('a'), false, new AbortController().signal)
    await t.ended(1)
    expect(t.store.bitmap(t.id).has(0)).toBe(false)
    expect(t.parents.isBlocked('a')).toBe(true)
    expect(t.parents.usable(t.clock.now)).toEqual([])
    expect(t.reports).toEqual([expect.objectContaining({ num: 0, parentId: 'a', length: 0, errorCode: 'DFD_ERR_PIECE_DIGEST' })])
    // Nothing asked of the download: the parent's fault alone.
    expect(t.verdicts).toEqual([])
    await t.store.close()
  })

  it('takes the digest a source sends, and asks the scheduler first when another parent has none to check against', async () => {
    const t = setup({ seed: sends(undefined, true), peer: sends(undefined, true) }, { digests: false, source: 'seed' })
    const signal = new AbortController().signal
    t.fetcher.start(0, t.parent('peer'), false, signal)
    await t.ended(1)
    expect(t.verdicts).toEqual([{ verdict: { parent: 'cool', unreachable: false, refresh: true, fatal: false }, code: 'DFD_ERR_PIECE_NO_DIGEST' }])
    expect(t.parent('peer').coolUntil).toBeGreaterThan(t.clock.now)
    // The source's own digest is the reference (the data channel proved who it is); the
    // verified digest goes to the task, which had none.
    t.fetcher.start(1, t.parent('seed'), false, signal)
    await t.ended(2)
    expect(t.stored).toEqual([{ num: 1, length: PIECE, sha256: sha(pieceOf(1)) }])
    expect(t.reports.map((r) => r.errorCode)).toEqual(['DFD_ERR_PIECE_NO_DIGEST', ''])
    await t.store.close()
  })

  it('marks a parent it cannot reach, cools it down, and asks for fresh parents', async () => {
    const t = setup({ a: throws('PROTO_ERR_DIAL') })
    t.fetcher.start(0, t.parent('a'), false, new AbortController().signal)
    await t.ended(1)
    expect(t.parent('a').unreachable).toBe(true)
    expect(t.parent('a').failures).toBe(1)
    expect(t.parents.usable(t.clock.now)).toEqual([])
    expect(t.verdicts).toEqual([{ verdict: { parent: 'cool', unreachable: true, refresh: true, fatal: false }, code: 'PROTO_ERR_DIAL' }])
    await t.store.close()
  })

  it('ends the download when the cache has no room for a piece, without blaming the parent', async () => {
    const t = setup({ a: sends() }, { quota: PIECE / 2 })
    t.fetcher.start(0, t.parent('a'), false, new AbortController().signal)
    await t.ended(1)
    expect(t.verdicts).toEqual([{ verdict: { parent: 'keep', unreachable: false, refresh: false, fatal: true }, code: 'DFD_ERR_CACHE_FULL' }])
    expect(t.parent('a').failures).toBe(0)
    expect(t.reports).toEqual([expect.objectContaining({ num: 0, errorCode: 'DFD_ERR_CACHE_FULL' })])
    await t.store.close()
  })

  /** A fetcher that stored two pieces from `fast` in no time (the recent median is 0, so the slow limit is slowPieceMinMs, 500) and now fetches piece 2 from `slow`. */
  async function slowThird(blockFast: boolean): Promise<ReturnType<typeof setup>> {
    const t = setup({ fast: sends(), slow: hangs })
    const signal = new AbortController().signal
    t.fetcher.start(0, t.parent('fast'), false, signal)
    t.fetcher.start(1, t.parent('fast'), false, signal)
    await t.ended(2)
    if (blockFast) t.parents.block('fast')
    t.fetcher.start(2, t.parent('slow'), false, signal)
    return t
  }

  /** Advances the clock by `ms`, looks for slow pieces, and says whether piece 2 is still in flight. */
  async function runningAfter(t: ReturnType<typeof setup>, ms: number): Promise<boolean> {
    t.clock.now += ms
    t.fetcher.abortSlow()
    await new Promise((r) => setImmediate(r))
    return t.fetcher.has(2)
  }

  it('abandons a slow piece once another parent holds it, never before the slow limit', async () => {
    const t = await slowThird(false)
    expect(await runningAfter(t, 499)).toBe(true)
    t.clock.now += 1
    t.fetcher.abortSlow()
    await t.ended(3)
    expect(t.reports.at(-1)).toEqual(expect.objectContaining({ num: 2, parentId: 'slow', errorCode: 'DFD_ERR_PIECE_SLOW', costMs: 500 }))
    expect(t.parent('slow').failures).toBe(1)
    await t.store.close()
  })

  it('lets a slow piece run when no other parent holds it', async () => {
    const t = await slowThird(true)
    expect(await runningAfter(t, 60_000)).toBe(true)
    await t.fetcher.stopAll(new NaiadError('PROTO_ERR_ABORTED', 'test over'))
    expect(t.fetcher.size).toBe(0)
    await t.store.close()
  })

  it('neither counts nor reports the fetches of a cancelled task, and stopAll waits for them', async () => {
    const t = setup({ a: hangs })
    const task = new AbortController()
    t.fetcher.start(0, t.parent('a'), false, task.signal)
    t.fetcher.start(1, t.parent('a'), false, task.signal)
    task.abort(new NaiadError('PROTO_ERR_ABORTED', 'the caller went away'))
    t.fetcher.abortAll(task.signal.reason)
    await t.fetcher.stopAll(new NaiadError('PROTO_ERR_ABORTED', 'stop'))
    expect({ size: t.fetcher.size, inflight: t.parent('a').inflight, reports: t.reports, verdicts: t.verdicts, failures: t.parent('a').failures })
      .toEqual({ size: 0, inflight: 0, reports: [], verdicts: [], failures: 0 })
    await t.store.close()
  })

  it('holds a QoS slot for the piece and gives it back whatever the outcome', async () => {
    const qos = new QosHooks()
    const calls: string[] = []
    qos.install({
      admit: () => ({ admitted: true, release: () => {} }),
      acquire: async (bytes) => { calls.push(`acquire ${bytes}`) },
      slot: async () => { calls.push('slot'); return () => calls.push('release') }
    })
    const t = setup({ good: sends(), bad: throws('PROTO_ERR_TIMEOUT') }, { qos })
    const signal = new AbortController().signal
    t.fetcher.start(0, t.parent('good'), false, signal)
    await t.ended(1)
    t.fetcher.start(1, t.parent('bad'), false, signal)
    await t.ended(2)
    expect(calls).toEqual([`acquire ${PIECE}`, 'slot', 'release', `acquire ${PIECE}`, 'slot', 'release'])
    await t.store.close()
  })
})

describe('fetch failure verdicts', () => {
  it('says what each failure means for the parent and the download', () => {
    const row = (code: string): string => {
      const v = classifyFailure(code)
      return [v.parent, v.unreachable && 'unreachable', v.refresh && 'refresh', v.fatal && 'fatal'].filter(Boolean).join(' ')
    }
    expect(Object.fromEntries(['DFD_ERR_PIECE_DIGEST', 'PROTO_ERR_IDENTITY', 'DFD_ERR_CACHE_FULL', 'DFD_ERR_PIECE_NO_DIGEST', 'DFD_ERR_PIECE_FORBIDDEN', 'PROTO_ERR_DIAL', 'PROTO_ERR_TIMEOUT', 'DFD_ERR_PIECE_SLOW', 'DFD_ERR_PIECE_UNAVAILABLE'].map((c) => [c, row(c)]))).toEqual({
      DFD_ERR_PIECE_DIGEST: 'block',
      PROTO_ERR_IDENTITY: 'drop',
      DFD_ERR_CACHE_FULL: 'keep fatal',
      DFD_ERR_PIECE_NO_DIGEST: 'cool refresh',
      DFD_ERR_PIECE_FORBIDDEN: 'cool refresh',
      PROTO_ERR_DIAL: 'cool unreachable refresh',
      PROTO_ERR_TIMEOUT: 'cool unreachable refresh',
      DFD_ERR_PIECE_SLOW: 'cool',
      DFD_ERR_PIECE_UNAVAILABLE: 'cool'
    })
  })
})
