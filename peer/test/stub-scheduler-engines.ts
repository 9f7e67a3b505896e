// Peer engines in process against a stub scheduler, for tests of when a download goes to the
// origin: a test origin, one engine per pull (each with its own data directory), the
// back-to-source reasons the pulls published, in order, and a stub scheduler of a laid-out task.

import { mkdtemp, rm } from 'node:fs/promises'
import { subscribe, unsubscribe } from 'node:diagnostics_channel'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import pino from 'pino'
import { afterAll, beforeAll } from 'vitest'
import { EVENTS, type GetParentsResponse, type Parent, type TaskInfo } from '@naiad/proto'
import { makeBlob, TestOrigin } from '@naiad/testkit'

import { createPeerEngine, DOWNLOAD_DEFAULTS, ORIGIN_DEFAULTS, type DownloadResult, type PeerEngine, type PeerTaskOptions, type SchedulerClient } from '../src/index.ts'

export interface StubSchedulerEngines {
  /** The back-to-source reasons of the last pull. */
  readonly reasons: string[]
  /** Downloads a fresh blob of `size` bytes named `name` through a new engine that asks `scheduler`. */
  pull(scheduler: SchedulerClient, name: string, size: number, download?: Partial<PeerTaskOptions>): Promise<DownloadResult>
}

/** Registers the suite's beforeAll/afterAll; call it inside a describe. */
export function stubSchedulerEngines(prefix: string): StubSchedulerEngines {
  let origin: TestOrigin
  let dir: string
  const engines: PeerEngine[] = []
  const reasons: string[] = []
  const onBackToSource = (m: unknown): void => { reasons.push((m as { reason: string }).reason) }

  beforeAll(async () => {
    origin = await new TestOrigin().start()
    dir = await mkdtemp(join(tmpdir(), `naiad-${prefix}-`))
    subscribe(EVENTS.backToSource, onBackToSource)
  })
  afterAll(async () => {
    unsubscribe(EVENTS.backToSource, onBackToSource)
    for (const e of engines) await e.stop()
    await origin?.stop()
    if (dir !== undefined) await rm(dir, { recursive: true, force: true })
  })

  return {
    reasons,
    async pull(scheduler, name, size, download = {}) {
      origin.files.set(`/${name}`, { data: makeBlob(size, name) })
      const engine = await createPeerEngine({
        dataDir: join(dir, name), logger: pino({ level: 'silent' }), p2pListen: ['/ip4/127.0.0.1/tcp/0'], cacheQuota: 64 * 2 ** 20, uploadSlots: 4,
        download: { ...DOWNLOAD_DEFAULTS, ...download }, origin: ORIGIN_DEFAULTS, data: { host: '127.0.0.1', port: 0, transport: 'tcp' }
      }, { scheduler })
      engines.push(engine)
      reasons.length = 0
      return engine.tasks.download({ url: `${origin.url}/${name}`, headers: {} })
    }
  }
}

/**
 * A scheduler whose task is laid out as `pieces` pieces of `pieceSize` bytes, with its source
 * on another peer (`sourcePeer`); each poll answers the parents `parents(pollNumber)` names,
 * or fails with what it throws.
 */
export function laidOutScheduler(pieceSize: number, pieces: number, sourcePeer: string, parents: (poll: number) => Parent[]): SchedulerClient & { polls: number } {
  const task = (id: string, url: string): TaskInfo => ({
    id, url, state: 'running', contentLength: pieceSize * pieces, pieceSize, pieceCount: pieces, pieces: [], sha256: new Uint8Array(0),
    error: undefined, backToSource: false, grant: new Uint8Array(0), sourcePeer, digestEpoch: 0, piecesFrom: 0
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
