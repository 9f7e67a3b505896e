// When a download gives up on its parents. Every parent the scheduler names failing to answer
// sends it to the origin at once; a parent that failed once and is named no more (the dead
// owner's seed, just after the task moved to a new owner whose seed has nothing yet) is not
// that: the download waits for the new parents, up to its stall timeout.

import { mkdtemp, rm } from 'node:fs/promises'
import { subscribe, unsubscribe } from 'node:diagnostics_channel'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import pino from 'pino'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { EVENTS, type GetParentsResponse, type Parent, type TaskInfo } from '@naiad/proto'
import { makeBlob, TestOrigin } from '@naiad/testkit'

import { createPeerEngine, DOWNLOAD_DEFAULTS, ORIGIN_DEFAULTS, type PeerEngine, type SchedulerClient } from '../src/index.ts'

const PIECE = 1024 * 1024
const PIECES = 3

/** A parent holding every piece at a port nothing listens on (port 1: refused at once). */
const DEAD_SEED: Parent = {
  id: 'dead-seed', multiaddrs: ['/ip4/127.0.0.1/tcp/1'], bitmap: new Uint8Array([(1 << PIECES) - 1]), score: 1, isSeed: true, dataPort: 1, dataTransport: 'tcp'
}

/** A scheduler that names `parents(pollNumber)` at each poll; the task is laid out and has a source elsewhere. */
function scheduler(parents: (poll: number) => Parent[]): SchedulerClient & { polls: number } {
  const task = (id: string, url: string): TaskInfo => ({
    id, url, state: 'running', contentLength: PIECE * PIECES, pieceSize: PIECE, pieceCount: PIECES, pieces: [], sha256: new Uint8Array(0),
    error: undefined, backToSource: false, grant: new Uint8Array(0), sourcePeer: DEAD_SEED.id, digestEpoch: 0, piecesFrom: 0
  })
  const urls = new Map<string, string>()
  const s = {
    available: true,
    polls: 0,
    announceHost: async () => {},
    registerTask: async (req: { taskId: string; url: string }): Promise<TaskInfo> => {
      urls.set(req.taskId, req.url)
      return task(req.taskId, req.url)
    },
    reportPieces: async () => {},
    getParents: async (taskId: string): Promise<GetParentsResponse> => {
      s.polls++
      return { task: task(taskId, urls.get(taskId) ?? ''), parents: parents(s.polls), grant: new Uint8Array(0) }
    },
    leaveTask: async () => {},
    leaveHost: async () => {}
  }
  return s
}

describe('a download whose parents cannot be reached', () => {
  let origin: TestOrigin
  let dir: string
  const engines: PeerEngine[] = []
  const reasons: string[] = []
  const onBackToSource = (m: unknown): void => { reasons.push((m as { reason: string }).reason) }

  beforeAll(async () => {
    origin = await new TestOrigin().start()
    dir = await mkdtemp(join(tmpdir(), 'naiad-unreachable-'))
    subscribe(EVENTS.backToSource, onBackToSource)
  })
  afterAll(async () => {
    unsubscribe(EVENTS.backToSource, onBackToSource)
    for (const e of engines) await e.stop()
    await origin.stop()
    await rm(dir, { recursive: true, force: true })
  })

  async function pull(s: SchedulerClient, name: string, stallTimeoutMs: number): Promise<{ fromOrigin: number }> {
    origin.files.set(`/${name}`, { data: makeBlob(PIECE * PIECES, name) })
    const engine = await createPeerEngine({
      dataDir: join(dir, name), logger: pino({ level: 'silent' }), p2pListen: ['/ip4/127.0.0.1/tcp/0'], cacheQuota: 64 * 2 ** 20, uploadSlots: 4,
      download: { ...DOWNLOAD_DEFAULTS, stallTimeoutMs, refreshMs: 50 }, origin: ORIGIN_DEFAULTS, data: { host: '127.0.0.1', port: 0, transport: 'tcp' }
    }, { scheduler: s })
    engines.push(engine)
    reasons.length = 0
    return engine.tasks.download({ url: `${origin.url}/${name}`, headers: {} })
  }

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
