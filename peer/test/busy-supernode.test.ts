// A supernode that puts a download's polls off (SN_ERR_BUSY) is alive and asks for time: the
// download waits it out instead of counting the wait towards its stall timeout, while a poll
// the client itself held back (the pace since the last one has not passed) counts as before.

import { describe, expect, it } from 'vitest'
import { NaiadError } from '@naiad/proto'

import { PollNotDue } from '../src/scheduler/client.ts'
import type { SchedulerClient } from '../src/index.ts'
import { laidOutScheduler, stubSchedulerEngines } from './stub-scheduler-engines.ts'

const PIECE = 1024 * 1024
const PIECES = 2
const STALL_MS = 300

/** A scheduler whose polls fail with `busy()` while it returns an error, and name no parent after. */
function scheduler(busy: () => Error | undefined): SchedulerClient & { polls: number } {
  return laidOutScheduler(PIECE, PIECES, 'a-seed-elsewhere', () => {
    const err = busy()
    if (err !== undefined) throw err
    return []
  })
}

describe('a download whose supernode is too busy for its polls', () => {
  const { reasons, pull } = stubSchedulerEngines('busy-supernode')

  it('waits out polls the supernode puts off, and counts its stall timeout once they are answered', async () => {
    let busy = true
    let flippedWithReasons: number | undefined
    const s = scheduler(() => busy ? new NaiadError('SN_ERR_BUSY', 'the scheduler is saturated; ask again after pace_ms') : undefined)
    // Five stall timeouts of busy answers, then answers with no parent.
    setTimeout(() => {
      flippedWithReasons = reasons.length
      busy = false
    }, 5 * STALL_MS)
    const result = await pull(s, 'put-off', PIECE * PIECES, { stallTimeoutMs: STALL_MS, refreshMs: 50 })
    // Nothing had gone to the origin while the supernode put the polls off.
    expect(flippedWithReasons).toBe(0)
    expect(reasons).toEqual([`no parent could serve for ${STALL_MS} ms`])
    expect(result.fromOrigin).toBe(PIECE * PIECES)
    expect(s.polls).toBeGreaterThan(1)
  })

  it('still goes to the origin after its stall timeout when only its own pace held the polls back', async () => {
    // Held back for far longer than the test: only the stall timeout can end this download.
    const s = scheduler(() => new PollNotDue('the supernode asks for 600000 ms between polls'))
    const result = await pull(s, 'not-due', PIECE * PIECES, { stallTimeoutMs: STALL_MS, refreshMs: 50 })
    expect(reasons).toEqual([`no parent could serve for ${STALL_MS} ms`])
    expect(result.fromOrigin).toBe(PIECE * PIECES)
  })
})
