// Serves verified pieces to other peers on the piece protocol, with a limit on concurrent
// uploads; a peer over the limit is told so at once and picks another parent.

import { randomBytes } from 'node:crypto'
import { channel } from 'node:diagnostics_channel'
import { once } from 'node:events'
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net'

import type { Stream } from '@libp2p/interface'
import { lpStream } from '@libp2p/utils'
import type { Logger } from 'pino'
import { EVENTS, LIMITS, PieceRequest, PieceResponse, PROTOCOLS, toNaiadError, type FabricNode } from '@naiad/proto'

import type { QosHooks } from '../qos/hooks.ts'
import type { PieceStore, StoredPiece } from '../storage/piece-store.ts'
import { frame, sendAll } from './frames.ts'

export interface UploadServerComponents {
  node: FabricNode
  store: PieceStore
  logger: Logger
  /** Upload bandwidth limits of the task's tenant (a no-op unless a QoS plugin installed one). */
  qos?: QosHooks
}

export interface UploadServerOptions {
  slots: number
  chunkBytes?: number
  /**
   * Offer piece bytes over a plain TCP listener on this host (port 0: any) to peers that ask:
   * the request, the digests and a one-time token still travel on the encrypted fabric; the
   * bytes themselves do not, which costs their confidentiality on the wire and saves most of
   * the CPU a transfer takes. Every piece is SHA-256-verified by the receiver either way.
   */
  dataChannel?: { host: string; port: number }
}

interface Ticket {
  taskId: string
  piece: StoredPiece
  peer: string
  release: () => void
  timer: NodeJS.Timeout
}

const TOKEN_BYTES = 16
const TICKET_TTL_MS = 10_000

const uploaded = channel(EVENTS.pieceUploaded)
const uploadFailed = channel(EVENTS.pieceUploadFailed)

export class UploadServer {
  private active = 0
  private dataServer: Server | undefined
  private dataPort = 0
  private readonly tickets = new Map<string, Ticket>()

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
    if (this.options.dataChannel !== undefined) {
      this.dataServer = createServer((socket) => { this.serveData(socket) })
      this.dataServer.listen(this.options.dataChannel.port, this.options.dataChannel.host)
      await once(this.dataServer, 'listening')
      this.dataPort = (this.dataServer.address() as AddressInfo).port
    }
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
    for (const [token, t] of this.tickets) this.dropTicket(token, t)
    this.dataServer?.close()
  }

  private dropTicket(token: string, t: Ticket): void {
    this.tickets.delete(token)
    clearTimeout(t.timer)
    t.release()
  }

  /** A data-channel connection: a token, then the piece's bytes, then the end. */
  private serveData(socket: Socket): void {
    const { store, logger } = this.components
    socket.setTimeout(LIMITS.pieceTimeoutMs, () => socket.destroy())
    let got = Buffer.alloc(0)
    const onData = (d: Buffer): void => {
      got = Buffer.concat([got, d])
      if (got.length < TOKEN_BYTES) return
      socket.off('data', onData)
      socket.pause()
      const token = got.subarray(0, TOKEN_BYTES).toString('hex')
      const t = this.tickets.get(token)
      if (t === undefined) {
        socket.destroy()
        return
      }
      this.tickets.delete(token)
      clearTimeout(t.timer)
      void (async () => {
        const chunk = this.options.chunkBytes ?? 1024 * 1024
        for (let pos = 0; pos < t.piece.length; pos += chunk) {
          const data = await store.read(t.taskId, t.piece.offset + pos, Math.min(chunk, t.piece.length - pos))
          if (!socket.write(data)) await once(socket, 'drain')
        }
        socket.end()
        uploaded.publish({ taskId: t.taskId, num: t.piece.num, length: t.piece.length, peerId: t.peer })
      })().catch((err: unknown) => {
        uploadFailed.publish({ taskId: t.taskId, num: t.piece.num, peerId: t.peer, code: toNaiadError(err, 'DFD_ERR_STORE').code })
        logger.debug({ err: (err as Error).message }, 'data-channel upload failed')
        socket.destroy()
      }).finally(() => t.release())
    }
    socket.on('data', onData)
    socket.on('error', () => socket.destroy())
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
    let handedOver = false
    try {
      const piece = store.getPiece(req.taskId, req.num)
      if (piece === undefined) {
        await reply({ error: { code: 'DFD_ERR_PIECE_UNAVAILABLE', message: `piece ${req.num} of task ${req.taskId} is not here` } })
        await stream.close({ signal })
        return
      }
      const qos = this.components.qos
      if (qos?.active === true) {
        // The peer does not say its class; the tenant's upload share is what is limited here.
        await qos.acquire(piece.length, { priority: 'on-demand', tenantKey: store.getTask(req.taskId)?.url ?? '', direction: 'upload' }, signal)
      }
      if (req.dataChannel && this.dataServer !== undefined) {
        // The slot and the pin stay taken until the bytes went out on the data channel.
        const token = randomBytes(TOKEN_BYTES)
        const key = token.toString('hex')
        let released = false
        const release = (): void => {
          if (released) return
          released = true
          unpin()
          this.active--
        }
        const ticket: Ticket = { taskId: req.taskId, piece, peer, release, timer: setTimeout(() => this.dropTicket(key, ticket), TICKET_TTL_MS) }
        this.tickets.set(key, ticket)
        handedOver = true
        await reply({ num: piece.num, length: piece.length, sha256: piece.sha256, dataPort: this.dataPort, token })
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
      const e = toNaiadError(err, 'DFD_ERR_STORE', 'upload')
      uploadFailed.publish({ taskId: req.taskId, num: req.num, peerId: peer, code: e.code })
      throw e
    } finally {
      if (!handedOver) {
        unpin()
        this.active--
      }
    }
  }
}
