// The simulation's clock: a binary heap of timed callbacks. Ties run in the order they
// were scheduled, so a run is a pure function of its inputs and its random seed.
//
// A timer can be cancelled or moved in place. A 10,000-daemon run re-times thousands of flows
// at every change of a busy link and answers most calls before their timeout: leaving the
// stale entries in the heap (to fire and do nothing) made it hold millions of them, and most
// of the run's time went to sifting them. A moved timer takes a new sequence number, as a
// newly scheduled one would, so the order of the events that do something is unchanged.

export interface Timer {
  t: number
  seq: number
  fn: () => void
  /** Its place in the heap; -1 when it is not queued. */
  i: number
}

export class Clock {
  now = 0
  /** Events run so far (the cost of a run). */
  ran = 0
  private heap: Timer[] = []
  private seq = 0
  /** The current run's limit; undefined outside a run, when the times of cancelled timers wait in `early`. */
  private limit: number | undefined
  private early: number[] = []
  /**
   * The latest time, up to the run's limit, of a timer cancelled or moved. A run that ends at
   * its limit leaves the clock where the last event at or before the limit left it; a stale
   * entry would have moved it there too, so the clock ends where it did when they were kept.
   */
  private deadT = 0

  at(t: number, fn: () => void): Timer {
    const e: Timer = { t: Math.max(t, this.now), seq: this.seq++, fn, i: this.heap.length }
    this.heap.push(e)
    this.up(e.i)
    return e
  }

  after(dt: number, fn: () => void): Timer {
    return this.at(this.now + dt, fn)
  }

  /** Takes a timer off the queue (nothing if it ran or was cancelled). */
  cancel(e: Timer): void {
    if (e.i < 0) return
    this.dead(e.t)
    const h = this.heap
    const i = e.i
    const last = h.pop()!
    e.i = -1
    if (last === e) return
    h[i] = last
    last.i = i
    this.down(i)
    this.up(last.i)
  }

  /** Sets a timer to run at `t` as if cancelled and scheduled again now; queues it if it is not. */
  move(e: Timer, t: number): void {
    if (e.i < 0) {
      e.t = Math.max(t, this.now)
      e.seq = this.seq++
      e.i = this.heap.length
      this.heap.push(e)
      this.up(e.i)
      return
    }
    this.dead(e.t)
    const was = e.t
    e.t = Math.max(t, this.now)
    e.seq = this.seq++
    // A later seq can only push it down; an earlier time pulls it up.
    if (e.t < was) this.up(e.i)
    else this.down(e.i)
  }

  /** Runs events until none is left, `until` says stop, or time passes `limit`. */
  run(limit: number, until: () => boolean = () => false): void {
    const h = this.heap
    this.limit = limit
    for (const t of this.early) this.dead(t)
    this.early = []
    let stopped = false
    while (h.length > 0) {
      if (until()) {
        stopped = true
        break
      }
      const top = h[0]
      if (top.t > limit) break
      const last = h.pop()!
      top.i = -1
      if (h.length > 0) {
        h[0] = last
        last.i = 0
        this.down(0)
      }
      this.now = top.t
      this.ran++
      top.fn()
    }
    if (!stopped && this.deadT > this.now) this.now = this.deadT
    this.limit = undefined
  }

  private dead(t: number): void {
    if (this.limit === undefined) this.early.push(t)
    else if (t <= this.limit && t > this.deadT) this.deadT = t
  }

  private up(i: number): void {
    const h = this.heap
    const e = h[i]
    while (i > 0) {
      const p = (i - 1) >> 1
      const q = h[p]
      if (!before(e, q)) break
      h[i] = q
      q.i = i
      i = p
    }
    h[i] = e
    e.i = i
  }

  private down(i: number): void {
    const h = this.heap
    const n = h.length
    const e = h[i]
    for (;;) {
      const l = 2 * i + 1
      if (l >= n) break
      const r = l + 1
      const m = r < n && before(h[r], h[l]) ? r : l
      const c = h[m]
      if (!before(c, e)) break
      h[i] = c
      c.i = i
      i = m
    }
    h[i] = e
    e.i = i
  }
}

function before(a: Timer, b: Timer): boolean {
  return a.t < b.t || (a.t === b.t && a.seq < b.seq)
}
