// A few large buffers, reused: a transfer allocates nothing per chunk, and the number of
// buffers bounds how many bytes it has in flight (back-pressure without a queue).

export class BufferPool {
  private readonly free: Buffer[] = []
  private allocated = 0
  private readonly waiters: Array<() => void> = []
  readonly size: number
  private readonly count: number

  constructor(count: number, size: number) {
    this.count = count
    this.size = size
  }

  /** A buffer of `size` bytes; waits for one to come back when all are out. */
  async take(signal?: AbortSignal): Promise<Buffer> {
    for (;;) {
      const buf = this.free.pop()
      if (buf !== undefined) return buf
      if (this.allocated < this.count) {
        this.allocated++
        return Buffer.allocUnsafeSlow(this.size)
      }
      signal?.throwIfAborted()
      await this.nextGive(signal)
    }
  }

  /** Resolves at the next give (or when `signal` fires). */
  private nextGive(signal?: AbortSignal): Promise<void> {
    return new Promise<void>((resolve) => {
      const done = (): void => {
        signal?.removeEventListener('abort', done)
        resolve()
      }
      this.waiters.push(done)
      signal?.addEventListener('abort', done, { once: true })
    })
  }

  give(buf: Buffer): void {
    this.free.push(buf)
    // Every waiter checks again (a taker and a drain may both be waiting).
    for (const w of this.waiters.splice(0)) w()
  }

  /** Resolves once every buffer taken has come back (every write the pool fed is done). */
  async drained(signal?: AbortSignal): Promise<void> {
    while (this.free.length < this.allocated) {
      signal?.throwIfAborted()
      await this.nextGive(signal)
    }
  }
}
