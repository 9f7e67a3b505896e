// The disk tier of the chunk cache: a chunk file hashed on its first use (a damaged one is
// dropped, never served), then read by range without hashing while the file stays the one
// verified; bounded in size with least recently used chunks evicted first, and aware of what
// earlier mounts left behind.

import { createHash } from 'node:crypto'
import { mkdtemp, open, readdir, rm, writeFile, mkdir } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { afterEach, beforeEach, describe, expect, it } from 'vitest'

import { DiskChunkCache } from '../src/cache/index.ts'

const chunk = (seed: string, size = 1000): { hex: string; data: Buffer } => {
  const data = Buffer.alloc(size, seed)
  return { hex: createHash('sha256').update(data).digest('hex'), data }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

/** Puts a chunk file where the cache looks for `hex`, as an earlier mount would have left it. */
async function plant(dir: string, hex: string, data: Buffer): Promise<string> {
  await mkdir(join(dir, hex.slice(0, 2)), { recursive: true })
  const file = join(dir, hex.slice(0, 2), hex)
  await writeFile(file, data)
  return file
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

  it('catches a chunk file corrupted before its first use: never served, removed', async () => {
    const a = chunk('a', 64 * 1024)
    const bad = Buffer.from(a.data)
    bad[40_000] ^= 0x01
    await plant(dir, a.hex, bad)
    await sleep(80)
    const cache = new DiskChunkCache(dir, { settleMs: 50 })
    const out = Buffer.alloc(4096)
    expect(await cache.readRange(a.hex, out, 0, 36_864, 40_960)).toBe(false) // never verified: no range reads
    expect(await cache.get(a.hex)).toBeUndefined()
    expect(cache.corrupt).toBe(1)
    expect(cache.isVerified(a.hex)).toBe(false)
    expect(await files(dir)).toBe(0)
  })

  it('does not load a file larger than any chunk can be: it is damage', async () => {
    const a = chunk('a')
    await plant(dir, a.hex, Buffer.alloc(16 * 1024 * 1024 + 1))
    const cache = new DiskChunkCache(dir)
    expect(await cache.get(a.hex)).toBeUndefined()
    expect(cache.corrupt).toBe(1)
    expect(await files(dir)).toBe(0)
  })

  it('hashes a chunk once, then serves ranges of it without hashing; a change sends it back to a full check', async () => {
    const a = chunk('a', 256 * 1024)
    const b = chunk('b', 256 * 1024)
    const fileA = await plant(dir, a.hex, a.data)
    await plant(dir, b.hex, b.data)
    await sleep(80)
    // One open file at a time: ranges of two chunks in turn reopen, and must not re-hash.
    const cache = new DiskChunkCache(dir, { settleMs: 50, maxOpenFiles: 1 })
    expect((await cache.get(a.hex))?.equals(a.data)).toBe(true)
    expect((await cache.get(b.hex))?.equals(b.data)).toBe(true)
    expect(cache.verifications).toBe(2)
    for (let i = 0; i < 20; i++) {
      const x = i % 2 === 0 ? a : b
      const from = (i * 12_345) % (x.data.length - 4096)
      const out = Buffer.alloc(4096 + 10, 0xee)
      expect(await cache.readRange(x.hex, out, 10, from, from + 4096)).toBe(true)
      expect(out.subarray(10).equals(x.data.subarray(from, from + 4096))).toBe(true)
      expect(out.subarray(0, 10).every((v) => v === 0xee)).toBe(true)
    }
    expect((await cache.get(a.hex))?.equals(a.data)).toBe(true)
    expect(cache.verifications).toBe(2)
    expect(cache.rangeReads).toBe(21)

    // Changed in place after it was verified (same size, one byte): the next range read
    // notices (ctime moved), and the full check that follows drops the file.
    const fh = await open(fileA, 'r+')
    await fh.write(Buffer.from([a.data[100] ^ 0xff]), 0, 1, 100)
    await fh.close()
    const out = Buffer.alloc(4096)
    expect(await cache.readRange(a.hex, out, 0, 0, 4096)).toBe(false)
    expect(cache.changed).toBe(1)
    expect(cache.isVerified(a.hex)).toBe(false)
    expect(await cache.get(a.hex)).toBeUndefined()
    expect(cache.corrupt).toBe(1)
    // The other chunk is untouched and still trusted.
    expect(await cache.readRange(b.hex, out, 0, 0, 4096)).toBe(true)
    expect(cache.verifications).toBe(3)
    await cache.close()
    expect(cache.isVerified(b.hex)).toBe(false)
  })

  it('trusts a file by its identity only once it has been still for a while', async () => {
    const cache = new DiskChunkCache(dir) // default settle time, far longer than this test's writes
    const a = chunk('a')
    cache.put(a.hex, a.data)
    await cache.flush()
    expect((await cache.get(a.hex))?.equals(a.data)).toBe(true)
    expect(cache.isVerified(a.hex)).toBe(false)
    expect((await cache.get(a.hex))?.equals(a.data)).toBe(true)
    expect(cache.verifications).toBe(2)
  })
})
