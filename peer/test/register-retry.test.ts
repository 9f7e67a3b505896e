// Registration against a supernode that answers late: a timed-out registerTask is asked
// again while the scheduler client still counts the supernode up, instead of sending the
// download to the origin at the first slow answer; after a few, or once the client gives
// the supernode up, the download goes to the origin. A scheduler the client marked down for
// a reason that may pass is waited for (bounded by the stall timeout) before that.

import { describe, expect, it } from 'vitest'
import { NaiadError, type TaskInfo } from '@naiad/proto'

import type { SchedulerClient } from '../src/index.ts'
import { stubSchedulerEngines } from './stub-scheduler-engines.ts'

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
  const { reasons, pull: pullWith } = stubSchedulerEngines('register')
  const pull = (scheduler: SchedulerClient, name: string): ReturnType<typeof pullWith> => pullWith(scheduler, name, SIZE, { schedulerTimeoutMs: 200 })

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

  it('waits for a scheduler marked down for a reason that may pass, and downloads as it says once it is back', async () => {
    // A loaded supernode that had not admitted this daemon yet: its client is down, and the
    // keep-alive reaches it again a moment later.
    const scheduler = Object.assign(lateScheduler(0), { available: false, unavailableSince: Date.now() })
    const back = setTimeout(() => { scheduler.available = true; scheduler.unavailableSince = 0 }, 300)
    const result = await pull(scheduler, 'down-a-moment')
    clearTimeout(back)
    expect(scheduler.registrations).toBe(1)
    expect(reasons).toEqual(['scheduler chose this peer to fetch from the origin'])
    expect(result.fromOrigin).toBe(SIZE)
  })

  it('waits for a scheduler a bounded while only: down for longer than the stall timeout, or found gone, it goes to the origin', async () => {
    const longDown = Object.assign(lateScheduler(0), { available: false, unavailableSince: Date.now() - 60_000 })
    await pull(longDown, 'down-long')
    expect(longDown.registrations).toBe(0)
    expect(reasons).toEqual(['scheduler unavailable'])
    const gone = Object.assign(lateScheduler(0), { available: false, unavailableSince: 0 })
    await pull(gone, 'gone')
    expect(gone.registrations).toBe(0)
    expect(reasons).toEqual(['scheduler unavailable'])
  })

  it('goes to the origin at once when the scheduler refuses for another reason', async () => {
    const scheduler = { ...lateScheduler(0), registerTask: async (): Promise<TaskInfo> => { throw new NaiadError('PROTO_ERR_DIAL', 'no supernode') } }
    await pull(scheduler, 'refused')
    expect(reasons).toEqual(['scheduler unavailable'])
  })
})
