// Pieces a task's trusted source (the seed) is writing right now, as they arrive from the
// origin: how many of their bytes are on disk, and their digest once the last byte landed.
// The data channel streams such a piece to a peer that asked for it live, so the peer's copy
// runs alongside the origin's instead of a piece behind it; the peer checks the digest that
// ends the stream before it treats the piece as verified. Nothing here is ever listed in
// the piece store: a live piece becomes a stored one only through commitPiece.

import { NaiadError } from '@naiad/proto'

/** A live piece's end: its digest (and, for the last piece, the whole content's), or why it failed. */
export type LiveOutcome = { sha256: Uint8Array; contentSha256?: Uint8Array } | { error: NaiadError }

export class LivePiece {
  readonly num: number
  readonly offset: number
  readonly length: number
  /** Bytes of the piece from its start that are written to the task's data file. */
  written = 0
  outcome: LiveOutcome | undefined
  private readonly waiters = new Set<() => void>()

  constructor(num: number, offset: number, length: number) {
    this.num = num
    this.offset = offset
    this.length = length
  }

  /** More bytes are on disk. */
  advance(written: number): void {
    this.written = written
    this.wake()
  }

  settle(outcome: LiveOutcome): void {
    this.outcome ??= outcome
    this.wake()
  }

  /** Resolves on the next advance or settle (or at once when settled), or when `signal` fires. */
  changed(signal?: AbortSignal): Promise<void> {
    if (this.outcome !== undefined || signal?.aborted === true) return Promise.resolve()
    return new Promise((resolve) => {
      const done = (): void => {
        this.waiters.delete(done)
        signal?.removeEventListener('abort', done)
        resolve()
      }
      this.waiters.add(done)
      signal?.addEventListener('abort', done, { once: true })
    })
  }

  private wake(): void {
    for (const w of [...this.waiters]) w()
  }
}

interface LiveTask {
  pieces: Map<number, LivePiece>
  /** Woken when a piece opens or the source ends. */
  waiters: Set<() => void>
  ended: boolean
}

/** Per task, the live pieces of a source read that is running on this node. */
export class LivePieces {
  private readonly tasks = new Map<string, LiveTask>()

  /** A source read of the task starts on this node. */
  begin(taskId: string): void {
    const t = this.tasks.get(taskId)
    if (t !== undefined && !t.ended) return
    this.tasks.set(taskId, { pieces: new Map(), waiters: new Set(), ended: false })
  }

  /** Whether a source read of the task is running here. */
  running(taskId: string): boolean {
    return this.tasks.get(taskId)?.ended === false
  }

  open(taskId: string, num: number, offset: number, length: number): LivePiece {
    const t = this.tasks.get(taskId)
    if (t === undefined || t.ended) throw new NaiadError('DFD_ERR_STORE', `no source read of task ${taskId} is running`)
    const piece = new LivePiece(num, offset, length)
    t.pieces.set(num, piece)
    this.wake(t)
    return piece
  }

  /** The piece is stored (or failed): peers asking from now on get it from the store. */
  close(taskId: string, num: number): void {
    this.tasks.get(taskId)?.pieces.delete(num)
  }

  /** The source read ended: pieces still open fail with `error`. */
  end(taskId: string, error: NaiadError): void {
    const t = this.tasks.get(taskId)
    if (t === undefined) return
    t.ended = true
    for (const p of t.pieces.values()) p.settle({ error })
    t.pieces.clear()
    this.wake(t)
    this.tasks.delete(taskId)
  }

  get(taskId: string, num: number): LivePiece | undefined {
    return this.tasks.get(taskId)?.pieces.get(num)
  }

  /**
   * Waits until piece `num` opens, `isStored()` says it is stored, or the source read ends
   * (then undefined), within `signal`.
   */
  async await(taskId: string, num: number, isStored: () => boolean, signal: AbortSignal): Promise<LivePiece | undefined> {
    for (;;) {
      const t = this.tasks.get(taskId)
      if (t === undefined || t.ended || isStored()) return undefined
      const p = t.pieces.get(num)
      if (p !== undefined) return p
      signal.throwIfAborted()
      await new Promise<void>((resolve) => {
        const done = (): void => {
          t.waiters.delete(done)
          signal.removeEventListener('abort', done)
          resolve()
        }
        t.waiters.add(done)
        signal.addEventListener('abort', done, { once: true })
      })
    }
  }

  private wake(t: LiveTask): void {
    for (const w of [...t.waiters]) w()
  }
}
