// A download's progress on its own: bytes counted by where they came from, the stored
// prefix extended over pieces that landed out of order, the last piece servable only once
// the whole content is verified, and every change handed to listeners and waiters.

import { describe, expect, it } from 'vitest'
import type { TaskInfo } from '@naiad/proto'

import { TaskProgress } from '../src/download/task-progress.ts'
import { TaskView } from '../src/download/task-view.ts'
import type { DownloadProgress } from '../src/download/types.ts'

const MiB = 1024 * 1024

function setup(): { tally: TaskProgress; have: Set<number>; seen: DownloadProgress[] } {
  const view = new TaskView()
  view.apply({ contentLength: 10 * MiB, pieceSize: 4 * MiB, pieceCount: 3, pieces: [], sha256: new Uint8Array(0), sourcePeer: '', grant: new Uint8Array(0), state: 'running', error: undefined } as unknown as TaskInfo)
  const have = new Set<number>()
  const tally = new TaskProgress('t', view, () => have)
  const seen: DownloadProgress[] = []
  tally.listen((p) => seen.push(p))
  return { tally, have, seen }
}

describe('task progress', () => {
  it('counts bytes from peers and from the origin', () => {
    const { tally } = setup()
    tally.add('peer', 4 * MiB)
    tally.add('origin', 2 * MiB)
    expect(tally.snapshot()).toEqual({ taskId: 't', completedBytes: 6 * MiB, totalBytes: 10 * MiB, fromPeers: 4 * MiB, fromOrigin: 2 * MiB, servableBytes: 0 })
  })

  it('extends the servable prefix only over consecutive pieces, and the last only once verified', () => {
    const { tally, have } = setup()
    have.add(1)
    tally.advance()
    expect(tally.servable()).toBe(0)
    have.add(0)
    tally.advance()
    expect(tally.servable()).toBe(8 * MiB)
    have.add(2)
    tally.advance()
    expect(tally.servable()).toBe(8 * MiB)
    tally.finished = true
    expect(tally.servable()).toBe(10 * MiB)
  })

  it('hands listeners the progress at each emit and wakes waiters', async () => {
    const { tally, seen } = setup()
    const waiting = tally.changed()
    tally.add('peer', MiB)
    tally.emit()
    await waiting
    expect(seen.map((p) => p.completedBytes)).toEqual([MiB])
  })
})
