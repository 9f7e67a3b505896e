// The mount's read path below FUSE, against stub sources: single-flight, merged ranges,
// read amplification, verification (never a wrong byte), bounded retries and deadlines,
// recovery, source fallback, prefetch yielding to reads, and the disk cache re-verifying.

import { createHash } from 'node:crypto'
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { zstdCompressSync } from 'node:zlib'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { BlobRef, Bootstrap } from '@naiad/proto/contracts'
import { makeBlob } from '@naiad/testkit'

import { ChunkCache } from '../src/cache/index.ts'
import { ChunkFetcher, FetchQueue, type BlobSource, type ChunkFetcherOptions, type SourceName, type Ticket } from '../src/fetch/index.ts'

const CHUNKS = Array.from({ length: 12 }, (_, i) => makeBlob(i < 8 ? 20_000 + i : 300_000 + i, `fetcher-${i}`))

function buildImage(): { bootstrap: Bootstrap; blob: Buffer } {
  const parts: Buffer[] = []
  let offset = 0
  const chunks = CHUNKS.map((data) => {
    const stored = zstdCompressSync(data)
    parts.push(stored)
    const c = { digest: createHash('sha256').update(data).digest(), blob: 0, offset, storedSize: stored.length, size: data.length }
    offset += stored.length
    return c
  })
  const blob = Buffer.concat(parts)
  const blobs: BlobRef[] = [{ digest: `sha256:${createHash('sha256').update(blob).digest('hex')}`, size: blob.length }]
  const bootstrap = {
    superblock: { version: 1, chunkSize: 1024 * 1024, compressor: 'zstd', rootIno: 0, inodeCount: 0, createdAt: 0 },
    inodes: [], chunks, blobs, prefetch: []
  } as Bootstrap
  return { bootstrap, blob }
}

const { bootstrap, blob } = buildImage()

class StubSource implements BlobSource {
  readonly name: SourceName
  readonly calls: Array<{ start: number; end: number }> = []
  delayMs = 0
  /** Each call takes the next behaviour; 'ok' once they run out. */
  plan: Array<'ok' | 'fail' | 'hang' | 'corrupt'> = []
  down = false

  constructor(name: SourceName = 'registry') {
    this.name = name
  }

  available(): boolean {
    return !this.down
  }

  async read(_blob: BlobRef, start: number, end: number, signal: AbortSignal): Promise<Buffer> {
    this.calls.push({ start, end })
    const step = this.plan.shift() ?? 'ok'
    await new Promise<void>((resolve, reject) => {
      if (step === 'hang') { signal.addEventListener('abort', () => reject(signal.reason), { once: true }); return }
      const t = setTimeout(resolve, this.delayMs)
      signal.addEventListener('abort', () => { clearTimeout(t); reject(signal.reason) }, { once: true })
    })
    if (step === 'fail') throw new Error('connection reset')
    const out = Buffer.from(blob.subarray(start, end + 1))
    if (step === 'corrupt') out[Math.floor(out.length / 2)] ^= 0xff
    return out
  }
}

let dir: string
const controllers: AbortController[] = []

function fetcher(sources: BlobSource[], options: Partial<ChunkFetcherOptions> = {}, diskDir?: string): ChunkFetcher {
  const c = new AbortController()
  controllers.push(c)
  return new ChunkFetcher({ bootstrap, cache: new ChunkCache({ memoryBytes: 64 * 1024 * 1024, diskDir }), sources, signal: c.signal }, {
    backoffMs: 10, maxBackoffMs: 20, amplifyBytes: 0, ...options
  })
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'nfs-fetcher-'))
})

afterAll(async () => {
  for (const c of controllers) c.abort()
  await rm(dir, { recursive: true, force: true })
})

describe('chunk fetcher', () => {
  it('returns verified chunks; concurrent readers of a chunk share one fetch', async () => {
    const src = new StubSource()
    src.delayMs = 50
    const f = fetcher([src])
    const reads = await Promise.all(Array.from({ length: 10 }, () => f.getChunks([3])))
    for (const [c] of reads) expect(c.equals(CHUNKS[3])).toBe(true)
    expect(src.calls).toHaveLength(1)
    expect(f.stats.chunks).toBe(1)
    // Then from memory, without a fetch.
    expect((await f.getChunks([3]))[0].equals(CHUNKS[3])).toBe(true)
    expect(src.calls).toHaveLength(1)
  })

  it('fetches adjacent missing chunks of a blob as one range', async () => {
    const src = new StubSource()
    const f = fetcher([src])
    const got = await f.getChunks([2, 3, 4, 5])
    expect(got.map((g, i) => g.equals(CHUNKS[2 + i]))).toEqual([true, true, true, true])
    expect(src.calls).toEqual([{ start: bootstrap.chunks[2].offset, end: bootstrap.chunks[5].offset + bootstrap.chunks[5].storedSize - 1 }])
  })

  it('amplifies a small read with the chunks that follow, and caches them', async () => {
    const src = new StubSource()
    const f = fetcher([src], { amplifyBytes: 128 * 1024 })
    await f.getChunks([0])
    expect(src.calls).toHaveLength(1)
    await f.getChunks([1, 2, 3])
    expect(src.calls).toHaveLength(1)
    expect(f.stats.chunks).toBeGreaterThanOrEqual(4)
  })

  it('never returns wrong bytes: a corrupt range is tried from the next source, else fails with NFS_ERR_DIGEST', async () => {
    const daemon = new StubSource('daemon')
    const registry = new StubSource('registry')
    daemon.plan = ['corrupt']
    const f = fetcher([daemon, registry])
    expect((await f.getChunks([6]))[0].equals(CHUNKS[6])).toBe(true)
    expect(registry.calls).toHaveLength(1)
    expect(f.stats.digestErrors).toBe(1)

    const only = new StubSource()
    only.plan = ['corrupt', 'corrupt']
    const g = fetcher([only], { failureMemoryMs: 0 })
    await expect(g.getChunks([7])).rejects.toMatchObject({ code: 'NFS_ERR_DIGEST' })
    // Nothing bad was cached: the next read fetches again (and gets good bytes).
    only.plan = []
    expect((await g.getChunks([7]))[0].equals(CHUNKS[7])).toBe(true)
  })

  it('retries a failed range with backoff, then fails with NFS_ERR_FETCH; the next read recovers', async () => {
    const src = new StubSource()
    src.plan = ['fail', 'fail']
    const f = fetcher([src], { retries: 3 })
    expect((await f.getChunks([8]))[0].equals(CHUNKS[8])).toBe(true)
    expect(src.calls).toHaveLength(3)
    expect(f.stats.retries).toBe(2)

    src.calls.length = 0
    src.plan = ['fail', 'fail', 'fail']
    const g = fetcher([src], { retries: 2, failureMemoryMs: 0 })
    await expect(g.getChunks([9])).rejects.toMatchObject({ code: 'NFS_ERR_FETCH' })
    expect(src.calls).toHaveLength(3)
    expect((await g.getChunks([9]))[0].equals(CHUNKS[9])).toBe(true)
  })

  it('remembers a failure for failureMemoryMs only', async () => {
    const src = new StubSource()
    src.plan = ['fail']
    const f = fetcher([src], { retries: 0, failureMemoryMs: 200 })
    await expect(f.getChunks([10])).rejects.toMatchObject({ code: 'NFS_ERR_FETCH' })
    await expect(f.getChunks([10])).rejects.toMatchObject({ code: 'NFS_ERR_FETCH' })
    expect(src.calls).toHaveLength(1)
    await new Promise((r) => setTimeout(r, 250))
    expect((await f.getChunks([10]))[0].equals(CHUNKS[10])).toBe(true)
  })

  it('ends a read at its timeout when the source hangs', async () => {
    const src = new StubSource()
    src.plan = ['hang', 'hang', 'hang', 'hang']
    const f = fetcher([src], { timeoutMs: 300, attemptTimeoutMs: 10_000 })
    const t0 = Date.now()
    await expect(f.getChunks([11])).rejects.toMatchObject({ code: 'NFS_ERR_FETCH' })
    expect(Date.now() - t0).toBeLessThan(1_000)
  })

  it('uses the next source while the first rests', async () => {
    const daemon = new StubSource('daemon')
    const registry = new StubSource('registry')
    daemon.down = true
    const f = fetcher([daemon, registry])
    await f.getChunks([1])
    expect(daemon.calls).toHaveLength(0)
    expect(f.stats.bytesBySource.registry).toBeGreaterThan(0)
  })

  it('serves the disk cache after a restart, and refetches a damaged disk entry', async () => {
    const disk = join(dir, 'disk')
    const src = new StubSource()
    const f = fetcher([src], {}, disk)
    await f.getChunks([4])
    await new Promise((r) => setTimeout(r, 100))
    const g = fetcher([src], {}, disk)
    expect((await g.getChunks([4]))[0].equals(CHUNKS[4])).toBe(true)
    expect(src.calls).toHaveLength(1)
    // Damage the file: it is dropped and fetched again, never served.
    const hex = createHash('sha256').update(CHUNKS[4]).digest('hex')
    const sub = join(disk, hex.slice(0, 2))
    expect(await readdir(sub)).toContain(hex)
    await writeFile(join(sub, hex), Buffer.from('not the chunk'))
    const h = fetcher([src], {}, disk)
    expect((await h.getChunks([4]))[0].equals(CHUNKS[4])).toBe(true)
    expect(src.calls).toHaveLength(2)
  })
})

describe('fetch queue', () => {
  it('starts prefetch only while no read waits, within its own limit; a promoted prefetch goes first', async () => {
    const q = new FetchQueue({ concurrency: 2, prefetchConcurrency: 1 })
    const signal = new AbortController().signal
    const order: string[] = []
    const gate: Array<() => void> = []
    const job = (name: string, ticket: Ticket): Promise<void> => q.run(ticket, signal, async () => {
      order.push(name)
      await new Promise<void>((r) => gate.push(r))
    })
    const jobs = [job('p1', { priority: 'prefetch' }), job('p2', { priority: 'prefetch' }), job('r1', { priority: 'on-demand' })]
    await new Promise((r) => setImmediate(r))
    // p1 holds the only prefetch slot; r1 takes the other slot; p2 waits.
    expect(order).toEqual(['p1', 'r1'])
    const promoted: Ticket = { priority: 'prefetch' }
    jobs.push(job('p3', promoted), job('r2', { priority: 'on-demand' }))
    promoted.priority = 'on-demand'
    q.pump()
    gate.shift()!()
    await new Promise((r) => setImmediate(r))
    // A freed slot goes to a read (the promoted one first in line), not to p2.
    expect(order).toEqual(['p1', 'r1', 'p3'])
    while (gate.length > 0 || order.length < 5) {
      gate.shift()?.()
      await new Promise((r) => setImmediate(r))
    }
    await Promise.all(jobs)
    expect(order.indexOf('r2')).toBeLessThan(order.indexOf('p2'))
  })
})
