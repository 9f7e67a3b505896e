// When a download gives up on its parents. Every parent the scheduler names failing to answer
// sends it to the origin at once; a parent that failed once and is named no more (the dead
// owner's seed, just after the task moved to a new owner whose seed has nothing yet) is not
// that: the download waits for the new parents, up to its stall timeout.

import { describe, expect, it } from 'vitest'
import type { Parent } from '@naiad/proto'

import type { SchedulerClient } from '../src/index.ts'
import { laidOutScheduler, stubSchedulerEngines } from './stub-scheduler-engines.ts'

const PIECE = 1024 * 1024
const PIECES = 3

/** A parent holding every piece at a port nothing listens on (port 1: refused at once). */
const DEAD_SEED: Parent = {
  id: 'dead-seed', multiaddrs: ['/ip4/127.0.0.1/tcp/1'], bitmap: new Uint8Array([(1 << PIECES) - 1]), score: 1, isSeed: true, dataPort: 1, dataTransport: 'tcp'
}

/** A scheduler that names `parents(pollNumber)` at each poll; the task is laid out and has a source elsewhere. */
function scheduler(parents: (poll: number) => Parent[]): SchedulerClient & { polls: number } {
  return laidOutScheduler(PIECE, PIECES, DEAD_SEED.id, parents)
}

describe('a download whose parents cannot be reached', () => {
  const { reasons, pull: pullWith } = stubSchedulerEngines('unreachable')
  const pull = (s: SchedulerClient, name: string, stallTimeoutMs: number): ReturnType<typeof pullWith> => pullWith(s, name, PIECE * PIECES, { stallTimeoutMs, refreshMs: 50 })

  it('goes to the origin at once when every parent the scheduler names cannot be reached', async () => {
    // A stall timeout far beyond the test's: only the "unreachable" rule can end this download.
    const result = await pull(scheduler(() => [DEAD_SEED]), 'all-dead', 600_000)
    expect(reasons).toEqual(['no parent is reachable'])
    expect(result.fromOrigin).toBe(PIECE * PIECES)
  })

  it('waits for its stall timeout when the parent that failed is named no more and no other is yet', async () => {
    // The dead owner's seed at the first poll, then nobody (the new owner's seed starts from nothing).
    const s = scheduler((poll) => poll <= 1 ? [DEAD_SEED] : [])
    const result = await pull(s, 'moved', 1_500)
    expect(reasons).toEqual(['no parent could serve for 1500 ms'])
    expect(result.fromOrigin).toBe(PIECE * PIECES)
    expect(s.polls).toBeGreaterThan(1)
  })
})
