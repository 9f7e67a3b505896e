// What this node knows of one task, as the scheduler (or the origin) told it: the content's
// size and piece size, the task's source and the digests it published, the grant to fetch
// its pieces, and the task's state. Every part of a download reads the same values here.

import type { TaskInfo } from '@naiad/proto'

export class TaskView {
  /** -1 while unknown. */
  contentLength = -1
  /** 0 while unknown. */
  pieceSize = 0
  /** -1 while unknown. */
  pieceCount = -1
  /** The whole content's SHA-256 as the task's source published it. */
  sourceSha256: Uint8Array | undefined
  sourcePeer = ''
  /** The scheduler's latest grant to fetch this task's pieces from its peers. */
  grant: Uint8Array = new Uint8Array(0)
  /** Piece digests: as the source published them, or as this node verified or hashed them. */
  readonly digests = new Map<number, Uint8Array>()
  state = 'pending'
  error: { code: string; message: string } | undefined

  /**
   * Takes the scheduler's latest word on the task; what it leaves unset (a -1, an empty
   * field) keeps what was known. True when the sizes changed: the store must learn them.
   */
  apply(info: TaskInfo): boolean {
    const sizesChanged = (info.pieceSize > 0 && info.pieceSize !== this.pieceSize) || (info.contentLength >= 0 && info.contentLength !== this.contentLength)
    if (info.contentLength >= 0) this.contentLength = info.contentLength
    if (info.pieceSize > 0) this.pieceSize = info.pieceSize
    if (info.pieceCount >= 0) this.pieceCount = info.pieceCount
    if (info.sha256.length === 32) this.sourceSha256 = info.sha256
    if (info.sourcePeer !== '') this.sourcePeer = info.sourcePeer
    if (info.grant.length > 0) this.grant = info.grant
    for (const p of info.pieces) this.digests.set(p.num, p.sha256)
    this.state = info.state
    this.error = info.error
    return sizesChanged
  }

  /** Piece `num`'s length: the last piece is shorter; a whole piece while the content's length is unknown. */
  pieceLength(num: number): number {
    return this.contentLength >= 0 ? Math.min(this.pieceSize, this.contentLength - num * this.pieceSize) : this.pieceSize
  }

  /**
   * Bytes from the start that may be served once the first `prefixPieces` pieces are stored:
   * the last piece only once the whole content matched its digest (`finished`), so that no
   * client ever receives a complete wrong blob.
   */
  servable(prefixPieces: number, finished: boolean): number {
    if (finished) return this.contentLength
    if (this.pieceSize <= 0 || this.pieceCount <= 0) return 0
    return Math.min(prefixPieces, this.pieceCount - 1) * this.pieceSize
  }
}
