// Piece results go to the scheduler in batches: at most one call in flight per task, the
// next batch gathering meanwhile. A slow scheduler makes batches larger, not calls pile
// up; a failed call keeps its results for the next one. The trusted source's results carry
// the piece digests every other peer verifies against, so they are never dropped.
//
// Batches go out on a beat common to every task of this process (multiples of the delay,
// or of the pace a saturated supernode asks for, from a random phase per process): the
// reports of all tasks leave in the same turn of the event loop, and the scheduler client
// sends them as one call.

import type { PieceResult, ReportPiecesRequest } from '@naiad/proto'

import type { SchedulerClient } from '../scheduler/client.ts'

/** Results kept while the scheduler cannot take them (an untrusted peer's are only hints). */
const MAX_KEPT = 4096
/** Where this process's beat falls (so that daemons do not all report at the same moment). */
const PHASE_MS = Math.floor(Math.random() * 60_000)

export interface ReportBatcherOptions {
  taskId: string
  /** Gathering time before a batch goes out, at most (the beat); longer while the supernode asks for a pace. */
  delayMs: number
  timeoutMs: number
  /** This peer's results carry digests others depend on. */
  trusted: () => boolean
}

export class ReportBatcher {
  private pending: PieceResult[] = []
  private timer: NodeJS.Timeout | undefined
  private inflight: Promise<void> | undefined
  private readonly scheduler: SchedulerClient
  private readonly options: ReportBatcherOptions

  constructor(scheduler: SchedulerClient, options: ReportBatcherOptions) {
    this.scheduler = scheduler
    this.options = options
  }

  get size(): number {
    return this.pending.length
  }

  add(result: PieceResult): void {
    this.pending.push(result)
    this.schedule()
  }

  /** The next beat: a multiple of the delay (or of the supernode's pace, when longer). */
  private schedule(): void {
    if (this.timer !== undefined || this.inflight !== undefined) return
    const beat = Math.max(1, this.options.delayMs, this.scheduler.paceMs ?? 0)
    this.timer = setTimeout(() => {
      this.timer = undefined
      void this.flush({}).catch(() => {})
    }, beat - ((Date.now() + PHASE_MS) % beat))
  }

  /**
   * Sends what is pending now (with `extra` task fields: metadata, a final state). Waits for
   * a call in flight first, so reports reach the scheduler in order. Rejects when the
   * scheduler could not take it; the results stay pending.
   */
  async flush(extra: Partial<ReportPiecesRequest>): Promise<void> {
    if (this.timer !== undefined) {
      clearTimeout(this.timer)
      this.timer = undefined
    }
    while (this.inflight !== undefined) await this.inflight.catch(() => {})
    const results = this.pending.splice(0)
    if (results.length === 0 && Object.keys(extra).length === 0) return
    if (!this.scheduler.available) {
      this.keep(results)
      return
    }
    const call = this.scheduler.reportPieces({ taskId: this.options.taskId, results, ...extra }, AbortSignal.timeout(this.options.timeoutMs))
    this.inflight = call
    try {
      await call
    } catch (err) {
      this.keep(results)
      throw err
    } finally {
      this.inflight = undefined
      // Results that came in while the call ran go out next.
      if (this.pending.length > 0) this.schedule()
    }
  }

  private keep(results: PieceResult[]): void {
    this.pending.unshift(...results)
    if (!this.options.trusted() && this.pending.length > MAX_KEPT) this.pending.splice(0, this.pending.length - MAX_KEPT)
  }

  close(): void {
    if (this.timer !== undefined) clearTimeout(this.timer)
    this.timer = undefined
  }
}
