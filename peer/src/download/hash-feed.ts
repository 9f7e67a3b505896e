// SHA-256 of a source read off the main thread. The seed's one thread read the origin body,
// hashed every byte twice (its piece and the whole content: a fifth of its time in a cold
// pull) and sent the pieces to peers through TLS, so its data server fell behind its own
// origin read. Here the bytes are copied into batches (about 0.1 ms per MiB against about
// 2 ms for two hashes) that a worker thread hashes in order; a piece's digest and the whole
// content's are awaited before anything treats them as verified.

import { Worker } from 'node:worker_threads'

import { NaiadError } from '@naiad/proto'

import type { HashReply, HashRequest } from './hash-thread.ts'

/** Bytes per batch posted to the worker. */
const BATCH_BYTES = 1024 * 1024
/** Batches posted and not yet hashed before a feed asks its source to wait. */
const MAX_IN_FLIGHT = 32
/** Idle batch buffers kept for reuse. */
const KEEP_FREE = 8

interface Waiter {
  resolve: (digest: Buffer) => void
  reject: (err: Error) => void
}

/** The process's hashing thread, started on first use; it does not keep the process alive when idle. */
class HashThread {
  private worker: Worker | undefined
  private nextFeed = 1
  private readonly free: ArrayBuffer[] = []
  private readonly feeds = new Map<number, HashFeed>()
  private pending = 0

  open(feed: HashFeed): number {
    const id = this.nextFeed++
    this.feeds.set(id, feed)
    return id
  }

  close(id: number): void {
    this.feeds.delete(id)
  }

  buffer(): ArrayBuffer {
    return this.free.pop() ?? new ArrayBuffer(BATCH_BYTES)
  }

  post(m: HashRequest, transfer: ArrayBuffer[] = []): void {
    const w = this.start()
    if (m.op !== 'drop') this.track(1)
    w.postMessage(m, transfer)
  }

  private start(): Worker {
    if (this.worker !== undefined) return this.worker
    const w = new Worker(new URL('./hash-thread.ts', import.meta.url))
    w.unref()
    w.on('message', (m: HashReply) => {
      this.track(-1)
      const feed = this.feeds.get(m.feed)
      if (m.op === 'buffer') {
        if (this.free.length < KEEP_FREE) this.free.push(m.buf)
        feed?.returned()
      } else {
        feed?.digested(m.seq, Buffer.from(m.digest.buffer, m.digest.byteOffset, m.digest.byteLength))
      }
    })
    const fail = (err: Error): void => {
      if (this.worker !== w) return
      this.worker = undefined
      this.pending = 0
      const e = new NaiadError('DFD_ERR_STORE', `the hashing thread failed: ${err.message}`, { cause: err })
      for (const f of [...this.feeds.values()]) f.failed(e)
      this.feeds.clear()
    }
    w.on('error', fail)
    w.on('exit', (code) => fail(new Error(`it exited with code ${code}`)))
    this.worker = w
    return w
  }

  /** Holds the process open only while answers are awaited. */
  private track(delta: number): void {
    const before = this.pending
    this.pending += delta
    if (before === 0 && this.pending > 0) this.worker?.ref()
    else if (before > 0 && this.pending === 0) this.worker?.unref()
  }
}

let thread: HashThread | undefined

/**
 * One source read's bytes, in order: `push` them, `pieceDigest()` at the end of each piece,
 * `wholeDigest()` after the last byte; `drop()` when the read is abandoned.
 */
export class HashFeed {
  private readonly thread: HashThread
  private readonly id: number
  private buf: ArrayBuffer | undefined
  private view: Uint8Array | undefined
  private fill = 0
  private inFlight = 0
  private seq = 0
  private readonly waiters = new Map<number, Waiter>()
  private roomWaiters: Array<() => void> = []
  private error: NaiadError | undefined

  /** Whether piece digests are asked for (else only the whole content's). */
  private readonly pieces: boolean

  constructor(options: { pieces?: boolean } = {}) {
    this.pieces = options.pieces ?? true
    thread ??= new HashThread()
    this.thread = thread
    this.id = this.thread.open(this)
  }

  /** Copies `bytes` (their owner may reuse them as soon as this returns). */
  push(bytes: Uint8Array): void {
    let pos = 0
    while (pos < bytes.length) {
      if (this.buf === undefined) {
        this.buf = this.thread.buffer()
        this.view = new Uint8Array(this.buf)
      }
      const n = Math.min(BATCH_BYTES - this.fill, bytes.length - pos)
      this.view!.set(bytes.subarray(pos, pos + n), this.fill)
      this.fill += n
      pos += n
      if (this.fill === BATCH_BYTES) this.flush()
    }
  }

  /** Whether the source should wait (`room()`) before pushing more. */
  get full(): boolean {
    return this.inFlight > MAX_IN_FLIGHT
  }

  /** Resolves once at most MAX_IN_FLIGHT batches wait to be hashed (or the thread failed). */
  async room(): Promise<void> {
    while (this.inFlight > MAX_IN_FLIGHT && this.error === undefined) {
      await new Promise<void>((resolve) => this.roomWaiters.push(resolve))
    }
    if (this.error !== undefined) throw this.error
  }

  /** The digest of the bytes pushed since the last piece ended. */
  pieceDigest(): Promise<Buffer> {
    return this.ask('piece')
  }

  /** The digest of every byte pushed; the feed is finished. */
  wholeDigest(): Promise<Buffer> {
    const p = this.ask('end')
    // Forgotten by the thread once the answer came (an answer to no feed is dropped).
    void p.finally(() => this.thread.close(this.id)).catch(() => {})
    return p
  }

  drop(): void {
    this.buf = undefined
    this.view = undefined
    this.fill = 0
    this.thread.close(this.id)
    this.thread.post({ op: 'drop', feed: this.id })
    this.failed(new NaiadError('PROTO_ERR_ABORTED', 'the source read was abandoned'))
  }

  /** @internal A batch was hashed. */
  returned(): void {
    this.inFlight--
    if (this.inFlight <= MAX_IN_FLIGHT) this.wakeRoom()
  }

  /** @internal */
  digested(seq: number, digest: Buffer): void {
    const w = this.waiters.get(seq)
    this.waiters.delete(seq)
    w?.resolve(digest)
  }

  /** @internal */
  failed(err: NaiadError): void {
    this.error ??= err
    for (const w of this.waiters.values()) w.reject(err)
    this.waiters.clear()
    this.wakeRoom()
  }

  private ask(op: 'piece' | 'end'): Promise<Buffer> {
    if (this.error !== undefined) return Promise.reject(this.error)
    this.flush()
    const seq = this.seq++
    const p = new Promise<Buffer>((resolve, reject) => this.waiters.set(seq, { resolve, reject }))
    // Seen by whoever awaits it; a read that failed first may never do so.
    p.catch(() => {})
    this.thread.post({ op, feed: this.id, seq })
    return p
  }

  private flush(): void {
    if (this.buf === undefined || this.fill === 0) return
    const buf = this.buf
    const length = this.fill
    this.buf = undefined
    this.view = undefined
    this.fill = 0
    this.inFlight++
    this.thread.post({ op: 'data', feed: this.id, buf, length, pieces: this.pieces }, [buf])
  }

  private wakeRoom(): void {
    const ws = this.roomWaiters
    this.roomWaiters = []
    for (const w of ws) w()
  }
}
