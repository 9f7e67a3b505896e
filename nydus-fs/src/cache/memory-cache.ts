// The in-memory tier of the chunk cache: verified, uncompressed chunks keyed by their
// digest, least recently used first out, bounded in bytes. A Map keeps insertion order,
// so re-inserting on a hit is all the bookkeeping an LRU needs.

export class MemoryChunkCache {
  readonly maxBytes: number
  private readonly entries = new Map<string, Buffer>()
  private bytes = 0

  constructor(maxBytes: number) {
    this.maxBytes = maxBytes
  }

  get size(): number {
    return this.bytes
  }

  get count(): number {
    return this.entries.size
  }

  get(key: string): Buffer | undefined {
    const data = this.entries.get(key)
    if (data === undefined) return undefined
    this.entries.delete(key)
    this.entries.set(key, data)
    return data
  }

  has(key: string): boolean {
    return this.entries.has(key)
  }

  set(key: string, data: Buffer): void {
    // A chunk larger than the whole cache would only evict everything else.
    if (data.length > this.maxBytes) return
    const old = this.entries.get(key)
    if (old !== undefined) {
      this.bytes -= old.length
      this.entries.delete(key)
    }
    this.entries.set(key, data)
    this.bytes += data.length
    for (const [k, v] of this.entries) {
      if (this.bytes <= this.maxBytes) break
      this.entries.delete(k)
      this.bytes -= v.length
    }
  }

  clear(): void {
    this.entries.clear()
    this.bytes = 0
  }
}
