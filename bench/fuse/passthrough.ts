// A bare read-only passthrough FUSE file system: every operation maps to one call on a source
// directory, nothing cached or verified in between. It uses the binding nydus-fs uses
// (fuse-native) with the same mount options (nydus-fs/src/mount/fuse-host.ts: ro, use_ino,
// kernel cache, default permissions, one hour entry and attribute timeouts), so that the
// fuse-read scenario can measure how close nydus-fs comes to what FUSE in Node allows.
//
//   node bench/fuse/passthrough.ts SOURCE MOUNTPOINT
//
// Prints {"ready":true} once mounted; unmounts and exits on SIGINT, SIGTERM or when stdin
// closes. Never read the mount from this process: FUSE requests are answered on its event
// loop, so a synchronous read here would deadlock.

import { close, lstat, open, read, readdir, readlink, statfs, type Stats } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

import Fuse from 'fuse-native'

/** fuse-native takes negative errnos; Node's errors carry the positive one. */
const errno = (err: NodeJS.ErrnoException): number => -(Math.abs(err.errno ?? 5))

function toStat(s: Stats): Fuse.Stat {
  return {
    mode: s.mode, uid: s.uid, gid: s.gid, size: s.size, nlink: s.nlink, ino: s.ino, rdev: s.rdev,
    blksize: s.blksize, blocks: s.blocks, atime: s.atime, mtime: s.mtime, ctime: s.ctime
  }
}

export function passthroughOperations(source: string): Fuse.Operations {
  const real = (path: string): string => join(source, path)
  const EROFS = (...args: unknown[]): void => { (args[args.length - 1] as (e: number) => void)(Fuse.EROFS) }
  return {
    getattr: (path, cb) => { lstat(real(path), (err, s) => err === null ? cb(0, toStat(s)) : cb(errno(err))) },
    access: (_path, mode, cb) => { cb((mode & 2) !== 0 ? Fuse.EROFS : 0) },
    readdir: (path, cb) => {
      readdir(real(path), (err, names) => err === null ? cb(0, ['.', '..', ...names]) : cb(errno(err)))
    },
    readlink: (path, cb) => { readlink(real(path), (err, target) => err === null ? cb(0, target) : cb(errno(err))) },
    open: (path, flags, cb) => {
      if ((flags & 3) !== 0) return cb(Fuse.EROFS)
      open(real(path), 'r', (err, fd) => err === null ? cb(0, fd) : cb(errno(err)))
    },
    release: (_path, fd, cb) => { close(fd, () => cb(0)) },
    read: (_path, fd, buf, len, pos, cb) => {
      read(fd, buf, 0, len, pos, (err, n) => cb(err === null ? n : errno(err)))
    },
    statfs: (path, cb) => {
      statfs(real(path), (err, s) => err !== null
        ? cb(errno(err))
        : cb(0, { bsize: s.bsize, frsize: s.bsize, blocks: s.blocks, bfree: 0, bavail: 0, files: s.files, ffree: 0, favail: 0, fsid: 0, flag: 1, namemax: 255 }))
    },
    write: (_p, _fd, _buf, _len, _pos, cb) => cb(Fuse.EROFS),
    create: EROFS, truncate: EROFS, ftruncate: EROFS, utimens: EROFS, chown: EROFS, chmod: EROFS, mknod: EROFS,
    unlink: EROFS, rename: EROFS, link: EROFS, symlink: EROFS, mkdir: EROFS, rmdir: EROFS, setxattr: EROFS, removexattr: EROFS
  }
}

/** Mounts `source` read-only at `mountpoint` with nydus-fs's options; resolves the unmount. */
export async function mountPassthrough(source: string, mountpoint: string): Promise<() => Promise<void>> {
  const cacheTimeoutSec = 3600
  const root = process.getuid?.() === 0
  const fuse = new Fuse(mountpoint, passthroughOperations(source), {
    force: true,
    mkdir: true,
    // As in nydus-fs: fuse-native appends fsname to `-o` verbatim, so extra options ride in it.
    fsname: `passthrough,ro,use_ino,negative_timeout=${cacheTimeoutSec}${root ? ',suid' : ''}`,
    subtype: 'passthrough',
    allowOther: root,
    defaultPermissions: true,
    kernelCache: true,
    entryTimeout: cacheTimeoutSec,
    attrTimeout: cacheTimeoutSec,
    timeout: { default: 30_000, read: 40_000 }
  })
  await new Promise<void>((resolve, reject) => fuse.mount((err) => (err === null || err === undefined ? resolve() : reject(err))))
  return () => new Promise<void>((resolve, reject) => fuse.unmount((err) => (err === null || err === undefined ? resolve() : reject(err))))
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const [source, mountpoint] = process.argv.slice(2)
  if (source === undefined || mountpoint === undefined) {
    process.stderr.write('usage: node bench/fuse/passthrough.ts SOURCE MOUNTPOINT\n')
    process.exit(2)
  }
  const unmount = await mountPassthrough(source, mountpoint)
  process.stdout.write(`${JSON.stringify({ ready: true, mountpoint })}\n`)
  let stopping = false
  const stop = (): void => {
    if (stopping) return
    stopping = true
    unmount().then(() => process.exit(0), (err: unknown) => {
      process.stderr.write(`passthrough: unmount ${mountpoint}: ${(err as Error).message}\n`)
      process.exit(1)
    })
  }
  process.once('SIGINT', stop)
  process.once('SIGTERM', stop)
  process.stdin.on('end', stop).resume()
}
