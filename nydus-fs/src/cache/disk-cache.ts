// The on-disk tier of the chunk cache: one file per chunk, uncompressed, at
// `<dir>/<first two hex digits>/<sha256 hex>`. Files appear by rename, so a reader never
// sees half a chunk. The cache holds at most `maxBytes`: past it, the least recently used
// chunk files go first.
//
// Trust: a chunk file is hashed in full the first time this process uses it; a damaged or
// tampered file is dropped (and fetched anew) rather than served. Once it matched, the file's
// identity (inode, size, mtime, ctime, taken before the bytes were hashed) is remembered in
// memory, and later reads of any range of it are positional reads of just that range, served
// only if the file still has that identity after the read: any change made through the
// kernel (write, truncate, replace, utimes) moves ctime, so it sends the chunk back to a full
// verification. A file changed within a clock tick of its last change could keep its ctime,
// so a file is trusted this way only once it has been still for STAMP_SETTLE_MS; until then
// every use hashes it again. See docs/nydus-fs.md, "What is verified when".

import { createHash } from 'node:crypto'
import { close, fstat, fstatSync, open, read, type Stats } from 'node:fs'
import { access, mkdir, readdir, rename, rm, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'

import { CHUNK_SIZE } from '@naiad/proto/contracts'

/** A file must have been unchanged this long before its identity stands in for its hash. */
export const STAMP_SETTLE_MS = 1000

/** What identifies the exact file that was verified. */
interface Stamp {
  ino: number
  size: number
  mtimeMs: number
  ctimeMs: number
}

/** An open, verified chunk file. Closed once evicted from the pool and no read uses it. */
interface OpenChunk {
  fd: number
  stamp: Stamp
  users: number
  closing: boolean
}

function stampOf(st: Stats): Stamp {
  return { ino: st.ino, size: st.size, mtimeMs: st.mtimeMs, ctimeMs: st.ctimeMs }
}

function sameStamp(a: Stamp, st: Stats): boolean {
  return a.ino === st.ino && a.size === st.size && a.mtimeMs === st.mtimeMs && a.ctimeMs === st.ctimeMs
}

function openP(path: string): Promise<number> {
  return new Promise((resolve, reject) => { open(path, 'r', (err, fd) => err === null ? resolve(fd) : reject(err)) })
}

function fstatP(fd: number): Promise<Stats> {
  return new Promise((resolve, reject) => { fstat(fd, (err, st) => err === null ? resolve(st) : reject(err)) })
}

function closeQuietly(fd: number): void {
  close(fd, () => {})
}

/** Reads exactly `len` bytes at `pos` into `buf` at `off`; false on a short read (the file shrank). */
function readExactly(fd: number, buf: Uint8Array, off: number, len: number, pos: number): Promise<boolean> {
  return new Promise((resolve, reject) => {
    const step = (done: number): void => {
      if (done === len) { resolve(true); return }
      read(fd, buf, off + done, len - done, pos + done, (err, n) => {
        if (err !== null) reject(err)
        else if (n === 0) resolve(false)
        else step(done + n)
      })
    }
    step(0)
  })
}

export interface DiskCacheOptions {
  /** Bytes of chunk writes queued at once; beyond it new chunks are not written (still served). */
  maxPendingBytes?: number
  /** Bytes of chunk files kept; the least recently used go when a write would pass it. */
  maxBytes?: number
  /** Verified chunk files kept open for range reads (least recently used closed first). */
  maxOpenFiles?: number
  /** How long a file must have been unchanged before its identity stands in for its hash. */
  settleMs?: number
}

export class DiskChunkCache {
  readonly dir: string
  private readonly maxPendingBytes: number
  private pendingBytes = 0
  private readonly pending = new Set<Promise<void>>()
  private seq = 0
  /** Chunks this process wrote or read successfully: skips rewriting them. */
  private readonly known = new Set<string>()
  /** Sizes of the chunk files, least recently used first (a Map keeps insertion order). */
  private readonly lru = new Map<string, number>()
  private bytes = 0
  private readonly maxBytes: number
  private readonly indexed: Promise<void>
  /** Chunks this process hashed from disk, and the identity of the file that matched. */
  private readonly verified = new Map<string, Stamp>()
  /** Open verified files, least recently used first. */
  private readonly open = new Map<string, OpenChunk>()
  /** Full verifications under way: concurrent first uses of a chunk hash it once. */
  private readonly verifying = new Map<string, Promise<Buffer | undefined>>()
  private readonly maxOpenFiles: number
  private readonly settleMs: number
  writes = 0
  writeErrors = 0
  corrupt = 0
  evictions = 0
  /** Chunk files hashed in full (first use, or after their file changed). */
  verifications = 0
  /** Reads served from a verified file without hashing it again. */
  rangeReads = 0
  /** Verified files found changed since (sent back to a full verification). */
  changed = 0

  constructor(dir: string, options: DiskCacheOptions = {}) {
    this.dir = dir
    this.maxPendingBytes = options.maxPendingBytes ?? 64 * 1024 * 1024
    this.maxBytes = options.maxBytes ?? 10 * 1024 * 1024 * 1024
    this.maxOpenFiles = Math.max(1, options.maxOpenFiles ?? 1024)
    this.settleMs = options.settleMs ?? STAMP_SETTLE_MS
    this.indexed = this.index().catch(() => {})
  }

  /** Learns what earlier mounts left in the directory, oldest modification first. */
  private async index(): Promise<void> {
    const found: Array<{ hex: string; size: number; mtime: number }> = []
    for (const sub of await readdir(this.dir).catch(() => [] as string[])) {
      if (!/^[0-9a-f]{2}$/.test(sub)) continue
      for (const name of await readdir(join(this.dir, sub)).catch(() => [] as string[])) {
        if (!/^[0-9a-f]{64}$/.test(name)) continue
        const st = await stat(join(this.dir, sub, name)).catch(() => undefined)
        if (st !== undefined) found.push({ hex: name, size: st.size, mtime: st.mtimeMs })
      }
    }
    found.sort((a, b) => a.mtime - b.mtime)
    for (const f of found) if (!this.lru.has(f.hex)) this.account(f.hex, f.size)
    await this.evict()
  }

  private account(hex: string, size: number): void {
    const old = this.lru.get(hex)
    if (old !== undefined) {
      this.lru.delete(hex)
      this.bytes -= old
    }
    this.lru.set(hex, size)
    this.bytes += size
  }

  private async evict(): Promise<void> {
    for (const [hex, size] of this.lru) {
      if (this.bytes <= this.maxBytes) return
      this.lru.delete(hex)
      this.known.delete(hex)
      this.forget(hex)
      this.bytes -= size
      this.evictions++
      await rm(this.pathOf(hex), { force: true }).catch(() => {})
    }
  }

  /** Bytes of chunk files the cache accounts for. */
  get size(): number {
    return this.bytes
  }

  private pathOf(hex: string): string {
    return join(this.dir, hex.slice(0, 2), hex)
  }

  /** Whether reads of the chunk can be served by readRange() without hashing it again. */
  isVerified(hex: string): boolean {
    return this.verified.has(hex)
  }

  /**
   * The whole chunk with SHA-256 `hex`, verified, or undefined when absent or damaged (a
   * damaged file is removed). Hashed unless this process verified the same file before.
   */
  async get(hex: string): Promise<Buffer | undefined> {
    const stamp = this.verified.get(hex)
    if (stamp !== undefined) {
      const data = Buffer.allocUnsafe(stamp.size)
      if (await this.readRange(hex, data, 0, 0, stamp.size)) return data
    }
    let p = this.verifying.get(hex)
    if (p === undefined) {
      p = this.verify(hex).finally(() => this.verifying.delete(hex))
      this.verifying.set(hex, p)
    }
    return await p
  }

  /**
   * Copies bytes [from, to) of a chunk verified earlier into `buf` at `off`, with one
   * positional read. False (and nothing to be trusted in `buf`) when the chunk is not
   * verified, its file changed since, or the read failed: then get() verifies it again.
   */
  readRange(hex: string, buf: Uint8Array, off: number, from: number, to: number): Promise<boolean> {
    // The hot path of a disk-cache read: an open file, one read, one callback, no hashing.
    const h = this.open.get(hex)
    if (h === undefined) return this.acquire(hex).then((a) => a === undefined ? false : this.readOpen(hex, a, buf, off, from, to))
    this.open.delete(hex)
    this.open.set(hex, h)
    h.users++
    return this.readOpen(hex, h, buf, off, from, to)
  }

  /** Reads a range of an acquired chunk file and releases it; true only if the file is still the one verified. */
  private readOpen(hex: string, h: OpenChunk, buf: Uint8Array, off: number, from: number, to: number): Promise<boolean> {
    const len = to - from
    return new Promise<boolean>((resolve) => {
      const done = (ok: boolean): void => {
        if (ok) {
          // Checked after the read: a change made before or while it ran has moved ctime by now.
          // fstat of an open local file is a syscall on an inode in memory, never a wait on disk.
          try {
            ok = sameStamp(h.stamp, fstatSync(h.fd))
          } catch {
            ok = false
          }
        }
        if (ok) {
          this.rangeReads++
          this.account(hex, h.stamp.size)
        } else {
          this.invalidate(hex)
        }
        this.release(h)
        resolve(ok)
      }
      if (to > h.stamp.size || from < 0 || len < 0) { done(false); return }
      read(h.fd, buf, off, len, from, (err, n) => {
        if (err !== null) done(false)
        else if (n === len) done(true)
        // A short read: the rest, or the file shrank (then done(false)).
        else readExactly(h.fd, buf, off + n, len - n, from + n).then(done, () => done(false))
      })
    })
  }

  /** The open file of a verified chunk (opened now if it is not), still the one verified. */
  private async acquire(hex: string): Promise<OpenChunk | undefined> {
    let h = this.open.get(hex)
    if (h !== undefined) {
      this.open.delete(hex)
      this.open.set(hex, h)
      h.users++
      return h
    }
    const stamp = this.verified.get(hex)
    if (stamp === undefined) return undefined
    let fd: number
    try {
      fd = await openP(this.pathOf(hex))
    } catch {
      this.forget(hex)
      return undefined
    }
    let same = false
    try {
      same = sameStamp(stamp, await fstatP(fd))
    } catch { /* treated as changed */ }
    if (!same || this.verified.get(hex) !== stamp) {
      closeQuietly(fd)
      if (!same) this.invalidate(hex)
      return undefined
    }
    // Another read may have opened it meanwhile: keep one.
    const other = this.open.get(hex)
    if (other !== undefined) {
      closeQuietly(fd)
      other.users++
      return other
    }
    h = { fd, stamp, users: 1, closing: false }
    this.adopt(hex, h)
    return h
  }

  private release(h: OpenChunk): void {
    h.users--
    if (h.closing && h.users === 0) closeQuietly(h.fd)
  }

  private adopt(hex: string, h: OpenChunk): void {
    this.open.set(hex, h)
    for (const [k, o] of this.open) {
      if (this.open.size <= this.maxOpenFiles) break
      this.open.delete(k)
      this.retire(o)
    }
  }

  private retire(o: OpenChunk): void {
    if (o.closing) return
    o.closing = true
    if (o.users === 0) closeQuietly(o.fd)
  }

  /** Drops what this process knows verified about a chunk (its file is gone or changed). */
  private forget(hex: string): void {
    this.verified.delete(hex)
    const o = this.open.get(hex)
    if (o !== undefined) {
      this.open.delete(hex)
      this.retire(o)
    }
  }

  private invalidate(hex: string): void {
    if (this.verified.has(hex)) this.changed++
    this.forget(hex)
  }

  /** Hashes the whole file; remembers its identity (and keeps it open) when it matches. */
  private async verify(hex: string): Promise<Buffer | undefined> {
    this.forget(hex)
    let fd: number
    try {
      fd = await openP(this.pathOf(hex))
    } catch {
      return undefined
    }
    let keep = false
    try {
      // The identity is taken before the bytes are read: whatever changes after it moves ctime.
      const st = await fstatP(fd)
      if (!st.isFile()) return undefined
      // No chunk is larger: a bigger file under a chunk's name is damage, not something to load.
      const data = st.size <= CHUNK_SIZE.max ? Buffer.allocUnsafe(st.size) : undefined
      const whole = data !== undefined && await readExactly(fd, data, 0, st.size, 0)
      this.verifications++
      if (data === undefined || !whole || createHash('sha256').update(data).digest('hex') !== hex) {
        this.corrupt++
        this.known.delete(hex)
        await rm(this.pathOf(hex), { force: true }).catch(() => {})
        return undefined
      }
      this.known.add(hex)
      this.account(hex, data.length)
      if (Date.now() - Math.max(st.mtimeMs, st.ctimeMs) >= this.settleMs) {
        const stamp = stampOf(st)
        this.verified.set(hex, stamp)
        this.adopt(hex, { fd, stamp, users: 0, closing: false })
        keep = true
      }
      return data
    } catch {
      return undefined
    } finally {
      if (!keep) closeQuietly(fd)
    }
  }

  /** Whether a file for the chunk exists (not verified: get() does that). */
  async has(hex: string): Promise<boolean> {
    if (this.known.has(hex)) return true
    return await access(this.pathOf(hex)).then(() => true, () => false)
  }

  /** Stores a verified chunk in the background; failures only cost a later refetch. */
  put(hex: string, data: Buffer): void {
    if (this.known.has(hex) || this.pendingBytes + data.length > this.maxPendingBytes) return
    this.known.add(hex)
    this.pendingBytes += data.length
    const file = this.pathOf(hex)
    const tmp = `${file}.tmp-${process.pid}-${this.seq++}`
    const p = (async () => {
      try {
        await mkdir(join(this.dir, hex.slice(0, 2)), { recursive: true })
        await writeFile(tmp, data)
        await rename(tmp, file)
        this.writes++
        await this.indexed
        this.account(hex, data.length)
        await this.evict()
      } catch {
        this.writeErrors++
        this.known.delete(hex)
        await rm(tmp, { force: true }).catch(() => {})
      } finally {
        this.pendingBytes -= data.length
      }
    })()
    this.pending.add(p)
    void p.finally(() => this.pending.delete(p))
  }

  /** Waits for queued writes (on unmount). */
  async flush(): Promise<void> {
    await this.indexed
    await Promise.all([...this.pending])
  }

  /** Waits for queued writes and closes the open chunk files; later reads verify anew. */
  async close(): Promise<void> {
    await this.flush()
    for (const hex of [...this.open.keys()]) this.forget(hex)
    this.verified.clear()
  }
}
