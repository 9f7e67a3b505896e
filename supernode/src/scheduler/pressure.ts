// The scheduler's saturation signal. A supernode's calls all run on one event loop; when
// daemons ask more of it than it can do, every call waits longer in the sockets, and a
// daemon whose calls time out three times in a row takes the supernode for dead and goes to
// the origin: the worst answer to a busy supernode. So the gauge watches the event loop
// (its utilisation and how late a timer fires) and turns it into a pace, sent with every
// answer: "leave at least this long between one task's calls". Daemons report less often,
// in larger batches, and poll for parents less often; the load falls to what the supernode
// can do instead of piling up. When the loop lags badly even so, get_parents calls (the ones
// a daemon can do without for a while: it keeps the parents it has) are answered at once
// with SN_ERR_BUSY instead of being computed.

import { performance, type EventLoopUtilization } from 'node:perf_hooks'

export interface PressureOptions {
  /** How often the event loop is sampled. */
  sampleMs: number
  /**
   * Least time between two changes of the pace. A change shows only once daemons have
   * heard of it, at their next call, up to one pace later: the pace changes at most once a
   * pace, so that it does not run past its mark.
   */
  adjustMs: number
  /** Utilisation (0..1, averaged since the last change) the pace aims at; above `high` it grows, below `low` it shrinks. */
  target: number
  high: number
  low: number
  /** Timer lag (smoothed) above which the pace grows whatever the utilisation. */
  lagHighMs: number
  /** Pace the first step of pressure sets, and the most it grows to. */
  minPaceMs: number
  maxPaceMs: number
  /** Lag (smoothed) above which get_parents is put off (SN_ERR_BUSY), while the loop's utilisation is above `low`. */
  busyLagMs: number
}

export const PRESSURE_DEFAULTS: PressureOptions = {
  sampleMs: 100,
  adjustMs: 500,
  // Aimed at 0.75 (0.6-0.85) before December 8. At 10,000 peers (scheduler-scale) the loop
  // then ran 75 % busy, each major GC's marking steps on it left it 140-350 ms late, and the
  // get-parents p99 over two minutes was 116-152 ms. At 0.6 the pace is longer (1.7-2.4 s
  // against 1.0-1.4), a batch carries more results, the same reports cost a fifth less CPU,
  // and the p99 was 21-80 ms (under 50 in 5 runs of 7), every report taken. Lower still
  // (0.5) cut it further, but the rollout simulation took 19 % longer (0.6: 5 %), and a
  // saturated loop's step (1 / target) would equal the doubling that tells a queue of calls
  // apart. bench/README.md.
  target: 0.6,
  high: 0.7,
  low: 0.5,
  lagHighMs: 100,
  minPaceMs: 250,
  // 5 s carried no start of 10,000 daemons within a minute over three supernodes in the
  // rollout simulation: the loop owning two of four layers stayed saturated at 5 s, put
  // off 200,000 polls and sent most downloads to the registry; at 15 s it carried the start
  // (bench/README.md, sim/). The pace only rises while the loop is saturated.
  maxPaceMs: 15_000,
  busyLagMs: 500
}

/** What the service asks of the gauge; tests hand it a fixed one. */
export interface Pressure {
  /** Least time between one task's calls that daemons should leave now, ms; 0: no limit. */
  readonly paceMs: number
  /** Put off calls that can wait (get_parents). */
  busy(): boolean
}

export class PressureGauge implements Pressure {
  paceMs = 0
  /** Smoothed event-loop utilisation, 0..1. */
  utilization = 0
  /** Smoothed lag of a timer, ms. */
  lagMs = 0
  /** Calls put off since start. */
  deferred = 0

  private readonly options: PressureOptions
  private timer: NodeJS.Timeout | undefined
  private last: EventLoopUtilization | undefined
  private expected = 0
  /** Utilisation summed over the samples since the pace last changed, and their time. */
  private windowSum = 0
  private windowMs = 0
  /** After a step down: time left until (most) daemons have heard of it (see sample()). */
  private holdMs = 0

  constructor(options: Partial<PressureOptions> = {}) {
    this.options = { ...PRESSURE_DEFAULTS, ...options }
  }

  start(): void {
    if (this.timer !== undefined) return
    this.last = performance.eventLoopUtilization()
    this.expected = performance.now() + this.options.sampleMs
    this.timer = setInterval(() => {
      const now = performance.now()
      const elu = performance.eventLoopUtilization(this.last)
      this.last = performance.eventLoopUtilization()
      const lag = Math.max(0, now - this.expected)
      this.expected = now + this.options.sampleMs
      this.sample(elu.utilization, lag)
    }, this.options.sampleMs)
    this.timer.unref()
  }

  stop(): void {
    if (this.timer !== undefined) clearInterval(this.timer)
    this.timer = undefined
  }

  busy(): boolean {
    // As with the pace: a late timer over a mostly idle loop means other processes hold the
    // CPU, and putting off get_parents then only starves daemons that have no parents yet (a
    // shared host saw hundreds of SN_ERR_BUSY answers a second for that alone).
    return this.lagMs >= this.options.busyLagMs && this.utilization > this.options.low
  }

  /** One sample of the loop: its utilisation over the last interval and how late the timer fired. */
  sample(utilization: number, lagMs: number): void {
    const o = this.options
    this.utilization = this.utilization * 0.7 + utilization * 0.3
    this.lagMs = this.lagMs * 0.7 + lagMs * 0.3
    // A daemon hears of a new pace in the answer to its next call, which it makes one old
    // pace after its last (stretched by its share of the spread, at most half): for that
    // long after a step down, the loop still sees the calls of the higher pace, and a window
    // closed then measures the load that was stepped away from. Measured that way, a pace
    // of 961 ms fell to 480 and, half a second later, to 296 (scheduler-scale at 10,000
    // peers), and the loop then ran 95 % busy while the pace climbed back in 1.2x steps.
    // So the next step down waits until the old pace has passed (by then most daemons have
    // heard) and measures only what came after; a step up can come at any time.
    if (this.holdMs > 0) {
      this.holdMs -= o.sampleMs
      if (this.holdMs <= 0) {
        this.windowSum = 0
        this.windowMs = 0
      }
    }
    this.windowSum += utilization * o.sampleMs
    this.windowMs += o.sampleMs
    if (this.windowMs < Math.max(o.adjustMs, this.paceMs)) return
    const u = this.windowSum / this.windowMs
    // Daemons' calls fall in proportion to the pace, and the loop's work with them: the pace
    // moves by the ratio of the utilisation to its target (at most doubling; down to a
    // quarter, as a step down is measured only once it has taken effect).
    // A large lag raises it too, but only while the loop is busy: a late timer over a mostly
    // idle loop means other processes hold the CPU, and slowing the daemons' polls would only
    // slow their downloads (on a shared host the pace sat at its ceiling for that alone).
    // Utilisation tops out at 1 and so cannot tell a loop 30 % over its capacity from one three
    // times over; a lag past lagHighMs while busy is calls queueing, and the pace then doubles.
    // At 1.33× a step a saturated loop took 8 s to reach a 2 s pace, and the calls of those
    // seconds waited for every daemon's (scheduler-scale: the worst seconds were the first).
    if (u > o.high || (this.lagMs > o.lagHighMs && u > o.low)) {
      const step = this.lagMs > o.lagHighMs ? 2 : clamp(u / o.target, 1.2, 2)
      this.paceMs = this.paceMs === 0 ? o.minPaceMs : Math.min(o.maxPaceMs, Math.round(this.paceMs * step))
      this.holdMs = 0
    } else if (u < o.low && this.paceMs > 0 && this.holdMs <= 0) {
      const before = this.paceMs
      const next = before * clamp(u / o.target, 0.25, 0.9)
      this.paceMs = next < o.minPaceMs * 0.75 ? 0 : Math.round(next)
      this.holdMs = before
    } else if (this.holdMs > 0) {
      // Still within the hold: keep counting, so that a loop that saturates meanwhile is
      // seen at once.
      return
    }
    this.windowSum = 0
    this.windowMs = 0
  }
}

function clamp(x: number, lo: number, hi: number): number {
  return Math.min(hi, Math.max(lo, x))
}
