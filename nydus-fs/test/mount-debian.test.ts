// nydus-fs mount on a real Debian rootfs (debootstrap minbase, made into an OCI image with
// umoci, pushed to a real registry with skopeo, converted with `nydus-fs convert`): a
// program runs from the mount after fetching a small fraction of the image, and the mounted
// tree equals `umoci unpack` of the source in every path, type, mode, owner, size, symlink
// target, xattr and file SHA-256.

import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { runTool, startRegistry, type RegistryHandle } from '@naiad/testkit'

import { debianLayout, pushLayout, unpackLayout } from './fixtures/debian-image.ts'
import { convert, TestMount, walkTree } from './fixtures/mount-helpers.ts'

const MiB = 1024 * 1024

let dir: string
let registry: RegistryHandle
let image: string
let m: TestMount
let sourceBytes = 0

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'nfs-debian-'))
  const layout = await debianLayout()
  image = layout.image
  registry = await startRegistry(join(dir, 'registry'))
  await pushLayout(image, `${registry.host}/debian:bookworm`)
  const manifest = await (await fetch(`${registry.url}/v2/debian/manifests/bookworm`, { headers: { accept: 'application/vnd.oci.image.manifest.v1+json' } })).json() as { layers: Array<{ size: number }> }
  sourceBytes = manifest.layers.reduce((n, l) => n + l.size, 0)
  await convert(`${registry.host}/debian:bookworm`, `${registry.host}/debian:lazy`)
  // No prefetch: what gets fetched is only what the program reads.
  m = await TestMount.start(`${registry.host}/debian:lazy`, join(dir, 'mnt'), { cacheDir: join(dir, 'cache'), runDir: join(dir, 'run'), args: ['--daemon', 'none', '--no-prefetch'] })
}, 300_000)

afterAll(async () => {
  await m?.cleanup()
  await registry?.stop()
  if (dir !== undefined) await rm(dir, { recursive: true, force: true })
})

describe('nydus-fs mount: Debian bookworm minbase', () => {
  it('runs a program from the mount after fetching well under a fifth of the image', async () => {
    const before = await m.stats()
    expect(before.fetch.bytes).toBe(0)
    const r = await runTool('chroot', [m.mountpoint, '/bin/sh', '-c', 'echo hi; cat /etc/debian_version'])
    expect(r.code, r.stderr).toBe(0)
    expect(r.stdout).toMatch(/^hi\n12\.\d+\n$/)
    const s = await m.stats()
    const imageBytes = s.image.bootstrapBytes + s.image.dataBytes
    const fetched = s.bootstrapFetchedBytes + s.fetch.bytes
    console.log(`chroot sh: fetched ${(fetched / MiB).toFixed(2)} MiB (bootstrap ${(s.image.bootstrapBytes / MiB).toFixed(2)} MiB + ` +
      `${s.fetch.chunks} chunks ${(s.fetch.bytes / MiB).toFixed(2)} MiB in ${s.fetch.requests} requests) of a ${(imageBytes / MiB).toFixed(1)} MiB lazy image ` +
      `= ${(100 * fetched / imageBytes).toFixed(2)} %; source image ${(sourceBytes / MiB).toFixed(1)} MiB (gzip) → ${(100 * fetched / sourceBytes).toFixed(2)} %; ` +
      `${s.reads.count} reads, p50 ${s.reads.latencyMs.p50} ms, max ${s.reads.latencyMs.max} ms`)
    expect(s.fetchedFraction).toBeCloseTo(fetched / imageBytes, 6)
    expect(fetched / imageBytes).toBeLessThan(0.05)
    expect(fetched / sourceBytes).toBeLessThan(0.05)
    expect(s.reads.errors).toBe(0)
  })

  it('shows the tree of `umoci unpack` in every path, type, mode, owner, size, symlink, xattr and SHA-256', async () => {
    const reference = await unpackLayout(image, join(dir, 'bundle'))
    const t0 = Date.now()
    const [want, got] = await Promise.all([walkTree(reference), walkTree(m.mountpoint)])
    const ms = Date.now() - t0
    const paths = Object.keys(want)
    expect(Object.keys(got).sort()).toEqual(paths.sort())
    const differences: string[] = []
    let files = 0
    let bytes = 0
    for (const p of paths) {
      const a = want[p]
      const b = got[p]
      // Directory sizes and link counts are the host file system's business, not the image's.
      if (a.type === 'dir') { delete a.size; delete b.size; delete a.nlink; delete b.nlink }
      if (JSON.stringify(a) !== JSON.stringify(b)) differences.push(`${p}: unpacked ${JSON.stringify(a)} mounted ${JSON.stringify(b)}`)
      if (a.type === 'file') { files++; bytes += a.size ?? 0 }
    }
    expect(differences.slice(0, 20)).toEqual([])
    // The comparison covers what it claims to.
    expect(files).toBeGreaterThan(4000)
    expect(Object.values(want).some((e) => e.type === 'symlink')).toBe(true)
    expect(Object.values(want).some((e) => e.type === 'char')).toBe(true)
    expect(Object.values(want).some((e) => (e.nlink ?? 1) > 1 && e.type === 'file')).toBe(true)
    expect(want['/etc/debian_version'].xattrs).toEqual({ 'user.naiad.test': Buffer.from('lazy').toString('hex') })
    const s = await m.stats()
    console.log(`tree: ${paths.length} paths, ${files} files, ${(bytes / MiB).toFixed(1)} MiB compared in ${ms} ms (both walks in parallel); ` +
      `mount fetched ${(s.fetch.bytes / MiB).toFixed(1)} MiB of ${(s.image.dataBytes / MiB).toFixed(1)} MiB in ${s.fetch.requests} requests, ` +
      `${s.reads.count} reads p50 ${s.reads.latencyMs.p50} ms p99 ${s.reads.latencyMs.p99} ms`)
    expect(s.fetch.digestErrors).toBe(0)
    expect(s.reads.errors).toBe(0)
  })
})
