// The disk tier of the chunk cache: verified on every read, bounded in size with least
// recently used chunks evicted first, and aware of what earlier mounts left behind.

import { createHash } from 'node:crypto'
import { mkdtemp, readdir, rm, writeFile, mkdir } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { afterEach, beforeEach, describe, expect, it } from 'vitest'

import { DiskChunkCache } from '../src/cache/index.ts'

const chunk = (seed: string, size = 1000): { hex: string; data: Buffer } => {
  const data = Buffer.alloc(size, seed)
  return { hex: createHash('sha256').update(data).digest('hex'), data }
}

async function files(dir: string): Promise<number> {
  let n = 0
  for (const sub of await readdir(dir).catch(() => [] as string[])) n += (await readdir(join(dir, sub))).filter((f) => !f.includes('.tmp')).length
  return n
}

describe('disk chunk cache', () => {
  let dir: string
  beforeEach(async () => { dir = await mkdtemp(join(tmpdir(), 'naiad-diskcache-')) })
  afterEach(async () => { await rm(dir, { recursive: true, force: true }) })

  it('returns what it stored and drops a tampered file instead of serving it', async () => {
    const cache = new DiskChunkCache(dir)
    const a = chunk('a')
    cache.put(a.hex, a.data)
    await cache.flush()
    expect((await cache.get(a.hex))?.equals(a.data)).toBe(true)
    await writeFile(join(dir, a.hex.slice(0, 2), a.hex), Buffer.alloc(1000, 'x'))
    expect(await cache.get(a.hex)).toBeUndefined()
    expect(cache.corrupt).toBe(1)
    expect(await files(dir)).toBe(0)
  })

  it('stays within its size, evicting the least recently used chunk first', async () => {
    const cache = new DiskChunkCache(dir, { maxBytes: 3000 })
    const [a, b, c, d] = ['a', 'b', 'c', 'd'].map((s) => chunk(s))
    for (const x of [a, b, c]) { cache.put(x.hex, x.data); await cache.flush() }
    expect(await cache.get(a.hex)).toBeDefined() // a is now the most recently used
    cache.put(d.hex, d.data)
    await cache.flush()
    expect(cache.size).toBeLessThanOrEqual(3000)
    expect(cache.evictions).toBe(1)
    expect(await cache.get(b.hex)).toBeUndefined()
    for (const x of [a, c, d]) expect((await cache.get(x.hex))?.equals(x.data)).toBe(true)
  })

  it('counts chunks an earlier mount left and trims them to the bound', async () => {
    const old = ['p', 'q', 'r', 's'].map((s) => chunk(s))
    for (const x of old) {
      await mkdir(join(dir, x.hex.slice(0, 2)), { recursive: true })
      await writeFile(join(dir, x.hex.slice(0, 2), x.hex), x.data)
    }
    const cache = new DiskChunkCache(dir, { maxBytes: 2500 })
    await cache.flush()
    expect(cache.size).toBeLessThanOrEqual(2500)
    expect(await files(dir)).toBe(2)
  })
})
