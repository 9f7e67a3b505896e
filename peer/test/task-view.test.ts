// What a download knows of its task, on its own: the scheduler's answers are merged (an
// unset field keeps what was known), a change of sizes is reported once so that the store
// learns them once, piece lengths and the servable prefix follow the layout.

import { describe, expect, it } from 'vitest'
import type { TaskInfo } from '@naiad/proto'

import { TaskView } from '../src/download/task-view.ts'

const MiB = 1024 * 1024

/** A scheduler answer that says nothing but what `over` sets. */
function info(over: Partial<TaskInfo> = {}): TaskInfo {
  return {
    id: 't', url: 'http://origin/blob', state: 'running', contentLength: -1, pieceSize: 0, pieceCount: -1, pieces: [], sha256: new Uint8Array(0),
    error: undefined, backToSource: false, grant: new Uint8Array(0), sourcePeer: '', digestEpoch: 0, piecesFrom: 0, ...over
  } as TaskInfo
}

describe('task view', () => {
  it('reports a change of sizes once, and keeps what an answer leaves unset', () => {
    const v = new TaskView()
    expect(v.apply(info())).toBe(false)
    expect(v.apply(info({ pieceSize: 4 * MiB }))).toBe(true)
    expect(v.apply(info({ pieceSize: 4 * MiB }))).toBe(false)
    expect(v.apply(info({ contentLength: 10 * MiB, pieceCount: 3 }))).toBe(true)
    expect(v.apply(info({ sourcePeer: 'seed', grant: new Uint8Array([1]), sha256: new Uint8Array(32).fill(5) }))).toBe(false)
    expect(v.apply(info())).toBe(false)
    expect({ contentLength: v.contentLength, pieceSize: v.pieceSize, pieceCount: v.pieceCount, sourcePeer: v.sourcePeer, grant: [...v.grant], sha: v.sourceSha256?.[0] })
      .toEqual({ contentLength: 10 * MiB, pieceSize: 4 * MiB, pieceCount: 3, sourcePeer: 'seed', grant: [1], sha: 5 })
  })

  it('gathers the published digests, and takes the task\'s state and error as they are', () => {
    const v = new TaskView()
    v.apply(info({ pieces: [{ num: 0, sha256: new Uint8Array(32).fill(1) }] } as Partial<TaskInfo>))
    v.apply(info({ pieces: [{ num: 2, sha256: new Uint8Array(32).fill(3) }], state: 'failed', error: { code: 'DFD_ERR_ORIGIN', message: '404' } } as Partial<TaskInfo>))
    expect([...v.digests.keys()].sort()).toEqual([0, 2])
    expect({ state: v.state, error: v.error }).toEqual({ state: 'failed', error: { code: 'DFD_ERR_ORIGIN', message: '404' } })
    v.apply(info())
    expect({ state: v.state, error: v.error, digests: v.digests.size }).toEqual({ state: 'running', error: undefined, digests: 2 })
  })

  it('makes the last piece shorter, and every piece whole while the length is unknown', () => {
    const v = new TaskView()
    v.apply(info({ pieceSize: 4 * MiB }))
    expect(v.pieceLength(7)).toBe(4 * MiB)
    v.apply(info({ contentLength: 10 * MiB, pieceCount: 3 }))
    expect([0, 1, 2].map((n) => v.pieceLength(n))).toEqual([4 * MiB, 4 * MiB, 2 * MiB])
  })

  it('serves the stored prefix but the last piece only once the whole content is verified', () => {
    const v = new TaskView()
    expect(v.servable(5, false)).toBe(0)
    v.apply(info({ pieceSize: 4 * MiB, contentLength: 10 * MiB, pieceCount: 3 }))
    expect([0, 1, 2, 3].map((prefix) => v.servable(prefix, false))).toEqual([0, 4 * MiB, 8 * MiB, 8 * MiB])
    expect(v.servable(3, true)).toBe(10 * MiB)
  })
})
