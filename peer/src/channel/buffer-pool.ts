// A few large buffers, reused: a transfer allocates nothing per chunk, and the number of
// buffers bounds how many bytes it has in flight (back-pressure without a queue). Pools of
// one server may share their idle buffers (see BufferShelf): a connection that carries only
// a few pieces then takes buffers another one gave back instead of allocating its own.

/** Idle buffers shared by the pools of one server, at most `keep` of them. */
export class BufferShelf {
  private readonly free: Buffer[] = []
  private readonly keep: number

  constructor(keep: number) {
    this.keep = keep
  }

  /** Idle buffers on the shelf. */
  get size(): number {
    return this.free.length
  }

  take(size: number): Buffer | undefined {
    const buf = this.free.pop()
    // Every pool of a server uses one size; a buffer of another is not handed out.
    return buf === undefined || buf.length === size ? buf : undefined
  }

  put(buf: Buffer): void {
    if (this.free.length < this.keep) this.free.push(buf)
  }
}

export class BufferPool {
  private readonly free: Buffer[] = []
  /** Buffers taken and not given back yet. */
  private out = 0
  private readonly waiters: Array<() => void> = []
  readonly size: number
  private readonly count: number
  private readonly shelf: BufferShelf | undefined

  /** At most `count` buffers of `size` bytes out at once; idle ones go to `shelf` when given. */
  constructor(count: number, size: number, shelf?: BufferShelf) {
    this.count = count
    this.size = size
    this.shelf = shelf
  }

  /** A buffer of `size` bytes; waits for one to come back when all are out. */
  async take(signal?: AbortSignal): Promise<Buffer> {
    for (;;) {
      if (this.out < this.count) {
        this.out++
        return this.free.pop() ?? this.shelf?.take(this.size) ?? Buffer.allocUnsafeSlow(this.size)
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
    this.out--
    if (this.shelf !== undefined) this.shelf.put(buf)
    else this.free.push(buf)
    // Every waiter checks again (a taker and a drain may both be waiting).
    for (const w of this.waiters.splice(0)) w()
  }

  /** Resolves once every buffer taken has come back (every write the pool fed is done). */
  async drained(signal?: AbortSignal): Promise<void> {
    while (this.out > 0) {
      signal?.throwIfAborted()
      await this.nextGive(signal)
    }
  }
}
