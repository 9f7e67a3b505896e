// Transfer slots handed out strictly by class: while a more urgent class waits for a slot,
// no less urgent one gets one, so a background class stops starting new pieces and its
// running ones hand their slots to the urgent class as they finish (a piece at most).

export class PrioritySlots {
  readonly max: number
  private used = 0
  /** Waiters per class, most urgent class first. */
  private readonly queues: Map<string, Array<{ grant: () => void; reject: (err: unknown) => void; signal: AbortSignal | undefined; onAbort: () => void }>>
  private closed: Error | undefined

  constructor(max: number, classes: readonly string[]) {
    this.max = max
    this.queues = new Map(classes.map((c) => [c, []]))
  }

  get inUse(): number {
    return this.used
  }

  /** Waiters of a class. */
  waiting(cls: string): number {
    return this.queues.get(cls)?.length ?? 0
  }

  /** Whether a class at least as urgent as `cls` is waiting (a lower class must then wait too). */
  private urgentWaiting(cls: string): boolean {
    for (const [c, q] of this.queues) {
      if (q.length > 0) return true
      if (c === cls) return false
    }
    return false
  }

  acquire(cls: string, signal?: AbortSignal): Promise<() => void> {
    if (this.closed !== undefined) return Promise.reject(this.closed)
    if (signal?.aborted === true) return Promise.reject(signal.reason)
    if (!this.queues.has(cls)) throw new Error(`unknown traffic class ${cls}`)
    if (this.used < this.max && !this.urgentWaiting(cls)) {
      this.used++
      return Promise.resolve(this.releaser())
    }
    return new Promise((resolve, reject) => {
      const q = this.queues.get(cls)!
      const w = {
        grant: () => {
          signal?.removeEventListener('abort', w.onAbort)
          resolve(this.releaser())
        },
        reject,
        signal,
        onAbort: () => {
          const i = q.indexOf(w)
          if (i >= 0) q.splice(i, 1)
          reject(signal!.reason)
        }
      }
      signal?.addEventListener('abort', w.onAbort, { once: true })
      q.push(w)
    })
  }

  private releaser(): () => void {
    let done = false
    return () => {
      if (done) return
      done = true
      this.used--
      this.grant()
    }
  }

  private grant(): void {
    while (this.used < this.max) {
      let w: { grant: () => void } | undefined
      for (const q of this.queues.values()) {
        w = q.shift()
        if (w !== undefined) break
      }
      if (w === undefined) return
      this.used++
      w.grant()
    }
  }

  close(err: Error): void {
    this.closed = err
    for (const q of this.queues.values()) {
      for (const w of q.splice(0)) {
        w.signal?.removeEventListener('abort', w.onAbort)
        w.reject(err)
      }
    }
  }
}
