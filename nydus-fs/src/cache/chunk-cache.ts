// The two-tier chunk cache the read path asks first: memory (LRU, bounded) then disk
// (under --cache-dir). Keys are chunk digests, so identical chunks of different files and
// images share one entry. Only verified bytes are ever put in. A disk chunk is hashed the
// first time this process uses it; after that a read takes just the range it needs from
// the file (see disk-cache.ts), so the memory tier is a shortcut, not a requirement.

import { DiskChunkCache } from './disk-cache.ts'
import { MemoryChunkCache } from './memory-cache.ts'

export interface ChunkCacheOptions {
  /** Memory tier bound in bytes. */
  memoryBytes: number
  /** Directory of the disk tier; undefined for memory only. */
  diskDir?: string
  /** Disk tier bound in bytes (default 10 GiB). */
  diskBytes?: number
}

export interface ChunkCacheStats {
  memoryHits: number
  diskHits: number
  misses: number
  memoryBytes: number
  memoryChunks: number
  diskWrites: number
  diskWriteErrors: number
  diskCorrupt: number
  /** Disk chunks hashed in full (first use in this process, or after their file changed). */
  diskVerifications: number
  /** Reads served by a range of a verified disk chunk. */
  diskRangeReads: number
}

export type CacheTier = 'memory' | 'disk'

export class ChunkCache {
  readonly memory: MemoryChunkCache
  readonly disk: DiskChunkCache | undefined
  private memoryHits = 0
  private diskHits = 0
  private misses = 0

  constructor(options: ChunkCacheOptions) {
    this.memory = new MemoryChunkCache(options.memoryBytes)
    this.disk = options.diskDir === undefined ? undefined : new DiskChunkCache(options.diskDir, { maxBytes: options.diskBytes })
  }

  /** Memory only, synchronous: the fast path of a read. Counts a hit, never a miss. */
  peek(hex: string): Buffer | undefined {
    const data = this.memory.get(hex)
    if (data !== undefined) this.memoryHits++
    return data
  }

  /** Memory, then disk (promoting to memory); counts the miss when neither has it. */
  async get(hex: string): Promise<{ data: Buffer; tier: CacheTier } | undefined> {
    const m = this.peek(hex)
    if (m !== undefined) return { data: m, tier: 'memory' }
    const d = await this.disk?.get(hex)
    if (d !== undefined) {
      this.diskHits++
      this.memory.set(hex, d)
      return { data: d, tier: 'disk' }
    }
    this.misses++
    return undefined
  }

  /**
   * Copies bytes [from, to) of a chunk verified earlier on disk into `buf` at `off`, with no
   * hashing and no promotion to memory; false when the disk tier cannot vouch for it (then
   * get() verifies it, or the chunk is fetched).
   */
  readFromDisk(hex: string, buf: Uint8Array, off: number, from: number, to: number): Promise<boolean> {
    // Counted by the disk tier (rangeReads): one promise less on the hot path.
    if (this.disk === undefined || !this.disk.isVerified(hex)) return Promise.resolve(false)
    return this.disk.readRange(hex, buf, off, from, to)
  }

  has(hex: string): boolean {
    return this.memory.has(hex)
  }

  /** Whether readFromDisk() can serve the chunk without hashing it (it may still find it changed). */
  isVerifiedOnDisk(hex: string): boolean {
    return this.disk?.isVerified(hex) ?? false
  }

  async hasOnDisk(hex: string): Promise<boolean> {
    return await this.disk?.has(hex) ?? false
  }

  put(hex: string, data: Buffer): void {
    this.memory.set(hex, data)
    this.disk?.put(hex, data)
  }

  async flush(): Promise<void> {
    await this.disk?.flush()
  }

  /** Flushes and closes the disk tier's open files (on unmount). */
  async close(): Promise<void> {
    await this.disk?.close()
  }

  stats(): ChunkCacheStats {
    return {
      memoryHits: this.memoryHits,
      diskHits: this.diskHits + (this.disk?.rangeReads ?? 0),
      misses: this.misses,
      memoryBytes: this.memory.size,
      memoryChunks: this.memory.count,
      diskWrites: this.disk?.writes ?? 0,
      diskWriteErrors: this.disk?.writeErrors ?? 0,
      diskCorrupt: this.disk?.corrupt ?? 0,
      diskVerifications: this.disk?.verifications ?? 0,
      diskRangeReads: this.disk?.rangeReads ?? 0
    }
  }
}
