// Back to source: a task's bytes from its origin into the piece store. Each body chunk is
// hashed as it arrives (its piece's digest and the whole content's) and copied into a
// staging buffer written into place when full (staging.ts), the writes of a piece in
// order, a couple in flight while the next buffer fills. On the task's trusted source every piece is also live while it is written (see
// LivePieces): peers that asked for it receive its bytes as they reach the disk.

import { createHash, type Hash } from 'node:crypto'

import { NaiadError, pieceSizeFor } from '@naiad/proto'

import type { QosHooks, Traffic } from '../qos/hooks.ts'
import type { OriginClient } from '../source/origin.ts'
import type { LivePiece, LivePieces } from '../storage/live-pieces.ts'
import type { PieceStore, Reservation } from '../storage/piece-store.ts'
import { StagedWriter, STAGING_BYTES, type StagingPool } from './staging.ts'


/** Whole pieces whose writes may still be landing while the next ones are read. */
const MAX_LANDING = 4

export interface OriginReadTask {
  id: string
  url: string
  headers: Record<string, string>
  range?: { start: number; end: number }
  /** 0: chosen from the content length. */
  pieceSize: number
  /** The length the task already has (-1: unknown); an origin announcing another fails. */
  contentLength: number
  /** Digests the trusted source published; an origin sending other bytes fails. */
  digest(num: number): Uint8Array | undefined
}

export interface OriginReadHooks {
  /** The origin's headers fixed the layout (content length -1 when it does not say). */
  layout(contentLength: number, pieceSize: number, pieceCount: number): void
  /** A piece is stored (`written`: by this read; false when it was already there). */
  piece(num: number, length: number, sha256: Buffer, written: boolean, costMs: number): void
}

export interface OriginReadResult {
  contentLength: number
  pieceCount: number
  /** SHA-256 of the whole content: every byte passed through it on its way in. */
  sha256: Buffer
}

export interface OriginReaderComponents {
  origin: Pick<OriginClient, 'open'>
  store: PieceStore
  /** Set on the task's trusted source: its pieces are offered live while written. */
  live?: LivePieces
  qos?: QosHooks
  staging: StagingPool
}

interface Current {
  num: number
  offset: number
  length: number
  fill: number
  hash: Hash
  out: StagedWriter | undefined
  skip: boolean
  reservation: Reservation | undefined
  live: LivePiece | undefined
  started: number
}

export class OriginReader {
  private readonly c: OriginReaderComponents
  private readonly reserveWaitMs: number

  constructor(components: OriginReaderComponents, options: { reserveWaitMs: number }) {
    this.c = components
    this.reserveWaitMs = options.reserveWaitMs
  }

  async read(task: OriginReadTask, hooks: OriginReadHooks, traffic: Traffic, signal: AbortSignal): Promise<OriginReadResult> {
    const { origin, store, live } = this.c
    const qos = this.c.qos?.active === true ? this.c.qos : undefined
    const res = await origin.open({ url: task.url, headers: task.headers, range: task.range, signal })
    const length = res.contentLength
    if (task.contentLength >= 0 && length >= 0 && length !== task.contentLength) {
      res.cancel()
      throw new NaiadError('DFD_ERR_ORIGIN_CHANGED', `origin now announces ${length} bytes, the task has ${task.contentLength}`)
    }
    const pieceSize = task.pieceSize > 0 ? task.pieceSize : pieceSizeFor(length)
    const pieceCount = length >= 0 ? Math.ceil(length / pieceSize) : -1
    store.ensureTask(task.id, task.url, pieceSize)
    if (length >= 0) store.setTaskLength(task.id, length, pieceCount)
    try {
      hooks.layout(length, pieceSize, pieceCount)
    } catch (err) {
      res.cancel()
      throw err
    }

    const whole = createHash('sha256')
    let total = 0
    let num = 0
    let cur: Current | undefined
    /** The whole content's digest, taken when the last byte arrives (a hash gives one digest). */
    let wholeSha: Buffer | undefined
    live?.begin(task.id)

    const startPiece = async (): Promise<Current> => {
      const len = length >= 0 ? Math.min(pieceSize, length - num * pieceSize) : pieceSize
      const skip = store.hasPiece(task.id, num)
      const c: Current = { num, offset: num * pieceSize, length: len, fill: 0, hash: createHash('sha256'), out: undefined, skip, reservation: undefined, live: undefined, started: Date.now() }
      if (!skip) {
        c.reservation = await store.reserve(task.id, len, { waitMs: this.reserveWaitMs, signal })
        // A piece of unknown length cannot be promised to a peer.
        if (live !== undefined && length >= 0) c.live = live.open(task.id, num, c.offset, len)
        // The writes of one piece land in order, so that its live part grows from the start.
        let chain: Promise<void> = Promise.resolve()
        c.out = new StagedWriter({
          pool: this.c.staging,
          at: c.offset,
          write: (at, bytes) => {
            chain = chain.then(() => store.writeAt(task.id, at, bytes)).then(() => c.live?.advance(at + bytes.length - c.offset))
            return chain
          }
        })
      }
      return c
    }

    /** Pieces whose bytes are all in, oldest first, until their writes land and they are committed. */
    const landing: Array<{ piece: Current; done: Promise<void> }> = []
    /** The last of them: each commits after the one before, so pieces are stored and announced in order. */
    let previous: Promise<void> = Promise.resolve()

    /**
     * The last byte of the current piece arrived: check it, then store and announce it once
     * its writes have landed, while the next pieces are read. Waiting here for the disk left
     * the seed idle three quarters of a 256 MiB read on loopback (1.9 s of 2.5 s; a 1 MiB
     * write into this machine's page cache costs 1.5 ms of kernel time, more on a busy one).
     */
    const finishPiece = async (): Promise<void> => {
      const piece = cur!
      const sha = piece.hash.digest()
      const known = task.digest(piece.num)
      if (known !== undefined && !sha.equals(known)) {
        throw new NaiadError('DFD_ERR_ORIGIN_CHANGED', `piece ${piece.num} from the origin differs from the digest the source published`)
      }
      // The last piece of a content of known length: every byte went through the whole hash.
      if (length >= 0 && piece.offset + piece.fill === length) wholeSha = whole.digest()
      const contentSha = wholeSha
      cur = undefined
      num++
      const done = previous.then(async () => {
        await piece.out?.close()
        if (!piece.skip) {
          // A piece of a content without a length learns its length only now.
          const stored = { num: piece.num, offset: piece.offset, length: piece.fill, sha256: sha }
          store.commitPiece(task.id, stored, piece.reservation!)
          piece.reservation = undefined
          piece.live?.settle(contentSha === undefined ? { sha256: sha } : { sha256: sha, contentSha256: contentSha })
          live?.close(task.id, piece.num)
        }
        hooks.piece(piece.num, piece.fill, sha, !piece.skip, Date.now() - piece.started)
      })
      // Seen by whoever awaits it (the bound below, the end of the read or its failure).
      done.catch(() => {})
      previous = done
      landing.push({ piece, done })
      // Shifted only once stored: a piece whose write failed stays listed, so that its room is given back.
      while (landing.length > MAX_LANDING) {
        await landing[0].done
        landing.shift()
      }
    }

    try {
      for await (const chunk of res.body) {
        if (qos !== undefined) await qos.acquire(chunk.length, traffic, signal)
        whole.update(chunk)
        total += chunk.length
        if (length >= 0 && total > length) throw new NaiadError('DFD_ERR_ORIGIN_CHANGED', `origin sent more than its announced ${length} bytes`)
        let pos = 0
        while (pos < chunk.length) {
          cur ??= await startPiece()
          const n = Math.min(cur.length - cur.fill, chunk.length - pos)
          const part = chunk.subarray(pos, pos + n)
          cur.hash.update(part)
          cur.out?.push(part)
          cur.fill += n
          pos += n
          if (cur.fill === cur.length) {
            await finishPiece()
          } else if (cur.out !== undefined && cur.out.inFlight > 2 * STAGING_BYTES) {
            // Back-pressure: the body waits while the disk catches up.
            await cur.out.drained()
          }
        }
      }
      if (cur !== undefined && cur.fill > 0) {
        if (length >= 0) throw new NaiadError('DFD_ERR_ORIGIN_TRUNCATED', `origin closed the body after ${total} of ${length} bytes`)
        await finishPiece()
      }
      if (length >= 0 && total !== length) throw new NaiadError('DFD_ERR_ORIGIN_TRUNCATED', `origin closed the body after ${total} of ${length} bytes`)
      await previous
      store.setTaskLength(task.id, total, num)
      live?.end(task.id, new NaiadError('DFD_ERR_PIECE_UNAVAILABLE', 'the source read ended'))
      return { contentLength: total, pieceCount: num, sha256: wholeSha ?? whole.digest() }
    } catch (err) {
      res.cancel()
      await cur?.out?.abandon()
      // Pieces already whole land and are stored as they would have been; after a failed
      // write, none of the later ones is (their room is given back below).
      await previous.catch(() => {})
      const e = err instanceof NaiadError
        ? err
        : signal.aborted
          ? new NaiadError('PROTO_ERR_ABORTED', 'origin read aborted', { cause: err })
          : new NaiadError('DFD_ERR_ORIGIN_TRUNCATED', `origin body failed after ${total} bytes: ${(err as Error).message}`, { cause: err })
      for (const p of [...landing.map((l) => l.piece), ...(cur === undefined ? [] : [cur])]) {
        if (p.reservation !== undefined) await p.out?.abandon()
        p.live?.settle({ error: e })
        p.reservation?.release()
      }
      live?.end(task.id, e)
      throw e
    }
  }
}
