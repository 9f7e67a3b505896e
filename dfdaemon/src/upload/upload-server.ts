// Serves verified pieces to other peers on the piece protocol, with a limit on concurrent
// uploads; a peer over the limit is told so at once and picks another parent.

import { channel } from 'node:diagnostics_channel'

import type { Stream } from '@libp2p/interface'
import { lpStream } from '@libp2p/utils'
import type { Logger } from 'pino'
import { EVENTS, LIMITS, PieceRequest, PieceResponse, PROTOCOLS, toNaiadError, type FabricNode } from '@naiad/proto'

import type { PieceStore } from '../storage/piece-store.ts'
import { frame, sendAll } from './frames.ts'

export interface UploadServerComponents {
  node: FabricNode
  store: PieceStore
  logger: Logger
}

export interface UploadServerOptions {
  slots: number
  chunkBytes?: number
}

const uploaded = channel(EVENTS.pieceUploaded)

export class UploadServer {
  private active = 0

  private readonly components: UploadServerComponents
  private readonly options: UploadServerOptions

  constructor(components: UploadServerComponents, options: UploadServerOptions) {
    this.components = components
    this.options = options
  }

  get activeUploads(): number {
    return this.active
  }

  async start(): Promise<void> {
    const { node } = this.components
    await node.handle(PROTOCOLS.piece, (stream, connection) => {
      const signal = AbortSignal.timeout(LIMITS.pieceTimeoutMs)
      this.serve(stream, connection.remotePeer.toString(), signal).catch((err: unknown) => {
        this.components.logger.debug({ err: (err as Error).message, peer: connection.remotePeer.toString() }, 'piece upload failed')
        stream.abort(err as Error)
      })
    }, { maxInboundStreams: Math.max(64, this.options.slots * 4) })
  }

  async stop(): Promise<void> {
    await this.components.node.unhandle(PROTOCOLS.piece)
  }

  private async serve(stream: Stream, peer: string, signal: AbortSignal): Promise<void> {
    const { store } = this.components
    const lp = lpStream(stream, { maxDataLength: LIMITS.maxMessageBytes })
    const req = PieceRequest.decode((await lp.read({ signal })).subarray())
    const reply = async (res: Partial<PieceResponse>): Promise<void> => {
      await sendAll(stream, frame(PieceResponse.encode(res)), signal)
    }
    if (req.bitmapOnly) {
      await reply({ bitmap: store.bitmap(req.taskId).toBytes() })
      await stream.close({ signal })
      return
    }
    if (this.active >= this.options.slots) {
      await reply({ error: { code: 'DFD_ERR_UPLOAD_BUSY', message: `all ${this.options.slots} upload slots are busy` } })
      await stream.close({ signal })
      return
    }
    this.active++
    const unpin = store.pin(req.taskId)
    try {
      const piece = store.getPiece(req.taskId, req.num)
      if (piece === undefined) {
        await reply({ error: { code: 'DFD_ERR_PIECE_UNAVAILABLE', message: `piece ${req.num} of task ${req.taskId} is not here` } })
        await stream.close({ signal })
        return
      }
      await reply({ num: piece.num, length: piece.length, sha256: piece.sha256 })
      const chunk = this.options.chunkBytes ?? 1024 * 1024
      for (let pos = 0; pos < piece.length; pos += chunk) {
        const n = Math.min(chunk, piece.length - pos)
        await sendAll(stream, await store.read(req.taskId, piece.offset + pos, n), signal)
      }
      await stream.close({ signal })
      uploaded.publish({ taskId: req.taskId, num: piece.num, length: piece.length, peerId: peer })
    } catch (err) {
      throw toNaiadError(err, 'DFD_ERR_STORE', 'upload')
    } finally {
      unpin()
      this.active--
    }
  }
}
