// The data server's read buffers: a pool per connection bounds its read-ahead; idle buffers
// are shared by the server's connections through one shelf.

import { describe, expect, it } from 'vitest'

import { BufferPool, BufferShelf } from '../src/channel/buffer-pool.ts'

describe('buffer pool', () => {
  it('has at most `count` buffers out and waits for one to come back', async () => {
    const pool = new BufferPool(2, 16)
    const a = await pool.take()
    const b = await pool.take()
    let third: Buffer | undefined
    const waiting = pool.take().then((buf) => { third = buf })
    await new Promise((r) => setImmediate(r))
    expect(third).toBeUndefined()
    pool.give(a)
    await waiting
    // The buffer given back is the one handed out: nothing new was allocated.
    expect(third).toBe(a)
    pool.give(b)
    pool.give(third!)
    await pool.drained()
  })

  it('gives up waiting when its signal fires', async () => {
    const pool = new BufferPool(1, 16)
    await pool.take()
    const stop = new AbortController()
    const waiting = pool.take(stop.signal)
    stop.abort(new Error('stop'))
    await expect(waiting).rejects.toThrow('stop')
  })

  it('hands one connection the buffers another gave back, and keeps at most `keep` idle', async () => {
    const shelf = new BufferShelf(2)
    const first = new BufferPool(3, 16, shelf)
    const bufs = [await first.take(), await first.take(), await first.take()]
    for (const b of bufs) first.give(b)
    expect(shelf.size).toBe(2)
    const second = new BufferPool(3, 16, shelf)
    const again = [await second.take(), await second.take(), await second.take()]
    // Two from the shelf, the third allocated; each a different buffer.
    expect(again.filter((b) => bufs.includes(b))).toHaveLength(2)
    expect(new Set(again).size).toBe(3)
    expect(shelf.size).toBe(0)
    // A pool of another size takes nothing of the wrong size from a shelf.
    second.give(again[0])
    const other = new BufferPool(1, 32, shelf)
    expect((await other.take()).length).toBe(32)
  })
})
