// The on-disk tier of the chunk cache: one file per chunk, uncompressed, at
// `<dir>/<first two hex digits>/<sha256 hex>`. Files appear by rename, so a reader never
// sees half a chunk; every read is hashed again before it is trusted, so a damaged or
// tampered file is dropped and fetched anew rather than served.

import { createHash } from 'node:crypto'
import { access, mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'

export interface DiskCacheOptions {
  /** Bytes of chunk writes queued at once; beyond it new chunks are not written (still served). */
  maxPendingBytes?: number
}

export class DiskChunkCache {
  readonly dir: string
  private readonly maxPendingBytes: number
  private pendingBytes = 0
  private readonly pending = new Set<Promise<void>>()
  private seq = 0
  /** Chunks this process wrote or read successfully: skips rewriting them. */
  private readonly known = new Set<string>()
  writes = 0
  writeErrors = 0
  corrupt = 0

  constructor(dir: string, options: DiskCacheOptions = {}) {
    this.dir = dir
    this.maxPendingBytes = options.maxPendingBytes ?? 64 * 1024 * 1024
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
    await Promise.all([...this.pending])
  }
}
