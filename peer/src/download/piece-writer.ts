// Where a piece from a parent goes as it arrives: every slice is hashed once, on arrival,
// and copied into a staging buffer that is written into place when full (see staging.ts);
// the slice itself goes back to its socket at once. When the last byte has landed the
// digest is compared with the trusted one; only then is the piece listed in the store
// (verified). Nothing is ever read back to verify.

import { createHash, type Hash } from 'node:crypto'

import { NaiadError } from '@naiad/proto'

import type { Flow, PieceSink } from '../channel/data-client.ts'
import type { PieceStore, Reservation } from '../storage/piece-store.ts'
import { StagedWriter, type StagingPool } from './staging.ts'

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
  staging: StagingPool
}

export class PieceWriter implements PieceSink {
  private readonly options: PieceWriterOptions
  private readonly hash: Hash = createHash('sha256')
  private readonly out: StagedWriter
  private flow: Flow | undefined
  /** Bytes received so far. */
  private received = 0
  private failed = false
  /** The digest the parent sent in the piece header (a stored piece's). */
  private announced: Uint8Array = new Uint8Array(0)
  /** The piece's SHA-256 once verified. */
  sha256: Buffer | undefined
  /** The whole content's SHA-256, as the task's source sent it with the piece (from the source only). */
  contentSha256: Uint8Array | undefined
  /** When the parent's answer (the piece header) arrived, ms since the epoch; 0 before (the pull timeline's wait on the parent). */
  headerAt = 0

  constructor(options: PieceWriterOptions) {
    this.options = options
    const { store, taskId, piece } = options
    this.out = new StagedWriter({
      pool: options.staging,
      at: piece.offset,
      write: (at, bytes) => store.writeAt(taskId, at, bytes),
      onPressure: (pause) => { if (pause) this.flow?.pause(); else this.flow?.resume() }
    })
  }

  header(res: { num: number; length: number; sha256: Uint8Array }, flow: Flow): void {
    const { piece } = this.options
    if (res.num !== piece.num || res.length !== piece.length) {
      throw new NaiadError('DFD_ERR_PIECE_DIGEST', `parent announced piece ${res.num} of ${res.length} bytes, expected piece ${piece.num} of ${piece.length}`)
    }
    this.flow = flow
    this.announced = res.sha256
    this.headerAt = Date.now()
  }

  data(bytes: Buffer): void {
    if (this.failed) return
    this.hash.update(bytes)
    this.out.push(bytes)
    this.received += bytes.length
  }

  async end(end: { sha256: Uint8Array; contentSha256: Uint8Array }): Promise<void> {
    const { store, taskId, piece, expected, fromSource, reservation } = this.options
    await this.out.close()
    if (this.received !== piece.length) throw new NaiadError('PROTO_ERR_DECODE', `piece ${piece.num} ended after ${this.received} of ${piece.length} bytes`)
    const digest = this.hash.digest()
    // The scheduler's copy of the source's digest; else, from the source itself (the data
    // channel proved who it is), the digest that ends a live piece or heads a stored one.
    const fromItself = end.sha256.length === 32 ? end.sha256 : this.announced.length === 32 ? this.announced : undefined
    const want = expected !== undefined && expected.length === 32 ? expected : fromSource ? fromItself : undefined
    if (want === undefined) throw new NaiadError('DFD_ERR_PIECE_NO_DIGEST', `piece ${piece.num} came before the task's source published its digest: nothing to check it against`)
    if (!digest.equals(want)) {
      throw new NaiadError('DFD_ERR_PIECE_DIGEST', `piece ${piece.num} has SHA-256 ${digest.toString('hex').slice(0, 16)}…, the source published ${Buffer.from(want).toString('hex').slice(0, 16)}…`)
    }
    store.commitPiece(taskId, { num: piece.num, offset: piece.offset, length: piece.length, sha256: digest }, reservation)
    this.sha256 = digest
    if (fromSource && end.contentSha256.length === 32) this.contentSha256 = end.contentSha256
  }

  abort(): void {
    this.failed = true
    void this.out.abandon()
  }

  /** Resolves once no write of this piece is in flight (after a failure, before its room is given back). */
  async settled(): Promise<void> {
    await this.out.abandon()
  }
}
