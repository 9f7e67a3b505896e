// convert: a synthetic three-layer image (gzip, zstd and plain tar layers) with whiteouts,
// an opaque directory, hardlinks, symlinks, devices, xattrs, long names and replaced files
// converts to a bootstrap that shows exactly the merged view, read back chunk by chunk
// from the registry.

import { createHash } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ANNOTATIONS, MEDIA_TYPES } from '@naiad/proto/contracts'
import { digestOf, makeBlob, makeOciLayer, pushBlobBytes, pushOciImage, startRegistry, type RegistryHandle } from '@naiad/testkit'

import { lookupPath } from '../src/index.ts'
import { nydusFs, openLazy, readFile, treeOf, type TreeEntry } from './convert-helpers.ts'

const sha = (s: Buffer | string): string => createHash('sha256').update(s).digest('hex')
const MTIME = 1_700_000_000
const CAP = Buffer.from([0x01, 0x00, 0x00, 0x02, 0xff, 0x80, 0x00, 0x00, 0xc3, 0x28])
const TOOL = makeBlob(200 * 1024 + 123, 'tool-v2')
const LONG_DIR = `long/${'d'.repeat(120)}`
const LONG_FILE = `${LONG_DIR}/${'f'.repeat(150)}`

let dir: string
let registry: RegistryHandle

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'nfs-convert-'))
  registry = await startRegistry(join(dir, 'registry'))
  const l1 = await makeOciLayer([
    { name: 'etc/', type: 'directory' },
    { name: 'etc/passwd', content: 'root:x:0:0::/root:/bin/sh\n' },
    { name: 'bin/', type: 'directory' },
    { name: 'bin/tool', content: 'tool v1', mode: 0o755 },
    { name: 'data/', type: 'directory', mode: 0o750, uid: 1, gid: 2 },
    { name: 'data/keep.txt', content: 'keep', xattrs: { 'user.comment': 'héllo', 'security.capability': CAP } },
    { name: 'data/gone.txt', content: 'gone' },
    { name: 'data/replace.txt', content: 'old' },
    { name: 'opq/', type: 'directory' },
    { name: 'opq/a', content: 'a' },
    { name: 'opq/sub/', type: 'directory' },
    { name: 'opq/sub/b', content: 'b' },
    { name: 'rmdir/', type: 'directory' },
    { name: 'rmdir/x/', type: 'directory' },
    { name: 'rmdir/x/y', content: 'y' },
    { name: 'hard/', type: 'directory' },
    { name: 'hard/orig', content: 'shared' },
    { name: 'hard/link', type: 'link', linkname: 'hard/orig' },
    { name: 'sym', type: 'symlink', linkname: 'data/keep.txt', mode: 0o777 },
    { name: 'dev/', type: 'directory' },
    { name: 'dev/null', type: 'character-device', devmajor: 1, devminor: 3, mode: 0o666 },
    { name: 'dev/sda', type: 'block-device', devmajor: 8, devminor: 0, mode: 0o660 },
    { name: 'dev/fifo', type: 'fifo', mode: 0o600 },
    { name: 'long/', type: 'directory' },
    { name: `${LONG_DIR}/`, type: 'directory' },
    { name: LONG_FILE, content: 'long' },
    { name: './implicit/child.txt', content: 'child' }
  ], 'gzip')
  const l2 = await makeOciLayer([
    { name: 'data/.wh.gone.txt' },
    { name: '.wh.rmdir' },
    { name: 'opq/', type: 'directory', mode: 0o700 },
    { name: 'opq/.wh..wh..opq' },
    { name: 'opq/new', content: 'new' },
    { name: 'data/replace.txt', content: 'replaced content', mode: 0o600, uid: 1000, gid: 1000 },
    { name: 'hard/link2', type: 'link', linkname: 'hard/orig' },
    { name: 'abs-sym', type: 'symlink', linkname: '/etc/passwd', mode: 0o777 },
    { name: 'out-sym', type: 'symlink', linkname: '../../../../etc/shadow', mode: 0o777 },
    { name: 'setuid', content: '#!/bin/sh\n', mode: 0o4755 }
  ], 'zstd')
  const l3 = await makeOciLayer([
    { name: 'bin/tool', content: TOOL, mode: 0o755 },
    { name: 'hard/orig', content: 'replaced orig' }
  ], 'none')
  await pushOciImage(registry.url, 'src/multi', 'v1', [l1, l2, l3], { config: { config: { Cmd: ['/bin/tool', '--serve'] } } })
}, 120_000)

afterAll(async () => {
  await registry?.stop()
  if (dir !== undefined) await rm(dir, { recursive: true, force: true })
})

const file = (content: Buffer | string, extra: Partial<TreeEntry> = {}): TreeEntry => ({
  type: 'file', mode: 0o644, uid: 0, gid: 0, nlink: 1, size: Buffer.byteLength(content), sha256: sha(content), ...extra
})
const dirEntry = (nlink: number, extra: Partial<TreeEntry> = {}): TreeEntry => ({ type: 'dir', mode: 0o755, uid: 0, gid: 0, nlink, size: 0, ...extra })
const symlink = (target: string): TreeEntry => ({ type: 'symlink', mode: 0o777, uid: 0, gid: 0, nlink: 1, size: Buffer.byteLength(target), symlink: target })

const EXPECTED: Record<string, TreeEntry> = {
  '/': dirEntry(2 + 8),
  '/abs-sym': symlink('/etc/passwd'),
  '/bin': dirEntry(2),
  '/bin/tool': file(TOOL, { mode: 0o755 }),
  '/data': dirEntry(2, { mode: 0o750, uid: 1, gid: 2 }),
  '/data/keep.txt': file('keep', { xattrs: { 'security.capability': CAP.toString('hex'), 'user.comment': Buffer.from('héllo').toString('hex') } }),
  '/data/replace.txt': file('replaced content', { mode: 0o600, uid: 1000, gid: 1000 }),
  '/dev': dirEntry(2),
  '/dev/fifo': { type: 'fifo', mode: 0o600, uid: 0, gid: 0, nlink: 1, size: 0 },
  '/dev/null': { type: 'char', mode: 0o666, uid: 0, gid: 0, nlink: 1, size: 0, rdev: (1 << 8) | 3 },
  '/dev/sda': { type: 'block', mode: 0o660, uid: 0, gid: 0, nlink: 1, size: 0, rdev: 8 << 8 },
  '/etc': dirEntry(2),
  '/etc/passwd': file('root:x:0:0::/root:/bin/sh\n'),
  '/hard': dirEntry(2),
  '/hard/link': file('shared', { nlink: 2 }),
  '/hard/link2': file('shared', { nlink: 2 }),
  '/hard/orig': file('replaced orig'),
  '/implicit': dirEntry(2),
  '/implicit/child.txt': file('child'),
  '/long': dirEntry(3),
  [`/${LONG_DIR}`]: dirEntry(2),
  [`/${LONG_FILE}`]: file('long'),
  '/opq': dirEntry(2, { mode: 0o700 }),
  '/opq/new': file('new'),
  '/out-sym': symlink('../../../../etc/shadow'),
  '/setuid': file('#!/bin/sh\n', { mode: 0o4755 }),
  '/sym': symlink('data/keep.txt')
}

describe('nydus-fs convert', () => {
  it('converts a multi-layer image into exactly the merged view', async () => {
    const res = await nydusFs(['convert', `${registry.host}/src/multi:v1`, `${registry.host}/src/multi:lazy`, '--plain-http', '--chunk-size', '64KiB'])
    expect(res.stderr).toContain('layer 3/3')
    expect(res.code, res.stderr).toBe(0)
    expect(res.stdout.trim()).toMatch(/^sha256:[a-f0-9]{64}$/)

    const { client, image, repository } = await openLazy(`${registry.host}/src/multi:lazy`)
    try {
      const tree = await treeOf(client, repository, image)
      expect(Object.fromEntries(tree)).toEqual(EXPECTED)
      // Hardlinks are one inode; the replaced original is another.
      const b = image.bootstrap
      expect(lookupPath(b, '/hard/link')).toBe(lookupPath(b, '/hard/link2'))
      expect(lookupPath(b, '/hard/orig')).not.toBe(lookupPath(b, '/hard/link'))
      expect(b.inodes.filter((i) => i.type !== 'dir').every((i) => i.mtime === MTIME)).toBe(true)
      // 200 KiB in 64 KiB chunks.
      expect(b.inodes[lookupPath(b, '/bin/tool')!].chunks).toHaveLength(4)
      // The command's program and small /etc files are prefetched, the program first.
      expect(b.prefetch[0]).toBe(lookupPath(b, '/bin/tool'))
      expect(b.prefetch).toContain(lookupPath(b, '/etc/passwd'))

      const a = image.manifest.annotations!
      expect(a[ANNOTATIONS.version]).toBe('1')
      expect(a[ANNOTATIONS.chunkSize]).toBe(String(64 * 1024))
      expect(a[ANNOTATIONS.compressor]).toBe('zstd')
      expect(a[ANNOTATIONS.rootDigest]).toBe(image.rootDigest)
      expect(a[ANNOTATIONS.bootstrapDigest]).toBe(image.bootstrapDigest)
      const src = await client.resolveImage({ registry: registry.host, repository: 'src/multi', tag: 'v1' })
      expect(a[ANNOTATIONS.sourceManifest]).toBe(src.digest)
      expect(image.manifest.config.digest).toBe(src.manifest.config.digest)
      expect(image.manifest.layers.at(-1)!.mediaType).toBe(MEDIA_TYPES.bootstrap)
      expect(image.manifest.layers.slice(0, -1).every((l) => l.mediaType === MEDIA_TYPES.blob)).toBe(true)
      // Chunks of deleted and replaced files are not stored: only what the merged tree uses.
      const used = new Set(b.inodes.flatMap((i) => i.chunks))
      expect(used.size).toBe(b.chunks.length)
      expect(b.blobs.reduce((s, x) => s + x.size, 0)).toBe(b.chunks.reduce((s, c) => s + c.storedSize, 0))
    } finally {
      await client.close()
    }

    const check = await nydusFs(['check', `${registry.host}/src/multi:lazy`, '--plain-http'])
    expect(check.code, check.stderr).toBe(0)
    expect(check.stdout).toMatch(/^ok: /)
  })

  it('stores raw chunks with --compressor none, with the same Merkle root', async () => {
    const res = await nydusFs(['convert', `${registry.host}/src/multi:v1`, `${registry.host}/src/multi:raw`, '--plain-http', '--chunk-size', '64KiB', '--compressor', 'none'])
    expect(res.code, res.stderr).toBe(0)
    const zstd = await openLazy(`${registry.host}/src/multi:lazy`)
    const raw = await openLazy(`${registry.host}/src/multi:raw`)
    try {
      expect(raw.image.compressor).toBe('none')
      expect(raw.image.bootstrap.chunks.every((c) => c.storedSize === c.size)).toBe(true)
      // The Merkle tree covers content and metadata, not how chunks are stored.
      expect(raw.image.rootDigest).toBe(zstd.image.rootDigest)
      expect(await readFile(raw.client, raw.repository, raw.image, '/bin/tool')).toEqual(TOOL)
    } finally {
      await zstd.client.close()
      await raw.client.close()
    }
    const check = await nydusFs(['check', `${registry.host}/src/multi:raw`, '--plain-http'])
    expect(check.code, check.stderr).toBe(0)
  })

  it('converts the same image to the same bytes twice (reproducible)', async () => {
    const again = await nydusFs(['convert', `${registry.host}/src/multi:v1`, `${registry.host}/src/multi:again`, '--plain-http', '--chunk-size', '64KiB'])
    expect(again.code, again.stderr).toBe(0)
    const first = await openLazy(`${registry.host}/src/multi:lazy`)
    const second = await openLazy(`${registry.host}/src/multi:again`)
    try {
      expect(second.image.digest).toBe(first.image.digest)
    } finally {
      await first.client.close()
      await second.client.close()
    }
  })

  it('picks the platform from a Docker manifest list (linux/amd64 unless --platform)', async () => {
    const amd = await pushOciImage(registry.url, 'src/multiarch', 'amd64', [await makeOciLayer([{ name: 'arch', content: 'amd64\n' }])])
    // The arm64 image in Docker's v2 media types.
    const layer = await makeOciLayer([{ name: 'arch', content: 'arm64\n' }])
    const layerDigest = await pushBlobBytes(registry.url, 'src/multiarch', layer.data)
    const config = Buffer.from(JSON.stringify({ architecture: 'arm64', os: 'linux', rootfs: { type: 'layers', diff_ids: [layer.diffId] } }))
    const configDigest = await pushBlobBytes(registry.url, 'src/multiarch', config)
    const arm = Buffer.from(JSON.stringify({
      schemaVersion: 2, mediaType: 'application/vnd.docker.distribution.manifest.v2+json',
      config: { mediaType: 'application/vnd.docker.container.image.v1+json', digest: configDigest, size: config.length },
      layers: [{ mediaType: 'application/vnd.docker.image.rootfs.diff.tar.gzip', digest: layerDigest, size: layer.data.length }]
    }))
    const put = async (ref: string, mediaType: string, body: Buffer): Promise<void> => {
      const res = await fetch(`${registry.url}/v2/src/multiarch/manifests/${ref}`, { method: 'PUT', headers: { 'content-type': mediaType }, body })
      expect(res.status).toBe(201)
    }
    await put('arm64', 'application/vnd.docker.distribution.manifest.v2+json', arm)
    const list = Buffer.from(JSON.stringify({
      schemaVersion: 2, mediaType: 'application/vnd.docker.distribution.manifest.list.v2+json',
      manifests: [
        { mediaType: 'application/vnd.docker.distribution.manifest.v2+json', digest: digestOf(arm), size: arm.length, platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } },
        { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: amd.manifestDigest, size: amd.manifest.length, platform: { os: 'linux', architecture: 'amd64' } }
      ]
    }))
    await put('multi', 'application/vnd.docker.distribution.manifest.list.v2+json', list)

    for (const [platform, want] of [[undefined, 'amd64\n'], ['linux/arm64', 'arm64\n']] as const) {
      const tag = platform === undefined ? 'lazy-default' : 'lazy-arm64'
      const res = await nydusFs(['convert', `${registry.host}/src/multiarch:multi`, `${registry.host}/src/multiarch:${tag}`, '--plain-http',
        ...(platform === undefined ? [] : ['--platform', platform])])
      expect(res.code, res.stderr).toBe(0)
      const { client, image, repository } = await openLazy(`${registry.host}/src/multiarch:${tag}`)
      try {
        expect((await readFile(client, repository, image, '/arch')).toString()).toBe(want)
      } finally {
        await client.close()
      }
    }
    const none = await nydusFs(['convert', `${registry.host}/src/multiarch:multi`, `${registry.host}/src/multiarch:x`, '--plain-http', '--platform', 'linux/s390x'])
    expect(none.code).toBe(1)
    expect(none.stderr).toContain('[OCI_ERR_BAD_MANIFEST]')
    expect(none.stderr).toContain('linux/arm64/v8')
  })

  it('rejects bad flags with exit 2', async () => {
    const bad = await nydusFs(['convert', 'a/b:c', 'a/b:d', '--chunk-size', '100KiB'])
    expect(bad.code).toBe(2)
    expect(bad.stderr).toContain('power of two')
    const comp = await nydusFs(['convert', 'a/b:c', 'a/b:d', '--compressor', 'lz4'])
    expect(comp.code).toBe(2)
    const unknown = await nydusFs(['convert', 'a/b:c', 'a/b:d', '--bogus'])
    expect(unknown.code).toBe(2)
    const help = await nydusFs(['convert', '--help'])
    expect(help.code).toBe(0)
    expect(help.stdout).toContain('--chunk-dict')
  })
})
