// A token bucket: `rate` tokens a second up to `burst`. Requests take one token each
// (request-rate limits); byte limits take one token per byte and may go into debt, so a
// piece larger than the burst still passes and the debt holds the next ones back.

import type { Clock } from './clock.ts'

export class TokenBucket {
  readonly rate: number
  readonly burst: number
  private tokens: number
  private last: number
  private readonly clock: Clock

  constructor(rate: number, burst: number, clock: Clock) {
    this.rate = rate
    this.burst = burst
    this.clock = clock
    this.tokens = burst
    this.last = clock.now()
  }

  private refill(): void {
    const now = this.clock.now()
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) * this.rate) / 1000)
    this.last = now
  }

  /** Takes `n` tokens if they are there now. */
  tryTake(n = 1): boolean {
    this.refill()
    if (this.tokens < n) return false
    this.tokens -= n
    return true
  }

  /** Milliseconds until `n` tokens (at most the burst) are there; 0 when they are now. */
  waitMs(n = 1): number {
    this.refill()
    const need = Math.min(n, this.burst)
    return this.tokens >= need ? 0 : Math.ceil(((need - this.tokens) * 1000) / this.rate)
  }

  /** Takes `n` tokens unconditionally, going into debt if need be. */
  take(n: number): void {
    this.refill()
    this.tokens -= n
  }

  /** Tokens there now (negative while in debt). */
  level(): number {
    this.refill()
    return this.tokens
  }
}
