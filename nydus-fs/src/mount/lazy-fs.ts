// The file system a mount serves: fuse-native's path-based operations over a verified
// bootstrap. Metadata comes from memory; file contents from the chunk fetcher, which
// hands out only verified bytes (from memory, a verified disk chunk, or the network). Read-only: every write operation answers EROFS.

import { dirname } from 'node:path'

import Fuse from 'fuse-native'
import type { Logger } from 'pino'
import { NaiadError, type Bootstrap, type Inode, type InodeType } from '@naiad/proto/contracts'

import type { ChunkFetcher } from '../fetch/chunk-fetcher.ts'
import { lookupPath } from '../image/tree.ts'
import type { AccessRecorder } from './access-log.ts'
import { LatencyHistogram, type ReadStats } from './stats.ts'

const TYPE_BITS: Record<InodeType, number> = {
  file: 0o100000, dir: 0o040000, symlink: 0o120000, char: 0o020000, block: 0o060000, fifo: 0o010000, socket: 0o140000
}
const O_ACCMODE = 3
const W_OK = 2
/** Preferred I/O size reported in st_blksize: big reads cost fewer FUSE round trips. */
const BLKSIZE = 128 * 1024

export interface LazyFsComponents {
  bootstrap: Bootstrap
  fetcher: ChunkFetcher
  /** Set on the first mount of an image: notes the order files are read in. */
  recorder?: AccessRecorder
  logger: Logger
}

export interface LazyFsOptions {
  /** A read that cannot get its data within this answers EIO. */
  readTimeoutMs: number
  /** Chunks fetched ahead of a sequential reader (default 4). */
  readaheadChunks?: number
}

interface Handle {
  ino: number
  /** Where the next sequential read would start. */
  next: number
}

export class LazyFs {
  readonly reads = { count: 0, bytes: 0, errors: 0, latency: new LatencyHistogram() }
  /** Set on unmount: reads answer EIO from then on. */
  closing = false
  private readonly b: Bootstrap
  private readonly fetcher: ChunkFetcher
  private readonly recorder: AccessRecorder | undefined
  private readonly logger: Logger
  private readonly options: Required<LazyFsOptions>
  private readonly paths = new Map<string, number>()
  /** Start offset of each chunk of a file, and the file size last: by inode. */
  private readonly offsets = new Map<number, Float64Array>()
  private readonly handles = new Map<number, Handle>()
  private nextFd = 1
  private readonly totalBytes: number

  constructor(components: LazyFsComponents, options: LazyFsOptions) {
    this.b = components.bootstrap
    this.fetcher = components.fetcher
    this.recorder = components.recorder
    this.logger = components.logger
    this.options = { readaheadChunks: 4, ...options }
    this.totalBytes = this.b.inodes.reduce((n, i) => n + (i.type === 'file' ? i.size : 0), 0)
  }

  readStats(): ReadStats {
    const l = this.reads.latency
    return {
      count: this.reads.count, bytes: this.reads.bytes, errors: this.reads.errors,
      latencyMs: { count: l.count, sum: Math.round(l.sum), max: Math.round(l.max), p50: Math.round(l.quantile(0.5)), p90: Math.round(l.quantile(0.9)), p99: Math.round(l.quantile(0.99)) }
    }
  }

  lookup(path: string): number | undefined {
    let ino = this.paths.get(path)
    if (ino === undefined) {
      ino = lookupPath(this.b, path)
      if (ino !== undefined) this.paths.set(path, ino)
    }
    return ino
  }

  stat(ino: number): Fuse.Stat {
    const n = this.b.inodes[ino]
    const t = Math.max(0, n.mtime) * 1000
    return {
      mode: TYPE_BITS[n.type as InodeType] | n.mode,
      uid: n.uid,
      gid: n.gid,
      size: n.type === 'dir' ? 4096 : n.size,
      nlink: Math.max(1, n.nlink),
      // Inode numbers start at 1: some tools take 0 for an empty directory slot.
      ino: ino + 1,
      rdev: n.rdev,
      blksize: BLKSIZE,
      blocks: Math.ceil(n.size / 512),
      atime: t,
      mtime: t,
      ctime: t
    }
  }

  private chunkOffsets(ino: number, inode: Inode): Float64Array {
    let o = this.offsets.get(ino)
    if (o === undefined) {
      o = new Float64Array(inode.chunks.length + 1)
      for (let i = 0; i < inode.chunks.length; i++) o[i + 1] = o[i] + this.b.chunks[inode.chunks[i]].size
      this.offsets.set(ino, o)
    }
    return o
  }

  /** Index of the chunk holding byte `pos` (offsets ascending, pos < file size). */
  private static chunkAt(offsets: Float64Array, pos: number): number {
    let lo = 0
    let hi = offsets.length - 2
    while (lo < hi) {
      const mid = (lo + hi + 1) >>> 1
      if (offsets[mid] <= pos) lo = mid
      else hi = mid - 1
    }
    return lo
  }

  /**
   * Reads `len` bytes at `pos` of a file into `buf`; the count (0 at the end), at once when
   * memory has the bytes. A read within one chunk that memory or a verified disk chunk has
   * (most reads) takes no promise but the disk read's.
   */
  readInto(ino: number, buf: Buffer, len: number, pos: number, sequential: boolean): number | Promise<number> {
    const inode = this.b.inodes[ino]
    if (inode.type !== 'file') throw new NaiadError('NFS_ERR_MOUNT', `inode ${ino} is not a file`)
    if (pos >= inode.size || len === 0) return 0
    const end = Math.min(inode.size, pos + len)
    const offsets = this.chunkOffsets(ino, inode)
    const first = LazyFs.chunkAt(offsets, pos)
    const last = LazyFs.chunkAt(offsets, end - 1)
    if (first === last) {
      const r = this.fetcher.readLocal(inode.chunks[first], buf, 0, pos - offsets[first], end - offsets[first])
      if (r === true) return this.done(inode, last, sequential, end - pos)
      if (r !== false) {
        return r.then((ok) => ok
          ? this.done(inode, last, sequential, end - pos)
          : this.readChunks(inode, buf, pos, end, offsets, first, last, sequential))
      }
    }
    return this.readChunks(inode, buf, pos, end, offsets, first, last, sequential)
  }

  /** Any read: each chunk's part straight into the reply buffer, the ones at hand first. */
  private async readChunks(inode: Inode, buf: Buffer, pos: number, end: number, offsets: Float64Array, first: number, last: number, sequential: boolean): Promise<number> {
    // From memory, or one positional read of a disk chunk verified before. What neither has
    // is fetched (or verified) together.
    let missing: number[] | undefined
    let disk: Array<Promise<boolean>> | undefined
    let diskK: number[] | undefined
    for (let k = first; k <= last; k++) {
      const from = Math.max(pos, offsets[k]) - offsets[k]
      const to = Math.min(end, offsets[k + 1]) - offsets[k]
      const r = this.fetcher.readLocal(inode.chunks[k], buf, offsets[k] + from - pos, from, to)
      if (r === true) continue
      if (r === false) (missing ??= []).push(k)
      else { (disk ??= []).push(r); (diskK ??= []).push(k) }
    }
    if (disk !== undefined && diskK !== undefined) {
      const ok = await Promise.all(disk)
      for (let i = 0; i < ok.length; i++) if (!ok[i]) (missing ??= []).push(diskK[i])
    }
    if (missing !== undefined) {
      const data = await this.fetcher.getChunks(missing.map((k) => inode.chunks[k]), { priority: 'on-demand', timeoutMs: this.options.readTimeoutMs })
      for (let i = 0; i < missing.length; i++) {
        const k = missing[i]
        const from = Math.max(pos, offsets[k]) - offsets[k]
        const to = Math.min(end, offsets[k + 1]) - offsets[k]
        data[i].copy(buf, offsets[k] + from - pos, from, to)
      }
    }
    return this.done(inode, last, sequential, end - pos)
  }

  /** After a read that ended in chunk `last`: readahead for a sequential reader; `n` back. */
  private done(inode: Inode, last: number, sequential: boolean, n: number): number {
    if (sequential) {
      // One request per chunk ahead, so that they travel in parallel: a single stream from a
      // registry is slower than the disk behind it.
      const stop = Math.min(inode.chunks.length, last + 1 + this.options.readaheadChunks)
      for (let k = last + 1; k < stop; k++) {
        const c = inode.chunks[k]
        if (!this.fetcher.isCachedOrPending(c)) void this.fetcher.getChunks([c], { priority: 'on-demand' }).catch(() => {})
      }
    }
    return n
  }

  operations(): Fuse.Operations {
    const EROFS = (...args: unknown[]): void => { (args[args.length - 1] as (e: number) => void)(Fuse.EROFS) }
    return {
      getattr: (path, cb) => {
        const ino = this.lookup(path)
        if (ino === undefined) return cb(Fuse.ENOENT)
        cb(0, this.stat(ino))
      },
      access: (path, mode, cb) => {
        if (this.lookup(path) === undefined) return cb(Fuse.ENOENT)
        cb((mode & W_OK) !== 0 ? Fuse.EROFS : 0)
      },
      readdir: (path, cb) => {
        const ino = this.lookup(path)
        if (ino === undefined) return cb(Fuse.ENOENT)
        const dir = this.b.inodes[ino]
        if (dir.type !== 'dir') return cb(Fuse.ENOTDIR)
        const parent = path === '/' ? ino : this.lookup(dirname(path)) ?? ino
        const names = ['.', '..']
        const stats = [this.stat(ino), this.stat(parent)]
        for (const e of dir.entries) {
          names.push(e.name)
          stats.push(this.stat(e.ino))
        }
        cb(0, names, stats)
      },
      readlink: (path, cb) => {
        const ino = this.lookup(path)
        if (ino === undefined) return cb(Fuse.ENOENT)
        const n = this.b.inodes[ino]
        if (n.type !== 'symlink') return cb(Fuse.EINVAL)
        cb(0, n.symlink)
      },
      open: (path, flags, cb) => {
        const ino = this.lookup(path)
        if (ino === undefined) return cb(Fuse.ENOENT)
        if ((flags & O_ACCMODE) !== 0) return cb(Fuse.EROFS)
        if (this.b.inodes[ino].type === 'dir') return cb(Fuse.EISDIR)
        const fd = this.nextFd
        this.nextFd = this.nextFd >= 0x7fffffff ? 1 : this.nextFd + 1
        this.handles.set(fd, { ino, next: 0 })
        cb(0, fd)
      },
      release: (_path, fd, cb) => {
        this.handles.delete(fd)
        cb(0)
      },
      read: (path, fd, buf, len, pos, cb) => {
        if (this.closing) return cb(Fuse.EIO)
        const handle = this.handles.get(fd)
        const ino = handle?.ino ?? this.lookup(path)
        if (ino === undefined) return cb(Fuse.ENOENT)
        if (this.b.inodes[ino].type !== 'file') return cb(Fuse.EISDIR)
        this.recorder?.record(ino, path)
        const sequential = handle !== undefined && handle.next === pos && pos > 0
        const t0 = performance.now()
        const ok = (n: number): void => {
          if (handle !== undefined) handle.next = pos + n
          this.reads.count++
          this.reads.bytes += n
          this.reads.latency.observe(performance.now() - t0)
          cb(n)
        }
        const failed = (err: unknown): void => {
          this.reads.count++
          this.reads.errors++
          this.reads.latency.observe(performance.now() - t0)
          const e = err as { code?: string; message?: string }
          if (!this.closing) this.logger.warn({ path, pos, len, code: e.code, err: e.message }, 'read failed: EIO')
          cb(Fuse.EIO)
        }
        let r: number | Promise<number>
        try {
          r = this.readInto(ino, buf, len, pos, sequential)
        } catch (err) {
          failed(err)
          return
        }
        if (typeof r === 'number') ok(r)
        else r.then(ok, failed)
      },
      getxattr: (path, name, _position, cb) => {
        const ino = this.lookup(path)
        if (ino === undefined) return cb(Fuse.ENOENT)
        const x = this.b.inodes[ino].xattrs.find((a) => a.name === name)
        cb(0, x === undefined ? null : Buffer.from(x.value))
      },
      listxattr: (path, cb) => {
        const ino = this.lookup(path)
        if (ino === undefined) return cb(Fuse.ENOENT)
        cb(0, this.b.inodes[ino].xattrs.map((x) => x.name))
      },
      statfs: (_path, cb) => {
        cb(0, {
          bsize: 4096, frsize: 4096, blocks: Math.ceil(this.totalBytes / 4096), bfree: 0, bavail: 0,
          files: this.b.inodes.length, ffree: 0, favail: 0, fsid: 0, flag: 1 /* ST_RDONLY */, namemax: 255
        })
      },
      write: (_p, _fd, _buf, _len, _pos, cb) => cb(Fuse.EROFS),
      create: EROFS, truncate: EROFS, ftruncate: EROFS, utimens: EROFS, chown: EROFS, chmod: EROFS, mknod: EROFS,
      unlink: EROFS, rename: EROFS, link: EROFS, symlink: EROFS, mkdir: EROFS, rmdir: EROFS, setxattr: EROFS, removexattr: EROFS
    }
  }
}
