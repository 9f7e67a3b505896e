// Waiting for a download's servable bytes: the wait must end when the task ends, even when
// the task's last change came before the waiter listened for changes.

import { describe, expect, it } from 'vitest'

import type { TaskHandle } from '../src/download/task-manager.ts'
import { waitServable } from '../src/storage/send-content.ts'

describe('waitServable', () => {
  it('returns when the task ends without another change (a cached task finishing a tick late)', async () => {
    let servable = 0
    let finish!: () => void
    const done = new Promise<void>((resolve) => { finish = resolve })
    // changed() never resolves: the task's last emit happened before anyone waited.
    const handle = { id: 't', servable: () => servable, done, changed: () => new Promise<void>(() => {}) } as unknown as TaskHandle
    const waiting = waitServable(handle, 5)
    await new Promise((r) => setTimeout(r, 10))
    servable = 10
    finish()
    await expect(waiting).resolves.toBeUndefined()
  })

  it('rejects with the download error when the task fails', async () => {
    let fail!: (err: Error) => void
    const done = new Promise<void>((_resolve, reject) => { fail = reject })
    const handle = { id: 't', servable: () => 0, done, changed: () => new Promise<void>(() => {}) } as unknown as TaskHandle
    const waiting = waitServable(handle, 0)
    await new Promise((r) => setTimeout(r, 10))
    fail(new Error('origin gone'))
    await expect(waiting).rejects.toThrow('origin gone')
  })
})
