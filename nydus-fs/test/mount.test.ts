// nydus-fs mount on a synthetic multi-layer image (whiteouts, an opaque directory,
// hardlinks, symlinks, devices, xattrs, a replaced file, multi-chunk files): the mounted
// tree is exactly the merged view, read-only; the access order recorded on a first mount
// is prefetched by the next; mount and umount behave as commands (daemonize, errors,
// foreground, external unmount). Mounts run as their own processes; reads come from others.

import { createHash } from 'node:crypto'
import { cp, mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { makeBlob, makeOciLayer, pushOciImage, runTool, startRegistry, waitFor, type RegistryHandle } from '@naiad/testkit'

import { accessLogPath } from '../src/mount/index.ts'
import { openLazy, treeOf, type TreeEntry as BootstrapEntry } from './convert-helpers.ts'
import { convert, isMounted, readFiles, startForeground, TestMount, walkTree, type TreeEntry } from './fixtures/mount-helpers.ts'

const sha = (b: Buffer | string): string => createHash('sha256').update(b).digest('hex')
const BIG = makeBlob(3 * 1024 * 1024 + 4321, 'mount-big')
const MID = makeBlob(700 * 1024, 'mount-mid')
const LONG_XATTR = Buffer.alloc(300, 'x')

let dir: string
let registry: RegistryHandle
let ref: string
const mounts: TestMount[] = []

async function mount(name: string, args: string[] = [], cacheDir = join(dir, `cache-${name}`)): Promise<TestMount> {
  const m = await TestMount.start(ref, join(dir, `mnt-${name}`), { cacheDir, runDir: join(dir, 'run'), args: ['--daemon', 'none', ...args] })
  mounts.push(m)
  return m
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'nfs-mount-'))
  registry = await startRegistry(join(dir, 'registry'))
  const l1 = await makeOciLayer([
    { name: 'etc/', type: 'directory' },
    { name: 'etc/passwd', content: 'root:x:0:0::/root:/bin/sh\n' },
    { name: 'etc/hostname', content: 'lazy\n' },
    { name: 'bin/', type: 'directory' },
    { name: 'bin/tool', content: 'tool v1', mode: 0o755 },
    { name: 'data/', type: 'directory', mode: 0o750, uid: 1, gid: 2 },
    { name: 'data/big.bin', content: BIG },
    { name: 'data/mid.bin', content: MID },
    { name: 'data/keep.txt', content: 'keep', xattrs: { 'user.comment': 'héllo', 'user.long': LONG_XATTR } },
    { name: 'data/gone.txt', content: 'gone' },
    { name: 'data/replace.txt', content: 'old' },
    { name: 'opq/', type: 'directory' },
    { name: 'opq/a', content: 'a' },
    { name: 'hard/', type: 'directory' },
    { name: 'hard/orig', content: 'shared' },
    { name: 'hard/link', type: 'link', linkname: 'hard/orig' },
    { name: 'sym', type: 'symlink', linkname: 'data/keep.txt', mode: 0o777 },
    { name: 'dev/', type: 'directory' },
    { name: 'dev/null', type: 'character-device', devmajor: 1, devminor: 3, mode: 0o666 },
    { name: 'dev/fifo', type: 'fifo', mode: 0o600 },
    { name: 'empty', content: '' }
  ], 'gzip')
  const l2 = await makeOciLayer([
    { name: 'data/.wh.gone.txt' },
    { name: 'opq/', type: 'directory', mode: 0o700 },
    { name: 'opq/.wh..wh..opq' },
    { name: 'opq/new', content: 'new' },
    { name: 'data/replace.txt', content: 'replaced content', mode: 0o600, uid: 1000, gid: 1000 },
    { name: 'hard/link2', type: 'link', linkname: 'hard/orig' },
    { name: 'setuid', content: '#!/bin/sh\n', mode: 0o4755 }
  ], 'zstd')
  await pushOciImage(registry.url, 'src/mount', 'v1', [l1, l2], { config: { config: { Cmd: ['/bin/tool'] } } })
  ref = `${registry.host}/src/mount:lazy`
  await convert(`${registry.host}/src/mount:v1`, ref, ['--chunk-size', '256KiB'])
}, 120_000)

afterAll(async () => {
  for (const m of mounts) await m.cleanup()
  await registry?.stop()
  if (dir !== undefined) await rm(dir, { recursive: true, force: true })
})

describe('nydus-fs mount', () => {
  it('shows exactly the merged tree: metadata, contents, xattrs, symlinks, hardlinks, devices', async () => {
    const m = await mount('tree')
    const mounted = await walkTree(m.mountpoint)
    const { client, image, repository } = await openLazy(ref)
    let expected: Map<string, BootstrapEntry>
    try {
      expected = await treeOf(client, repository, image)
    } finally {
      await client.close()
    }
    expect(Object.keys(mounted).sort()).toEqual([...expected.keys()].sort())
    for (const [path, want] of expected) {
      const got = mounted[path]
      const shape = (e: { type: string; mode: number; uid: number; gid: number }, extra: Partial<TreeEntry>): Partial<TreeEntry> =>
        ({ type: e.type, mode: e.mode, uid: e.uid, gid: e.gid, ...extra })
      expect(shape(got, {
        size: got.type === 'file' || got.type === 'symlink' ? got.size : undefined,
        nlink: got.type === 'dir' ? undefined : got.nlink,
        symlink: got.symlink, sha256: got.sha256, xattrs: got.xattrs, rdev: got.rdev
      }), path).toEqual(shape(want, {
        size: want.type === 'file' || want.type === 'symlink' ? want.size : undefined,
        nlink: want.type === 'dir' ? undefined : want.nlink,
        symlink: want.symlink, sha256: want.sha256, xattrs: want.xattrs, rdev: want.rdev
      }))
    }
    // The merged view: whiteouts, the opaque directory, the replaced file, hardlinks as one inode.
    expect(mounted['/data/gone.txt']).toBeUndefined()
    expect(mounted['/opq/a']).toBeUndefined()
    expect(mounted['/data/replace.txt'].sha256).toBe(sha('replaced content'))
    expect(mounted['/data/big.bin'].sha256).toBe(sha(BIG))
    expect(mounted['/data/keep.txt'].xattrs!['user.long']).toBe(LONG_XATTR.toString('hex'))
    expect(mounted['/hard/link'].nlink).toBe(3)
    const ino = await runTool('stat', ['-c', '%i', m.path('hard/orig'), m.path('hard/link'), m.path('hard/link2')])
    expect(new Set(ino.stdout.trim().split('\n')).size).toBe(1)
    // Reading everything fetched every chunk once: nothing unverified, nothing twice.
    const s = await m.stats()
    expect(s.fetch.chunks).toBe(s.image.chunks)
    expect(s.fetch.bytes).toBe(s.image.dataBytes)
    expect(s.fetch.digestErrors).toBe(0)
    expect(s.reads.errors).toBe(0)
  })

  it('is read-only: every write fails with EROFS', async () => {
    const m = await mount('ro')
    for (const cmd of [
      `echo x > ${m.path('new')}`, `echo x >> ${m.path('etc/passwd')}`, `mkdir ${m.path('d')}`, `rm ${m.path('etc/hostname')}`,
      `mv ${m.path('etc/hostname')} ${m.path('etc/h2')}`, `chmod 600 ${m.path('etc/passwd')}`, `ln -s x ${m.path('l')}`, `touch ${m.path('etc/passwd')}`
    ]) {
      const r = await runTool('sh', ['-c', cmd])
      expect(r.code, cmd).not.toBe(0)
      expect(r.stderr, cmd).toMatch(/Read-only file system/)
    }
    const st = await runTool('stat', ['-f', '-c', '%c %d', m.mountpoint])
    expect(st.stdout.trim().split(' ')[1]).toBe('0') // no free inodes
    const [passwd] = await readFiles([m.path('etc/passwd')])
    expect(passwd.sha256).toBe(sha('root:x:0:0::/root:/bin/sh\n'))
  })

  it('records the access order on the first mount and prefetches it on the next', async () => {
    const first = await mount('rec1', ['--no-prefetch'])
    const order = ['data/mid.bin', 'etc/hostname', 'data/big.bin']
    for (const p of order) expect((await readFiles([first.path(p)]))[0].ok).toBe(true)
    const s1 = await first.stats()
    expect(s1.prefetch.accessLog).toBe('recording')
    expect((await first.umount()).code).toBe(0)
    const log = JSON.parse(await readFile(accessLogPath(first.cacheDir, s1.imageDigest), 'utf8')) as { files: string[] }
    expect(log.files).toEqual(order.map((p) => `/${p}`))

    // A fresh chunk cache with the same access log: the next mount fetches those files by itself.
    const cacheDir = join(dir, 'cache-rec2')
    await cp(join(first.cacheDir, 'access'), join(cacheDir, 'access'), { recursive: true })
    const second = await mount('rec2', [], cacheDir)
    await waitFor(async () => (await second.stats()).prefetch.done, 30_000, 'prefetch to finish')
    const s2 = await second.stats()
    expect(s2.prefetch.accessLog).toBe('replayed')
    expect(s2.prefetch.errors).toBe(0)
    expect(s2.fetch.prefetchBytes).toBeGreaterThanOrEqual(BIG.length / 2)
    // The recorded files, and the bootstrap's prefetch table (the image's command, small /etc files).
    const reads = await readFiles([...order, 'bin/tool', 'etc/passwd'].map((p) => second.path(p)))
    expect(reads.every((r) => r.ok)).toBe(true)
    expect(reads[2].sha256).toBe(sha(BIG))
    // Everything the container reads was there already.
    expect((await second.stats()).fetch.bytes).toBe(s2.fetch.bytes)
  })

  it('mount reports errors before ready with a non-zero exit, and leaves nothing mounted', async () => {
    const runDir = join(dir, 'run')
    const missing = await TestMount.mountCommand(`${registry.host}/src/mount:nope`, join(dir, 'mnt-missing'), { cacheDir: join(dir, 'c'), runDir })
    expect(missing.code).toBe(1)
    expect(missing.stderr).toMatch(/OCI_ERR_REGISTRY|404|MANIFEST_UNKNOWN/)
    expect(await isMounted(join(dir, 'mnt-missing'))).toBe(false)
    const notLazy = await TestMount.mountCommand(`${registry.host}/src/mount:v1`, join(dir, 'mnt-notlazy'), { cacheDir: join(dir, 'c'), runDir })
    expect(notLazy.code).toBe(1)
    expect(notLazy.stderr).toContain('NFS_ERR_NOT_LAZY')
    const badFlag = await TestMount.mountCommand(ref, join(dir, 'mnt-x'), { cacheDir: join(dir, 'c'), runDir, args: ['--window-size', '3MiB'] })
    expect(badFlag.code).toBe(2)
    expect(badFlag.stderr).toContain('--window-size')
    const badRef = await TestMount.mountCommand('UPPER/case ref', join(dir, 'mnt-x'), { cacheDir: join(dir, 'c'), runDir })
    expect(badRef.code).toBe(2)
    const notMounted = await TestMount.prototype.umount.call(new TestMount(join(dir, 'mnt-x'), '', runDir))
    expect(notMounted.code).toBe(1)
    expect(notMounted.stderr).toContain('NFS_ERR_MOUNT')
  })

  it('--foreground stays until SIGTERM, then unmounts and exits 0', async () => {
    const mp = join(dir, 'mnt-fg')
    const p = startForeground([ref, mp, '--plain-http', '--daemon', 'none', '--cache-dir', join(dir, 'cache-fg')], { NAIAD_RUN_DIR: join(dir, 'run') })
    try {
      await p.ready
      expect((await readFiles([join(mp, 'etc/hostname')]))[0].sha256).toBe(sha('lazy\n'))
      p.proc.kill('SIGTERM')
      expect(await p.exited).toBe(0)
      expect(await isMounted(mp)).toBe(false)
    } finally {
      p.proc.kill('SIGKILL')
      await runTool('fusermount', ['-uz', mp])
    }
  })

  it('after its process was killed: umount cleans up, a new mount takes over; a live mount is not mounted over', async () => {
    const m = await mount('killed')
    process.kill((await m.stats()).pid, 'SIGKILL')
    await waitFor(async () => (await readFiles([m.path('etc/hostname')]))[0].code === 'ENOTCONN', 5_000, 'the mount to go stale')
    const again = await TestMount.start(ref, m.mountpoint, { cacheDir: m.cacheDir, runDir: m.runDir, args: ['--daemon', 'none'] })
    expect((await readFiles([again.path('etc/hostname')]))[0].sha256).toBe(sha('lazy\n'))
    const over = await TestMount.mountCommand(ref, m.mountpoint, { cacheDir: m.cacheDir, runDir: m.runDir })
    expect(over.code).toBe(1)
    expect(over.stderr).toContain('already mounted')
    process.kill((await again.stats()).pid, 'SIGKILL')
    await waitFor(async () => (await readFiles([m.path('etc/hostname')]))[0].code === 'ENOTCONN', 5_000, 'the mount to go stale')
    expect((await m.umount()).code).toBe(0)
    expect(await isMounted(m.mountpoint)).toBe(false)
  })

  it('exits when unmounted behind its back (fusermount -u)', async () => {
    const m = await mount('ext')
    const { pid } = await m.stats()
    expect((await runTool('fusermount', ['-u', m.mountpoint])).code).toBe(0)
    await waitFor(() => { try { process.kill(pid, 0); return false } catch { return true } }, 10_000, 'the mount process to exit')
    expect(await isMounted(m.mountpoint)).toBe(false)
  })
})
