// Registration against a supernode that answers late: a timed-out registerTask is asked
// again while the scheduler client still counts the supernode up, instead of sending the
// download to the origin at the first slow answer; after a few, or once the client gives
// the supernode up, the download goes to the origin.

import { mkdtemp, rm } from 'node:fs/promises'
import { subscribe, unsubscribe } from 'node:diagnostics_channel'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import pino from 'pino'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { EVENTS, NaiadError, type TaskInfo } from '@naiad/proto'
import { makeBlob, TestOrigin } from '@naiad/testkit'

import { createPeerEngine, DOWNLOAD_DEFAULTS, ORIGIN_DEFAULTS, type PeerEngine, type SchedulerClient } from '../src/index.ts'

const SIZE = 3 * 1024 * 1024

/** A scheduler whose first `late` registrations time out; later ones make this peer the task's source. */
function lateScheduler(late: number): SchedulerClient & { registrations: number } {
  const s = {
    available: true,
    registrations: 0,
    announceHost: async () => {},
    registerTask: async (req: { taskId: string; url: string }): Promise<TaskInfo> => {
      s.registrations++
      if (s.registrations <= late) throw new NaiadError('PROTO_ERR_TIMEOUT', 'the supernode answered late')
      return {
        id: req.taskId, url: req.url, state: 'running', contentLength: -1, pieceSize: 0, pieceCount: -1, pieces: [], sha256: new Uint8Array(0),
        error: undefined, backToSource: true, grant: new Uint8Array(0), sourcePeer: '', digestEpoch: 0, piecesFrom: 0
      } as TaskInfo
    },
    reportPieces: async () => {},
    getParents: async () => { throw new NaiadError('PROTO_ERR_TIMEOUT', 'not in this test') },
    leaveTask: async () => {},
    leaveHost: async () => {}
  }
  return s
}

describe('task registration with a supernode that answers late', () => {
  let origin: TestOrigin
  let dir: string
  const engines: PeerEngine[] = []
  const reasons: string[] = []
  const onBackToSource = (m: unknown): void => { reasons.push((m as { reason: string }).reason) }

  beforeAll(async () => {
    origin = await new TestOrigin().start()
    dir = await mkdtemp(join(tmpdir(), 'naiad-register-'))
    subscribe(EVENTS.backToSource, onBackToSource)
  })
  afterAll(async () => {
    unsubscribe(EVENTS.backToSource, onBackToSource)
    for (const e of engines) await e.stop()
    await origin.stop()
    await rm(dir, { recursive: true, force: true })
  })

  async function pull(scheduler: SchedulerClient, name: string): Promise<{ fromOrigin: number; sha256: string }> {
    const blob = makeBlob(SIZE, name)
    origin.files.set(`/${name}`, { data: blob })
    const engine = await createPeerEngine({
      dataDir: join(dir, name), logger: pino({ level: 'silent' }), p2pListen: ['/ip4/127.0.0.1/tcp/0'], cacheQuota: 64 * 2 ** 20, uploadSlots: 4,
      download: { ...DOWNLOAD_DEFAULTS, schedulerTimeoutMs: 200 }, origin: ORIGIN_DEFAULTS, data: { host: '127.0.0.1', port: 0, transport: 'tcp' }
    }, { scheduler })
    engines.push(engine)
    reasons.length = 0
    return engine.tasks.download({ url: `${origin.url}/${name}`, headers: {} })
  }

  it('asks again after a late answer and downloads as the scheduler says', async () => {
    const scheduler = lateScheduler(2)
    const result = await pull(scheduler, 'late-twice')
    expect(scheduler.registrations).toBe(3)
    expect(reasons).toEqual(['scheduler chose this peer to fetch from the origin'])
    expect(result.fromOrigin).toBe(SIZE)
  })

  it('goes to the origin after three late answers', async () => {
    const scheduler = lateScheduler(10)
    const result = await pull(scheduler, 'late-always')
    expect(scheduler.registrations).toBe(3)
    expect(reasons).toEqual(['scheduler unavailable'])
    expect(result.fromOrigin).toBe(SIZE)
  })

  it('goes to the origin at once when the scheduler refuses for another reason', async () => {
    const scheduler = { ...lateScheduler(0), registerTask: async (): Promise<TaskInfo> => { throw new NaiadError('PROTO_ERR_DIAL', 'no supernode') } }
    await pull(scheduler, 'refused')
    expect(reasons).toEqual(['scheduler unavailable'])
  })
})
