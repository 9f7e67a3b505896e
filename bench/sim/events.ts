// The simulation's clock: a binary heap of timed callbacks. Ties run in the order they
// were scheduled, so a run is a pure function of its inputs and its random seed.

interface Entry {
  t: number
  seq: number
  fn: () => void
}

export class Clock {
  now = 0
  /** Events run so far (the cost of a run). */
  ran = 0
  private heap: Entry[] = []
  private seq = 0

  at(t: number, fn: () => void): void {
    const e: Entry = { t: Math.max(t, this.now), seq: this.seq++, fn }
    const h = this.heap
    h.push(e)
    let i = h.length - 1
    while (i > 0) {
      const p = (i - 1) >> 1
      if (!before(h[i], h[p])) break
      ;[h[i], h[p]] = [h[p], h[i]]
      i = p
    }
  }

  after(dt: number, fn: () => void): void {
    this.at(this.now + dt, fn)
  }

  /** Runs events until none is left, `until` says stop, or time passes `limit`. */
  run(limit: number, until: () => boolean = () => false): void {
    const h = this.heap
    while (h.length > 0 && !until()) {
      const top = h[0]
      if (top.t > limit) break
      const last = h.pop()!
      if (h.length > 0) {
        h[0] = last
        let i = 0
        for (;;) {
          const l = 2 * i + 1
          const r = l + 1
          let m = i
          if (l < h.length && before(h[l], h[m])) m = l
          if (r < h.length && before(h[r], h[m])) m = r
          if (m === i) break
          ;[h[i], h[m]] = [h[m], h[i]]
          i = m
        }
      }
      this.now = top.t
      this.ran++
      top.fn()
    }
  }
}

function before(a: Entry, b: Entry): boolean {
  return a.t < b.t || (a.t === b.t && a.seq < b.seq)
}
