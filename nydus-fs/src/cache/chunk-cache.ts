// The two-tier chunk cache the read path asks first: memory (LRU, bounded) then disk
// (under --cache-dir). Keys are chunk digests, so identical chunks of different files and
// images share one entry. Only verified bytes are ever put in.

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

  has(hex: string): boolean {
    return this.memory.has(hex)
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

  stats(): ChunkCacheStats {
    return {
      memoryHits: this.memoryHits,
      diskHits: this.diskHits,
      misses: this.misses,
      memoryBytes: this.memory.size,
      memoryChunks: this.memory.count,
      diskWrites: this.disk?.writes ?? 0,
      diskWriteErrors: this.disk?.writeErrors ?? 0,
      diskCorrupt: this.disk?.corrupt ?? 0
    }
  }
}
