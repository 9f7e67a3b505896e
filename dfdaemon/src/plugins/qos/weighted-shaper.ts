// Bandwidth shared by weight among classes: start-time fair queueing over one token bucket.
// Each waiting transfer gets a virtual start tag, max(virtual time, its class's last finish
// tag), and a finish tag start + bytes / weight; the waiter with the smallest start tag goes
// next whenever the bucket has tokens. Classes that keep waiting get bytes in proportion to
// their weights; a class with nothing waiting claims nothing, so its share goes to the
// others (work-conserving), and it cannot bank credit while idle.

import type { Clock } from './clock.ts'
import { TokenBucket } from './token-bucket.ts'

interface Waiter {
  cls: string
  bytes: number
  start: number
  resolve: () => void
  reject: (err: unknown) => void
  signal: AbortSignal | undefined
  onAbort: () => void
}

export interface WeightedShaperOptions {
  /** Bytes a second; 0 or less: unlimited (every acquire passes at once). */
  rate: number
  /** Bytes the bucket holds when idle; defaults to a quarter second at `rate`, at least 64 KiB. */
  burst?: number
  /** Weight per class; the order breaks ties (first wins). Unknown classes weigh 1. */
  weights: Record<string, number>
}

export class WeightedShaper {
  readonly rate: number
  private readonly bucket: TokenBucket | undefined
  private readonly weights: Record<string, number>
  private readonly order: string[]
  private readonly queues = new Map<string, Waiter[]>()
  private readonly lastFinish = new Map<string, number>()
  /** Bytes let through per class. */
  readonly served = new Map<string, number>()
  private vtime = 0
  private timer: unknown
  private closed: Error | undefined
  private readonly clock: Clock

  constructor(options: WeightedShaperOptions, clock: Clock) {
    this.rate = options.rate
    this.clock = clock
    this.weights = options.weights
    this.order = Object.keys(options.weights)
    this.bucket = options.rate > 0 ? new TokenBucket(options.rate, options.burst ?? Math.max(64 * 1024, options.rate / 4), clock) : undefined
  }

  /** Bytes of each class waiting now. */
  waiting(cls: string): number {
    return (this.queues.get(cls) ?? []).reduce((n, w) => n + w.bytes, 0)
  }

  /** Resolves once `bytes` of class `cls` may move; rejects with the signal's reason on abort. */
  acquire(bytes: number, cls: string, signal?: AbortSignal): Promise<void> {
    if (this.closed !== undefined) return Promise.reject(this.closed)
    if (this.bucket === undefined || bytes <= 0) {
      this.served.set(cls, (this.served.get(cls) ?? 0) + Math.max(0, bytes))
      return Promise.resolve()
    }
    if (signal?.aborted === true) return Promise.reject(signal.reason)
    const weight = this.weights[cls] ?? 1
    const start = Math.max(this.vtime, this.lastFinish.get(cls) ?? 0)
    this.lastFinish.set(cls, start + bytes / weight)
    return new Promise<void>((resolve, reject) => {
      const w: Waiter = { cls, bytes, start, resolve, reject, signal, onAbort: () => {} }
      w.onAbort = () => {
        const q = this.queues.get(cls)
        const i = q?.indexOf(w) ?? -1
        if (i >= 0) q!.splice(i, 1)
        reject(signal!.reason)
        this.pump()
      }
      signal?.addEventListener('abort', w.onAbort, { once: true })
      let q = this.queues.get(cls)
      if (q === undefined) {
        q = []
        this.queues.set(cls, q)
      }
      q.push(w)
      this.pump()
    })
  }

  private next(): Waiter | undefined {
    let best: Waiter | undefined
    const classes = [...this.order, ...[...this.queues.keys()].filter((c) => !this.order.includes(c))]
    for (const cls of classes) {
      const head = this.queues.get(cls)?.[0]
      if (head !== undefined && (best === undefined || head.start < best.start)) best = head
    }
    return best
  }

  private pump(): void {
    if (this.timer !== undefined) return
    const bucket = this.bucket!
    for (;;) {
      const w = this.next()
      if (w === undefined) return
      const wait = bucket.waitMs(w.bytes)
      if (wait > 0) {
        this.timer = this.clock.setTimeout(() => {
          this.timer = undefined
          this.pump()
        }, wait)
        return
      }
      bucket.take(w.bytes)
      this.vtime = w.start
      this.queues.get(w.cls)!.shift()
      w.signal?.removeEventListener('abort', w.onAbort)
      this.served.set(w.cls, (this.served.get(w.cls) ?? 0) + w.bytes)
      w.resolve()
    }
  }

  /** Rejects every waiter; later acquires fail at once. */
  close(err: Error): void {
    this.closed = err
    if (this.timer !== undefined) this.clock.clearTimeout(this.timer)
    this.timer = undefined
    for (const q of this.queues.values()) {
      for (const w of q.splice(0)) {
        w.signal?.removeEventListener('abort', w.onAbort)
        w.reject(err)
      }
    }
  }
}
