// Staging buffers for bytes on their way to the disk. Bytes arrive in small chunks that
// belong to their source (a socket's read buffer, an HTTP body): they are copied into a
// staging buffer at once, so the chunks die young, and the staging buffer is written with
// one positional write when full and reused after. Keeping the chunks themselves until
// their write landed made the collector promote and trace hundreds of MiB per GiB moved.

/** Size of one staging buffer: one positional write. */
export const STAGING_BYTES = 1024 * 1024

export class StagingPool {
  private readonly free: Buffer[] = []
  private readonly keep: number

  /** Keeps at most `keep` idle buffers; more in use at once are allocated and then dropped. */
  constructor(keep = 32) {
    this.keep = keep
  }

  take(): Buffer {
    return this.free.pop() ?? Buffer.allocUnsafeSlow(STAGING_BYTES)
  }

  give(buf: Buffer): void {
    if (this.free.length < this.keep) this.free.push(buf)
  }
}

/**
 * Bytes copied into staging buffers and written at increasing positions of one file range,
 * at most `highWater` bytes in flight; `onPressure(true)` asks the source to pause when over
 * it, `onPressure(false)` to go on once half of it has landed.
 */
export class StagedWriter {
  private buf: Buffer | undefined
  private fill = 0
  /** Where the next staging buffer's bytes go. */
  private at: number
  private pending = 0
  private paused = false
  private readonly writes = new Set<Promise<void>>()
  private error: Error | undefined
  private readonly pool: StagingPool
  private readonly write: (at: number, bytes: Buffer) => Promise<void>
  private readonly onPressure: (pause: boolean) => void
  private readonly highWater: number

  constructor(options: { pool: StagingPool; at: number; write: (at: number, bytes: Buffer) => Promise<void>; onPressure?: (pause: boolean) => void; highWater?: number }) {
    this.pool = options.pool
    this.at = options.at
    this.write = options.write
    this.onPressure = options.onPressure ?? (() => {})
    this.highWater = options.highWater ?? 4 * STAGING_BYTES
  }

  /** Bytes staged or in flight that have not landed. */
  get inFlight(): number {
    return this.pending + this.fill
  }

  /** Copies `bytes` (they may be reused by their owner as soon as this returns). */
  push(bytes: Uint8Array): void {
    let pos = 0
    while (pos < bytes.length) {
      this.buf ??= this.pool.take()
      const n = Math.min(this.buf.length - this.fill, bytes.length - pos)
      // A native copy, no view object per chunk.
      Buffer.prototype.copy.call(bytes, this.buf, this.fill, pos, pos + n)
      this.fill += n
      pos += n
      if (this.fill === this.buf.length) this.flush()
    }
  }

  /** Writes what is staged now. */
  flush(): void {
    const buf = this.buf
    if (buf === undefined || this.fill === 0) return
    const n = this.fill
    const at = this.at
    this.buf = undefined
    this.fill = 0
    this.at += n
    this.pending += n
    if (this.pending > this.highWater && !this.paused) {
      this.paused = true
      this.onPressure(true)
    }
    const p = this.write(at, buf.subarray(0, n)).then(() => {}, (err: unknown) => { this.error ??= err as Error }).finally(() => {
      this.pending -= n
      this.writes.delete(p)
      this.pool.give(buf)
      if (this.paused && (this.pending <= this.highWater / 2 || this.error !== undefined)) {
        this.paused = false
        this.onPressure(false)
      }
    })
    this.writes.add(p)
  }

  /** Resolves once at most half of `highWater` is in flight (a source that cannot be paused awaits this). */
  async drained(): Promise<void> {
    while (this.pending > this.highWater / 2 && this.writes.size > 0) await Promise.race([...this.writes])
    if (this.error !== undefined) throw this.error
  }

  /** Flushes and waits for every write; throws the first write error. */
  async close(): Promise<void> {
    this.flush()
    while (this.writes.size > 0) await Promise.all([...this.writes])
    if (this.error !== undefined) throw this.error
  }

  /** Drops what is staged, lets writes in flight finish, and lifts any pause. */
  async abandon(): Promise<void> {
    if (this.buf !== undefined) this.pool.give(this.buf)
    this.buf = undefined
    this.fill = 0
    if (this.paused) {
      this.paused = false
      this.onPressure(false)
    }
    while (this.writes.size > 0) await Promise.allSettled([...this.writes])
  }
}
