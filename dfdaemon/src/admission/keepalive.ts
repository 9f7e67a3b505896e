// The daemon's host announcements: one each keep-alive interval (or the supernode's pace,
// when it asks for a longer one) while the supernode answers, and sooner (from
// KEEPALIVE_RETRY_MIN_MS, doubling up to the interval) after one failed or while the
// scheduler client counts the supernode down. A daemon whose first announcement failed (a
// loaded supernode that had not admitted it yet) had waited a whole interval to try again,
// and its downloads went to the origin meanwhile; now they wait (see PeerTask.register) for
// an announcement that comes within a fraction of a second.

import { KEEPALIVE_RETRY_MIN_MS, pacedKeepaliveMs } from '@naiad/peer'

export interface KeepAliveOptions {
  /** One announcement; true when the supernode took it. Must not throw. */
  announce: () => Promise<boolean>
  /** Whether the scheduler client counts the supernode up now (a call may have marked it down since the last announcement). */
  available: () => boolean
  intervalMs: number
  /**
   * The pace the supernode asks for now (0: none). The interval stretches to it: a start of
   * 10,000 daemons over three supernodes sends each 2,000 announcements a second at 5 s,
   * nearly half of what its loop can serve, and the pace could not bring that down.
   */
  paceMs?: () => number
  retryMinMs?: number
}

export class KeepAlive {
  private readonly options: KeepAliveOptions
  private readonly retryMinMs: number
  private backoff: number
  private lastAt = 0
  private nextAt = 0
  private running = false
  private timer: NodeJS.Timeout | undefined

  constructor(options: KeepAliveOptions) {
    this.options = options
    this.retryMinMs = Math.min(options.retryMinMs ?? KEEPALIVE_RETRY_MIN_MS, options.intervalMs)
    this.backoff = this.retryMinMs
  }

  /** Starts the beat after the first announcement, whose outcome `ok` is. */
  start(ok: boolean): void {
    this.settle(ok)
    // Ticks at the retry pace (reading a boolean) so that a supernode marked down between two
    // announcements is probed again within KEEPALIVE_RETRY_MIN_MS, not at the next interval.
    this.timer = setInterval(() => { this.tick() }, this.retryMinMs)
    this.timer.unref()
  }

  stop(): void {
    if (this.timer !== undefined) clearInterval(this.timer)
    this.timer = undefined
  }

  private tick(): void {
    if (this.running) return
    const now = Date.now()
    const due = now >= this.nextAt || (!this.options.available() && now - this.lastAt >= this.backoff)
    if (!due) return
    this.running = true
    this.options.announce().then((ok) => { this.settle(ok) }, () => { this.settle(false) }).finally(() => { this.running = false })
  }

  private settle(ok: boolean): void {
    const now = Date.now()
    this.lastAt = now
    if (ok) {
      this.backoff = this.retryMinMs
      this.nextAt = now + pacedKeepaliveMs(this.options.intervalMs, this.options.paceMs?.() ?? 0)
    } else {
      this.nextAt = now + this.backoff
      this.backoff = Math.min(this.backoff * 2, this.options.intervalMs)
    }
  }
}
