// The fetches of one download from its parents: each piece from one parent, through the
// QoS slot, a reservation of room in the cache and a PieceWriter that verifies as the bytes
// land. A fetch never rejects: its failure is classified here (what it says about the
// parent, and whether the download can go on), reported to the scheduler and handed to the
// task. Pieces far slower than the recent ones are abandoned while another parent holds them.

import { channel } from 'node:diagnostics_channel'

import type { Logger } from 'pino'
import { EVENTS, NaiadError, toNaiadError, type PieceResult } from '@naiad/proto'

import type { DataClient } from '../channel/data-client.ts'
import type { QosHooks, Traffic } from '../qos/hooks.ts'
import type { PieceStore } from '../storage/piece-store.ts'
import type { ParentSet, ParentState } from './parent-set.ts'
import { PieceWriter } from './piece-writer.ts'
import type { StagingPool } from './staging.ts'

const stored = channel(EVENTS.pieceStored)
const failed = channel(EVENTS.pieceFailed)

/** Fetch durations kept to tell a slow parent from a slow network. */
const RECENT_COSTS = 16

/** What a failed fetch says about its parent, and about the download. */
export interface FailureVerdict {
  /**
   * block: never asked again, by any task of this node; drop: not this task's parent any
   * more; cool: a cool-down, longer at each failure; keep: not the parent's doing.
   */
  parent: 'block' | 'drop' | 'cool' | 'keep'
  /** The parent could not be reached at all. */
  unreachable: boolean
  /** Ask the scheduler again at the next turn. */
  refresh: boolean
  /** The download cannot go on. */
  fatal: boolean
}

export function classifyFailure(code: string): FailureVerdict {
  const verdict: FailureVerdict = { parent: 'cool', unreachable: false, refresh: false, fatal: false }
  switch (code) {
    case 'DFD_ERR_PIECE_DIGEST':
      // A parent that sends one bad piece is never asked again, by any task of this node.
      return { ...verdict, parent: 'block' }
    case 'PROTO_ERR_IDENTITY':
      return { ...verdict, parent: 'drop' }
    case 'DFD_ERR_CACHE_FULL':
      // No room even after waiting for pieces in use: this download cannot go on.
      return { ...verdict, parent: 'keep', fatal: true }
    case 'DFD_ERR_PIECE_NO_DIGEST':
      // Not the parent's fault: this node asked before it knew the digest. Learn it first.
      return { ...verdict, refresh: true }
    case 'DFD_ERR_PIECE_FORBIDDEN':
      // A lapsed or missing grant: ask the scheduler for a fresh one.
      return { ...verdict, refresh: true }
    case 'PROTO_ERR_DIAL':
    case 'PROTO_ERR_TIMEOUT':
      // Whether the scheduler still names only parents like this one is its to say, now.
      return { ...verdict, unreachable: true, refresh: true }
  }
  return verdict
}

/** What the fetcher needs of its download, and what it tells it. */
export interface FetchTask {
  readonly id: string
  /** Where piece `num` sits in the content. */
  piece(num: number): { offset: number; length: number }
  /** The piece's digest as the task's source published it, when known. */
  digest(num: number): Uint8Array | undefined
  /** The task's trusted source (its digests are the reference). */
  isSource(peerId: string): boolean
  /** The scheduler's latest grant to fetch this task's pieces. */
  grant(): Uint8Array
  traffic(): Traffic
  /** A piece was verified and stored (its digest as verified; the whole content's, when the source sent it). */
  stored(piece: { num: number; length: number; sha256: Buffer | undefined; contentSha256: Uint8Array | undefined }): void
  /** After a stored piece was published and reported. */
  progressed(): void
  /** A fetch failed and the verdict asks something of the download (it is fatal, or asks for a refresh). */
  failed(verdict: FailureVerdict, err: NaiadError): void
  /** A fetch ended, stored or not: a slot is free. */
  settled(): void
}

export interface PieceFetcherComponents {
  store: PieceStore
  data: Pick<DataClient, 'fetch'>
  qos?: QosHooks
  staging: StagingPool
  parents: ParentSet
  /** Where piece results go (the task's report batcher). */
  reports: { add(result: PieceResult): void }
  log: Logger
  /** The clock (tests pass a fake one). */
  now?: () => number
}

export interface PieceFetcherOptions {
  /** A piece may go this long without a byte before its parent counts as stuck. */
  pieceTimeoutMs: number
  /** How long a piece waits for room in the cache held by downloads in use. */
  reserveWaitMs: number
  /** A piece is abandoned as slow only after this long (and 4× the recent median). */
  slowPieceMinMs: number
}

interface Inflight {
  parent: ParentState
  /** When the fetch was planned, and when its bytes could start moving (after QoS). */
  queued: number
  started: number
  abort: AbortController
  /** Settles once the fetch has let go of its piece (never rejects). */
  settled?: Promise<void>
}

export class PieceFetcher {
  private readonly inflight = new Map<number, Inflight>()
  /** Durations of the last pieces fetched from parents, to tell a slow parent from a slow network. */
  private readonly recentCosts: number[] = []
  private readonly task: FetchTask
  private readonly c: PieceFetcherComponents
  private readonly options: PieceFetcherOptions
  private readonly now: () => number

  constructor(task: FetchTask, components: PieceFetcherComponents, options: PieceFetcherOptions) {
    this.task = task
    this.c = components
    this.options = options
    this.now = components.now ?? Date.now
  }

  /** Fetches in flight. */
  get size(): number {
    return this.inflight.size
  }

  has(num: number): boolean {
    return this.inflight.has(num)
  }

  /**
   * Starts fetching piece `num` from `parent`; `signal` is the task's: once it fired, a
   * failure is neither counted nor reported (abortAll reaches the fetch itself).
   */
  start(num: number, parent: ParentState, live: boolean, signal: AbortSignal): void {
    const now = this.now()
    const entry: Inflight = { parent, queued: now, started: now, abort: new AbortController() }
    this.inflight.set(num, entry)
    parent.inflight++
    entry.settled = this.fetch(num, parent, live, entry, signal).catch((err: unknown) => {
      this.c.log.warn({ err: (err as Error).message, piece: num }, 'piece fetch failed unexpectedly')
    }).finally(() => {
      this.inflight.delete(num)
      parent.inflight--
      this.task.settled()
    })
  }

  /** Cancels every fetch in flight (the task's signal fired). */
  abortAll(reason: unknown): void {
    for (const f of this.inflight.values()) f.abort.abort(reason)
  }

  /** Stops every fetch in flight and waits until they let go of their pieces. */
  async stopAll(reason: NaiadError): Promise<void> {
    const pending = [...this.inflight.values()]
    if (pending.length === 0) return
    for (const f of pending) f.abort.abort(reason)
    await Promise.all(pending.map((f) => f.settled))
  }

  /**
   * A piece taking four times as long as the recent median (and at least slowPieceMinMs)
   * while another parent holds it is abandoned: the slow parent cools down, loses score
   * with the scheduler, and the piece goes elsewhere.
   */
  abortSlow(): void {
    if (this.recentCosts.length < 2) return
    const sorted = [...this.recentCosts].sort((a, b) => a - b)
    const median = sorted[Math.floor(sorted.length / 2)]
    const limit = Math.max(this.options.slowPieceMinMs, 4 * median)
    const now = this.now()
    for (const [num, f] of this.inflight) {
      if (now - f.started < limit || f.abort.signal.aborted) continue
      const elsewhere = this.c.parents.usable(now).some((p) => p !== f.parent && p.bitmap.has(num))
      if (!elsewhere) continue
      f.abort.abort(new NaiadError('DFD_ERR_PIECE_SLOW', `piece ${num} from ${f.parent.id} took over ${limit} ms (recent median ${median} ms)`))
    }
  }

  /** One piece from one parent. Never rejects: a failure is counted, reported and handled here. */
  private async fetch(num: number, parent: ParentState, live: boolean, entry: Inflight, signal: AbortSignal): Promise<void> {
    const { store, data, qos } = this.c
    const { id } = this.task
    const { offset, length } = this.task.piece(num)
    // The fetch's own controller: the task's abort reaches it through abortAll (one
    // listener per task, not a composite signal per piece on the long-lived task signal).
    const fetchSignal = entry.abort.signal
    let release: (() => void) | undefined
    try {
      if (qos?.active === true) {
        // While QoS holds the piece back it is not slow: its clock starts once it may move.
        entry.started = Number.POSITIVE_INFINITY
        await qos.acquire(length, this.task.traffic(), fetchSignal)
        release = await qos.slot(this.task.traffic(), fetchSignal)
        entry.started = this.now()
      }
      const reservation = await store.reserve(id, length, { waitMs: this.options.reserveWaitMs, signal: fetchSignal })
      const writer = new PieceWriter({
        store, taskId: id, piece: { num, offset, length },
        expected: this.task.digest(num), fromSource: this.task.isSource(parent.id), reservation, staging: this.c.staging
      })
      try {
        await data.fetch(parent.target!, { taskId: id, num, grant: this.task.grant(), live }, writer, { signal: fetchSignal, idleMs: this.options.pieceTimeoutMs })
      } finally {
        await writer.settled()
        reservation.release()
      }
      const costMs = this.now() - entry.started
      const headerAt = writer.headerAt
      this.task.stored({ num, length, sha256: writer.sha256, contentSha256: writer.contentSha256 })
      this.recentCosts.push(costMs)
      if (this.recentCosts.length > RECENT_COSTS) this.recentCosts.shift()
      this.c.parents.succeeded(parent)
      stored.publish({ taskId: id, num, length, source: 'peer', parentId: parent.id, costMs, seed: parent.isSeed })
      // headerMs: from the request to the parent's answer (its queue ahead of this piece, a live piece's wait on the origin).
      this.c.log.debug({ piece: num, parent: parent.id, live, ms: costMs, headerMs: headerAt === 0 ? -1 : headerAt - entry.started, waitedMs: entry.started - entry.queued }, 'piece stored')
      this.c.reports.add({ num, parentId: parent.id, length, costMs, sha256: new Uint8Array(0), errorCode: '' })
      this.task.progressed()
    } catch (err) {
      const e = entry.abort.signal.aborted && entry.abort.signal.reason instanceof NaiadError ? entry.abort.signal.reason : toNaiadError(err, 'DFD_ERR_PIECE_UNAVAILABLE')
      if (signal.aborted) return
      failed.publish({ taskId: id, num, parentId: parent.id, code: e.code })
      this.onFailed(num, parent, e)
      this.c.reports.add({ num, parentId: parent.id, length: 0, costMs: this.now() - entry.started, sha256: new Uint8Array(0), errorCode: e.code })
    } finally {
      release?.()
    }
  }

  private onFailed(num: number, parent: ParentState, e: NaiadError): void {
    const { parents, log } = this.c
    const verdict = classifyFailure(e.code)
    if (verdict.unreachable) parents.unreachable(parent)
    if (verdict.fatal || verdict.refresh) this.task.failed(verdict, e)
    switch (verdict.parent) {
      case 'block':
        parents.block(parent.id)
        log.warn({ parent: parent.id, piece: num, err: e.message }, 'parent sent a corrupt piece; blocked')
        return
      case 'drop':
        parents.drop(parent.id)
        log.warn({ parent: parent.id, err: e.message }, 'parent is not who the scheduler said; dropped')
        return
      case 'keep':
        return
      case 'cool':
        parents.failed(parent, this.now())
        log.debug({ parent: parent.id, piece: num, err: e.message }, 'piece fetch failed')
    }
  }
}
