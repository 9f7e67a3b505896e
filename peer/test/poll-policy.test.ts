// The swarm loop's poll and give-up rules on their own, driven by a fake clock: how fast a
// download asks the scheduler again (starving or not, alone with the source or in a swarm),
// how idle polls back off, what counts as progress, and when it goes to the origin.

import { describe, expect, it } from 'vitest'

import { BUSY_POLL_MIN_MS, giveUpReason, IDLE_POLL_MIN_MS, PollPolicy, PUT_OFF_MAX_MS, schedulerMayReturn, STALL_PACES, stallAfterMs, type IdleSwarm } from '../src/download/poll-policy.ts'

const OPTIONS = { refreshMs: 1000, stallTimeoutMs: 10_000 }
const T0 = 1_000_000

describe('poll policy', () => {
  it('asks the scheduler at the first turn, then once per poll interval unless asked to', () => {
    const p = new PollPolicy(OPTIONS, T0, 0, 0)
    expect(p.refreshDue(T0, 0, false)).toBe(true)
    expect(p.refreshDue(T0 + IDLE_POLL_MIN_MS - 1, 0, false)).toBe(false)
    expect(p.refreshDue(T0 + 1, 0, true)).toBe(true)
    expect(p.refreshDue(T0 + 1 + IDLE_POLL_MIN_MS, 0, false)).toBe(true)
  })

  it('polls every refreshMs while every slot is busy', () => {
    const p = new PollPolicy(OPTIONS, T0, 0, 0)
    p.planned({ started: 8, room: false, peersServe: true }, true)
    expect(p.pollMs(8)).toBe(1000)
    expect(p.pollMs(0)).toBe(1000)
  })

  it('while starving polls fast alone with the source, at refreshMs in a swarm, fastest with nothing in flight', () => {
    const p = new PollPolicy(OPTIONS, T0, 0, 0)
    p.planned({ started: 2, room: true, peersServe: false }, true)
    expect(p.pollMs(2)).toBe(BUSY_POLL_MIN_MS)
    expect(p.pollMs(0)).toBe(IDLE_POLL_MIN_MS)
    p.planned({ started: 2, room: true, peersServe: true }, true)
    expect(p.pollMs(2)).toBe(1000)
    expect(p.pollMs(0)).toBe(IDLE_POLL_MIN_MS)
  })

  it('backs idle polls off to refreshMs while they bring nothing, and back to the fastest when one does', () => {
    const p = new PollPolicy(OPTIONS, T0, 0, 0)
    const waits: number[] = []
    for (let i = 0; i < 8; i++) {
      p.planned({ started: 0, room: true, peersServe: false }, true)
      waits.push(p.pollMs(0))
    }
    expect(waits).toEqual([40, 80, 160, 320, 640, 1000, 1000, 1000])
    // A turn that did not ask the scheduler says nothing about what polls bring.
    p.planned({ started: 3, room: true, peersServe: false }, false)
    expect(p.pollMs(0)).toBe(1000)
    p.planned({ started: 3, room: true, peersServe: false }, true)
    expect(p.pollMs(0)).toBe(IDLE_POLL_MIN_MS)
  })

  it('counts stored bytes and published digests as progress, and stalls after stallTimeoutMs of neither', () => {
    const p = new PollPolicy(OPTIONS, T0, 100, 4)
    p.progress(T0 + 5000, 100, 4)
    expect(p.stalled(T0 + 10_000)).toBe(false)
    expect(p.stalled(T0 + 10_001)).toBe(true)
    // The source published digests (a slow origin behind it): not stalled.
    p.progress(T0 + 9000, 100, 5)
    expect(p.stalled(T0 + 19_000)).toBe(false)
    p.progress(T0 + 15_000, 200, 5)
    expect(p.stalled(T0 + 25_000)).toBe(false)
    expect(p.stalled(T0 + 25_001)).toBe(true)
  })

  it('waits at least STALL_PACES of the supernode\'s pace before it counts as stalled', () => {
    const p = new PollPolicy(OPTIONS, T0, 0, 0)
    // Unpaced, and paced below half the stall timeout: the stall timeout holds.
    expect(p.stalled(T0 + 10_001, 0)).toBe(true)
    expect(p.stalled(T0 + 10_001, 4_000)).toBe(true)
    // Paced at 7.5 s (the 5 s ceiling stretched by the spread): one poll after 7.5 s, the next
    // after 15 s; the download waits for both.
    expect(STALL_PACES).toBe(2)
    expect(stallAfterMs(10_000, 7_500)).toBe(15_000)
    expect(p.stalled(T0 + 15_000, 7_500)).toBe(false)
    expect(p.stalled(T0 + 15_001, 7_500)).toBe(true)
  })

  it('does not count the time a supernode puts its polls off, up to PUT_OFF_MAX_MS after the last progress', () => {
    const p = new PollPolicy(OPTIONS, T0, 0, 0)
    // Put off at 8 s: the stall clock counts from there.
    p.putOff(T0 + 8_000)
    expect(p.stalled(T0 + 18_000)).toBe(false)
    expect(p.stalled(T0 + 18_001)).toBe(true)
    // Put off again and again: waited out until PUT_OFF_MAX_MS after the last progress, then
    // the stall timeout runs from there.
    expect(PUT_OFF_MAX_MS).toBe(60_000)
    for (let t = 16_000; t <= 120_000; t += 8_000) p.putOff(T0 + t)
    expect(p.stalled(T0 + 70_000)).toBe(false)
    expect(p.stalled(T0 + 70_001)).toBe(true)
    // Progress starts the allowance again.
    p.progress(T0 + 75_000, 1, 0)
    p.putOff(T0 + 130_000)
    expect(p.stalled(T0 + 140_000)).toBe(false)
    expect(p.stalled(T0 + 140_001)).toBe(true)
  })
})

describe('give-up rules', () => {
  const idle: IdleSwarm = {
    taskState: 'running', taskError: undefined, schedulerLost: false, usableParents: 0,
    unreachable: false, stalled: false, stallTimeoutMs: 10_000
  }

  it('waits while nothing says the swarm cannot help', () => {
    // No parent usable, none named yet (just after a failover): the stall timeout bounds the wait.
    expect(giveUpReason(idle)).toBeUndefined()
  })

  it('goes to the origin when the source failed, with its error', () => {
    expect(giveUpReason({ ...idle, taskState: 'failed', taskError: { code: 'DFD_ERR_ORIGIN', message: 'origin said 404' } }))
      .toBe('source failed: DFD_ERR_ORIGIN origin said 404')
    expect(giveUpReason({ ...idle, taskState: 'failed' })).toBe('source failed: unknown')
  })

  it('goes when the scheduler is lost, only once no parent can serve', () => {
    expect(giveUpReason({ ...idle, schedulerLost: true, usableParents: 1 })).toBeUndefined()
    expect(giveUpReason({ ...idle, schedulerLost: true })).toBe('scheduler lost and no parent can serve')
  })

  it('goes when every named parent is unreachable, only once none is usable', () => {
    expect(giveUpReason({ ...idle, unreachable: true, usableParents: 1 })).toBeUndefined()
    expect(giveUpReason({ ...idle, unreachable: true })).toBe('no parent is reachable')
  })

  it('goes after the stall timeout', () => {
    expect(giveUpReason({ ...idle, stalled: true, usableParents: 3 })).toBe('no parent could serve for 10000 ms')
  })

  it('waits for a scheduler that went down for a reason that may pass, for at most the stall timeout', () => {
    expect(schedulerMayReturn(T0, T0 + 9_999, 10_000)).toBe(true)
    expect(schedulerMayReturn(T0, T0 + 10_000, 10_000)).toBe(false)
    // 0 or absent: available, or gone for good (nothing listening).
    expect(schedulerMayReturn(0, T0, 10_000)).toBe(false)
    expect(schedulerMayReturn(undefined, T0, 10_000)).toBe(false)
  })
})
