// nydus-fs mount when things go wrong: a chunk corrupted in the registry (that file reads
// EIO, every other file still reads, `check` names it), the registry going away mid-run
// (uncached reads fail with EIO within the timeout, cached ones still work, reads recover
// when it is back), a registry that stops answering (reads end by their timeout), an
// umount while reads are in flight, and a disk-cache chunk file damaged between two mounts
// (refetched, never served; intact ones hashed once per mount, then read by range).

import { createHash } from 'node:crypto'
import { mkdtemp, open, readFile, rm, writeFile } from 'node:fs/promises'
import { createServer, request, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { CountingProxy, makeBlob, makeOciLayer, pushOciImage, run, startRegistry, waitFor, type RegistryHandle } from '@naiad/testkit'

import { lookupInode } from '../src/index.ts'
import { openLazy } from './convert-helpers.ts'
import { convert, isMounted, NYDUS_FS, readFiles, startReading, TestMount } from './fixtures/mount-helpers.ts'

const sha = (b: Buffer | string): string => createHash('sha256').update(b).digest('hex')
// Files of 200 KiB: more than a read pulls along with a neighbour (128 KiB), so reading one
// never caches another.
const FILES = Array.from({ length: 12 }, (_, i) => ({ path: `/data/f${String(i).padStart(2, '0')}.bin`, data: makeBlob(200 * 1024 + i, `fail-${i}`) }))
const BIG = makeBlob(3 * 1024 * 1024, 'fail-big')

/** Forwards to the registry; with `hang`, blob requests get no answer at all. */
class HangingProxy {
  hang = false
  host = ''
  private server: Server | undefined
  private readonly held: ServerResponse[] = []
  private readonly target: URL

  constructor(target: string) {
    this.target = new URL(target)
  }

  async start(): Promise<this> {
    this.server = createServer((req: IncomingMessage, res: ServerResponse) => {
      if (this.hang && req.url?.includes('/blobs/') === true) { this.held.push(res); return }
      const up = request({ host: this.target.hostname, port: this.target.port, method: req.method, path: req.url, headers: { ...req.headers, host: this.target.host } }, (upRes) => {
        res.writeHead(upRes.statusCode ?? 502, upRes.headers)
        upRes.pipe(res)
      })
      up.on('error', () => res.destroy())
      req.pipe(up)
    })
    await new Promise<void>((r) => this.server!.listen(0, '127.0.0.1', r))
    this.host = `127.0.0.1:${(this.server.address() as AddressInfo).port}`
    return this
  }

  async stop(): Promise<void> {
    for (const r of this.held) r.destroy()
    this.server?.closeAllConnections()
    await new Promise<void>((r) => this.server?.close(() => r()) ?? r())
  }
}

let dir: string
let registry: RegistryHandle
let proxy: CountingProxy
let hanging: HangingProxy
const mounts: TestMount[] = []

async function mount(ref: string, name: string, args: string[] = []): Promise<TestMount> {
  const m = await TestMount.start(ref, join(dir, `mnt-${name}`), { cacheDir: join(dir, `cache-${name}`), runDir: join(dir, 'run'), args: ['--daemon', 'none', '--no-prefetch', ...args] })
  mounts.push(m)
  return m
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'nfs-mount-fail-'))
  registry = await startRegistry(join(dir, 'registry'))
  proxy = await new CountingProxy(registry.url).start()
  hanging = await new HangingProxy(registry.url).start()
  const layer = await makeOciLayer([
    { name: 'data/', type: 'directory' },
    ...FILES.map((f) => ({ name: f.path.slice(1), content: f.data })),
    { name: 'data/big.bin', content: BIG }
  ])
  await pushOciImage(registry.url, 'src/fail', 'v1', [layer])
  await convert(`${registry.host}/src/fail:v1`, `${registry.host}/src/fail:lazy`)
}, 120_000)

afterAll(async () => {
  for (const m of mounts) await m.cleanup()
  await hanging?.stop()
  await proxy?.stop()
  await registry?.stop()
  if (dir !== undefined) await rm(dir, { recursive: true, force: true })
})

describe('nydus-fs mount failures', () => {
  it('returns EIO for a file whose chunk is corrupted in the registry, and reads every other file', async () => {
    const victim = FILES[5]
    const { client, image } = await openLazy(`${registry.host}/src/fail:lazy`)
    await client.close()
    const inode = lookupInode(image.bootstrap, victim.path)!
    const chunk = image.bootstrap.chunks[inode.chunks[0]]
    const blob = image.bootstrap.blobs[chunk.blob].digest.slice('sha256:'.length)
    const file = join(dir, 'registry', 'data', 'docker', 'registry', 'v2', 'blobs', 'sha256', blob.slice(0, 2), blob, 'data')
    const at = chunk.offset + Math.floor(chunk.storedSize / 2)
    const fh = await open(file, 'r+')
    const byte = Buffer.alloc(1)
    await fh.read(byte, 0, 1, at)
    await fh.write(Buffer.from([byte[0] ^ 0xff]), 0, 1, at)
    try {
      const m = await mount(`${proxy.host}/src/fail:lazy`, 'corrupt')
      const [bad] = await readFiles([m.path(victim.path)])
      expect(bad).toMatchObject({ ok: false, code: 'EIO' })
      const others = await readFiles([...FILES.filter((f) => f !== victim).map((f) => m.path(f.path)), m.path('/data/big.bin')])
      for (const [i, r] of others.entries()) {
        expect(r.ok, r.path).toBe(true)
        expect(r.sha256, r.path).toBe(sha(i < FILES.length - 1 ? FILES.filter((f) => f !== victim)[i].data : BIG))
      }
      // Still EIO: the bad bytes are never cached or returned.
      expect((await readFiles([m.path(victim.path)]))[0].code).toBe('EIO')
      const s = await m.stats()
      expect(s.fetch.digestErrors).toBeGreaterThanOrEqual(1)
      expect(s.reads.errors).toBeGreaterThanOrEqual(2)
      const check = await run(NYDUS_FS, ['check', `${registry.host}/src/fail:lazy`, '--plain-http'])
      expect(check.code).not.toBe(0)
      expect(check.stderr).toContain(victim.path)
    } finally {
      await fh.write(byte, 0, 1, at)
      await fh.close()
    }
  })

  it('a disk-cache chunk damaged between mounts is refetched, never served; intact ones are hashed once, then read by range', async () => {
    const victim = FILES[3]
    const ref = `${proxy.host}/src/fail:lazy`
    // A memory tier too small for any chunk: every read of a cached chunk goes to the disk tier.
    const args = ['--memory-cache', '64KiB']
    const first = await mount(ref, 'disk', args)
    const warm = await readFiles([first.path(victim.path), first.path('/data/big.bin')])
    expect(warm.map((r) => r.sha256)).toEqual([sha(victim.data), sha(BIG)])
    expect((await first.umount()).code).toBe(0)

    // One byte of the victim's chunk file flipped in place, same size (a 200 KiB file is one chunk).
    const file = join(first.cacheDir, 'chunks', sha(victim.data).slice(0, 2), sha(victim.data))
    const bytes = await readFile(file)
    bytes[1000] ^= 0xff
    await writeFile(file, bytes)
    // Chunk files are trusted by their identity only once they have been still for a second.
    await new Promise((r) => setTimeout(r, 1_200))

    const second = await TestMount.start(ref, first.mountpoint, { cacheDir: first.cacheDir, runDir: first.runDir, args: ['--daemon', 'none', '--no-prefetch', ...args] })
    mounts.push(second)
    const blobGets = (): number => proxy.requests.filter((r) => r.method === 'GET' && r.path.includes('/blobs/')).length
    const before = blobGets()
    expect((await readFiles([second.path(victim.path)]))[0]).toMatchObject({ ok: true, sha256: sha(victim.data) })
    const s1 = await second.stats()
    expect(s1.cache.diskCorrupt).toBe(1)
    expect(s1.fetch.chunks).toBeGreaterThanOrEqual(1)
    expect(blobGets()).toBeGreaterThan(before)

    // BIG's three chunks come from the disk cache, hashed once each however often they are read.
    const afterVictim = blobGets()
    expect((await readFiles([second.path('/data/big.bin')]))[0].sha256).toBe(sha(BIG))
    const s2 = await second.stats()
    expect(s2.cache.diskVerifications - s1.cache.diskVerifications).toBe(3)
    for (let i = 0; i < 2; i++) {
      await writeFile('/proc/sys/vm/drop_caches', '3')
      expect((await readFiles([second.path('/data/big.bin')]))[0].sha256).toBe(sha(BIG))
    }
    const s3 = await second.stats()
    expect(s3.cache.diskVerifications).toBe(s2.cache.diskVerifications)
    expect(s3.cache.diskRangeReads).toBeGreaterThan(s2.cache.diskRangeReads)
    expect(blobGets()).toBe(afterVictim)
  })

  it('registry stopped mid-run: uncached reads fail with EIO within the timeout, cached ones work, reads recover', async () => {
    const m = await mount(`${proxy.host}/src/fail:lazy`, 'down', ['--read-timeout', '5s'])
    const [cached, uncached] = [FILES[1], FILES[8]]
    expect((await readFiles([m.path(cached.path)]))[0].sha256).toBe(sha(cached.data))
    proxy.down = true
    try {
      // Drop the kernel's page cache so that the mount's own chunk cache answers.
      await writeFile('/proc/sys/vm/drop_caches', '3').catch(() => {})
      const before = await m.stats()
      const [c, u] = await readFiles([m.path(cached.path), m.path(uncached.path)])
      expect(c).toMatchObject({ ok: true, sha256: sha(cached.data) })
      expect(u).toMatchObject({ ok: false, code: 'EIO' })
      expect(u.ms).toBeLessThan(5_000 + 2_000)
      const after = await m.stats()
      expect(after.fetch.errors).toBeGreaterThan(before.fetch.errors)
    } finally {
      proxy.down = false
    }
    // A chunk that just failed fails at once for a second (the kernel re-reads a failed
    // readahead page by page); after that the next read goes to the registry again.
    await new Promise((r) => setTimeout(r, 1_100))
    const [back] = await readFiles([m.path(uncached.path)])
    expect(back).toMatchObject({ ok: true, sha256: sha(uncached.data) })
  })

  it('a registry that stops answering: reads end with EIO at their timeout; umount is clean while reads are in flight', async () => {
    const m = await mount(`${hanging.host}/src/fail:lazy`, 'hang', ['--read-timeout', '3s'])
    const { pid } = await m.stats()
    hanging.hang = true
    try {
      const [timedOut] = await readFiles([m.path(FILES[2].path)])
      expect(timedOut).toMatchObject({ ok: false, code: 'EIO' })
      expect(timedOut.ms).toBeGreaterThanOrEqual(2_500)
      expect(timedOut.ms).toBeLessThan(3_000 + 3_000)

      const reading = startReading([m.path(FILES[3].path), m.path('/data/big.bin')])
      await new Promise((r) => setTimeout(r, 800))
      const t0 = Date.now()
      const u = await m.umount()
      expect(u.code, u.stderr).toBe(0)
      expect(Date.now() - t0).toBeLessThan(10_000)
      const results = await reading.done
      expect(results[0].ok).toBe(false)
      expect(['EIO', 'ENOTCONN', 'ENOENT']).toContain(results[0].code)
      expect(await isMounted(m.mountpoint)).toBe(false)
      await waitFor(() => { try { process.kill(pid, 0); return false } catch { return true } }, 5_000, 'the mount process to exit')
    } finally {
      hanging.hang = false
    }
  })
})
