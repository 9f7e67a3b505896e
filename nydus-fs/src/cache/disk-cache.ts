// The on-disk tier of the chunk cache: one file per chunk, uncompressed, at
// `<dir>/<first two hex digits>/<sha256 hex>`. Files appear by rename, so a reader never
// sees half a chunk; every read is hashed again before it is trusted, so a damaged or
// tampered file is dropped and fetched anew rather than served. The cache holds at most
// `maxBytes`: past it, the least recently used chunk files go first.

import { createHash } from 'node:crypto'
import { access, mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'

export interface DiskCacheOptions {
  /** Bytes of chunk writes queued at once; beyond it new chunks are not written (still served). */
  maxPendingBytes?: number
  /** Bytes of chunk files kept; the least recently used go when a write would pass it. */
  maxBytes?: number
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
  writes = 0
  writeErrors = 0
  corrupt = 0
  evictions = 0

  constructor(dir: string, options: DiskCacheOptions = {}) {
    this.dir = dir
    this.maxPendingBytes = options.maxPendingBytes ?? 64 * 1024 * 1024
    this.maxBytes = options.maxBytes ?? 10 * 1024 * 1024 * 1024
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

  /** The chunk with SHA-256 `hex`, verified, or undefined when absent or damaged. */
  async get(hex: string): Promise<Buffer | undefined> {
    let data: Buffer
    try {
      data = await readFile(this.pathOf(hex))
    } catch {
      return undefined
    }
    if (createHash('sha256').update(data).digest('hex') !== hex) {
      this.corrupt++
      this.known.delete(hex)
      await rm(this.pathOf(hex), { force: true }).catch(() => {})
      return undefined
    }
    this.known.add(hex)
    this.account(hex, data.length)
    return data
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
}
