// Where a piece from a parent goes as it arrives: every slice is hashed once, on arrival,
// and written into place with positional writes of the slices themselves (gathered into
// writev batches, no copy of their own). When the last byte has landed the digest is
// compared with the trusted one; only then is the piece listed in the store (verified).
// Nothing is ever read back to verify.

import { createHash, type Hash } from 'node:crypto'

import { NaiadError } from '@naiad/proto'

import type { Flow, PieceSink } from '../channel/data-client.ts'
import type { PieceStore, Reservation } from '../storage/piece-store.ts'

/** Bytes gathered before one positional writev. */
const BATCH_BYTES = 1024 * 1024
/** Writes in flight beyond which the connection is paused until they land. */
const HIGH_WATER = 4 * 1024 * 1024

export interface PieceWriterOptions {
  store: PieceStore
  taskId: string
  piece: { num: number; offset: number; length: number }
  /** The piece's digest as the task's trusted source published it, when already known. */
  expected: Uint8Array | undefined
  /**
   * The parent is the task's trusted source itself (authenticated by the data channel): the
   * digest it sends with the piece is the reference.
   */
  fromSource: boolean
  reservation: Reservation
}

export class PieceWriter implements PieceSink {
  private readonly options: PieceWriterOptions
  private readonly hash: Hash = createHash('sha256')
  private batch: Buffer[] = []
  private batchBytes = 0
  /** Bytes received so far (their position in the piece). */
  private received = 0
  /** Bytes handed to writes that have not landed yet. */
  private pending = 0
  private writes: Array<Promise<void>> = []
  private writeError: Error | undefined
  private flow: Flow | undefined
  private paused = false
  private failed = false
  /** The digest the parent sent in the piece header (a stored piece's). */
  private announced: Uint8Array = new Uint8Array(0)
  /** The piece's SHA-256 once verified. */
  sha256: Buffer | undefined
  /** The whole content's SHA-256, as the task's source sent it with the piece (from the source only). */
  contentSha256: Uint8Array | undefined

  constructor(options: PieceWriterOptions) {
    this.options = options
  }

  header(res: { num: number; length: number; sha256: Uint8Array }, flow: Flow): void {
    const { piece } = this.options
    if (res.num !== piece.num || res.length !== piece.length) {
      throw new NaiadError('DFD_ERR_PIECE_DIGEST', `parent announced piece ${res.num} of ${res.length} bytes, expected piece ${piece.num} of ${piece.length}`)
    }
    this.flow = flow
    this.announced = res.sha256
  }

  data(bytes: Buffer): void {
    if (this.failed) return
    this.hash.update(bytes)
    this.batch.push(bytes)
    this.batchBytes += bytes.length
    if (this.batchBytes >= BATCH_BYTES) this.flush()
  }

  private flush(): void {
    if (this.batchBytes === 0) return
    const { store, taskId, piece } = this.options
    const buffers = this.batch
    const n = this.batchBytes
    const at = piece.offset + this.received
    this.received += n
    this.batch = []
    this.batchBytes = 0
    this.pending += n
    if (this.pending > HIGH_WATER && !this.paused) {
      this.paused = true
      this.flow?.pause()
    }
    this.writes.push(store.writeAt(taskId, at, buffers).then(() => {
      this.pending -= n
      if (this.paused && this.pending <= HIGH_WATER / 2) {
        this.paused = false
        this.flow?.resume()
      }
    }, (err: unknown) => {
      this.writeError ??= err as Error
      this.pending -= n
      if (this.paused) {
        this.paused = false
        this.flow?.resume()
      }
    }))
  }

  async end(end: { sha256: Uint8Array; contentSha256: Uint8Array }): Promise<void> {
    const trailer = end.sha256
    const { store, taskId, piece, expected, fromSource, reservation } = this.options
    this.flush()
    await Promise.all(this.writes)
    if (this.writeError !== undefined) throw this.writeError
    if (this.received !== piece.length) throw new NaiadError('PROTO_ERR_DECODE', `piece ${piece.num} ended after ${this.received} of ${piece.length} bytes`)
    const digest = this.hash.digest()
    // The scheduler's copy of the source's digest; else, from the source itself (the data
    // channel proved who it is), the digest that ends a live piece or heads a stored one.
    const fromItself = trailer.length === 32 ? trailer : this.announced.length === 32 ? this.announced : undefined
    const want = expected !== undefined && expected.length === 32 ? expected : fromSource ? fromItself : undefined
    if (want === undefined) throw new NaiadError('DFD_ERR_PIECE_DIGEST', `piece ${piece.num} came with no digest from the task's source to check it against`)
    if (!digest.equals(want)) {
      throw new NaiadError('DFD_ERR_PIECE_DIGEST', `piece ${piece.num} has SHA-256 ${digest.toString('hex').slice(0, 16)}…, the source published ${Buffer.from(want).toString('hex').slice(0, 16)}…`)
    }
    store.commitPiece(taskId, { num: piece.num, offset: piece.offset, length: piece.length, sha256: digest }, reservation)
    this.sha256 = digest
    if (fromSource && end.contentSha256.length === 32) this.contentSha256 = end.contentSha256
  }

  abort(): void {
    this.failed = true
    this.batch = []
    this.batchBytes = 0
    if (this.paused) {
      this.paused = false
      this.flow?.resume()
    }
  }

  /** Resolves once no write of this piece is in flight (after a failure, before its room is given back). */
  async settled(): Promise<void> {
    await Promise.allSettled(this.writes)
  }
}
