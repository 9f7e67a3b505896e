// The daemon's announcements: after a failed one the next comes within a fraction of a
// second, backing off to the keep-alive interval, and a supernode the scheduler client
// marked down between two announcements is probed again at once, not at the next interval.
// Fake timers: the schedule is logic, and must not depend on how loaded the machine is.

import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'

import { KEEPALIVE_RETRY_MIN_MS, PACED_INTERVALS } from '@naiad/peer'

import { KeepAlive } from '../src/admission/keepalive.ts'

const INTERVAL_MS = 60_000

describe('keep-alive announcements', () => {
  beforeEach(() => { vi.useFakeTimers() })
  afterEach(() => { vi.useRealTimers() })

  it('tries again soon after a failed announcement, backing off, and keeps the interval once it succeeds', async () => {
    const outcomes = [false, false, false, true]
    const at: number[] = []
    const start = Date.now()
    const k = new KeepAlive({ announce: async () => { at.push(Date.now() - start); return outcomes.shift() ?? true }, available: () => true, intervalMs: INTERVAL_MS })
    k.start(false) // the first announcement, at start, failed
    await vi.advanceTimersByTimeAsync(20 * KEEPALIVE_RETRY_MIN_MS)
    // 250 ms after the failure at start, then 500, 1000 and 2000 ms after each failure: the
    // fourth, taken, within 4 s (not after a minute's interval).
    expect(at).toEqual([1, 3, 7, 15].map((n) => n * KEEPALIVE_RETRY_MIN_MS))
    await vi.advanceTimersByTimeAsync(INTERVAL_MS - 6 * KEEPALIVE_RETRY_MIN_MS)
    expect(at.length).toBe(4)
    await vi.advanceTimersByTimeAsync(2 * KEEPALIVE_RETRY_MIN_MS)
    expect(at.length).toBe(5)
    k.stop()
  })

  it('stretches the interval to the pace the supernode asks for, and back', async () => {
    let pace = 7_500
    const at: number[] = []
    const start = Date.now()
    const k = new KeepAlive({ announce: async () => { at.push(Date.now() - start); return true }, available: () => true, intervalMs: 5_000, paceMs: () => pace })
    k.start(true)
    await vi.advanceTimersByTimeAsync(16_000)
    expect(at).toEqual([7_500, 15_000])
    pace = 0
    await vi.advanceTimersByTimeAsync(10_000)
    // 22.5 s (the pace set at 15 s), then back to the 5 s interval.
    expect(at).toEqual([7_500, 15_000, 22_500])
    // A pace beyond PACED_INTERVALS intervals stretches it no further (the supernode's host TTL).
    pace = 60_000
    await vi.advanceTimersByTimeAsync(40_000)
    expect(at.slice(3)).toEqual([27_500, 27_500 + PACED_INTERVALS * 5_000, 27_500 + 2 * PACED_INTERVALS * 5_000])
    k.stop()
  })

  it('probes a supernode marked down between two announcements within the retry pace', async () => {
    let available = true
    let calls = 0
    const k = new KeepAlive({ announce: async () => { calls++; available = true; return true }, available: () => available, intervalMs: INTERVAL_MS })
    k.start(true)
    await vi.advanceTimersByTimeAsync(5_000)
    expect(calls).toBe(0)
    available = false // a download's call marked it down
    await vi.advanceTimersByTimeAsync(2 * KEEPALIVE_RETRY_MIN_MS)
    expect(calls).toBe(1)
    expect(available).toBe(true)
    k.stop()
  })
})
