// The upload side of the data channel: a TLS (or, by the operator's choice, plain TCP)
// listener beside the fabric. Each connection answers its requests in order: a stored piece
// straight from the piece store (read ahead into a few reused buffers, each handed to the
// socket as it fills), or — on the task's trusted source only — a live piece as its bytes
// arrive from the origin, closed by its digest. Nothing is sent before the cluster's
// admission allowed the peer (handshake) and its grant for the task (each request).

import { channel } from 'node:diagnostics_channel'
import { once } from 'node:events'
import { createServer as createTcpServer, type AddressInfo, type Server, type Socket } from 'node:net'
import { createServer as createTlsServer } from 'node:tls'

import type { Logger } from 'pino'
import {
  DATA_CHANNEL_PROTOCOL, DataEnd, DataRequest, DataResponse, EVENTS, FRAME, FRAME_HEADER_BYTES, NaiadError, toNaiadError,
  type FrameType
} from '@naiad/proto'

import { DOWNLOAD_DEFAULTS } from '../config/options.ts'
import type { PeerAccess } from '../access/access.ts'
import type { QosHooks } from '../qos/hooks.ts'
import type { LivePiece, LivePieces } from '../storage/live-pieces.ts'
import type { PieceStore, StoredPiece } from '../storage/piece-store.ts'
import { BufferPool, BufferShelf } from './buffer-pool.ts'
import { DataConnection, type ConnectionHandler, type DataTransport } from './connection.ts'
import { TLS_CIPHERS, type NodeIdentity } from './identity.ts'

export interface DataServerComponents {
  store: PieceStore
  /** Pieces this node's source reads are writing right now. */
  live: LivePieces
  /** Whether this node is the trusted source of a task (only then are its live pieces offered). */
  isSource: (taskId: string) => boolean
  identity: NodeIdentity
  access: PeerAccess
  logger: Logger
  /** Upload bandwidth limits of the task's tenant (a no-op unless a QoS plugin installed one). */
  qos?: QosHooks
}

export interface DataServerOptions {
  host: string
  port: number
  transport: DataTransport
  /** Requests served at once over all connections; more are answered DFD_ERR_UPLOAD_BUSY. */
  slots: number
  /** Size of the read buffers (and so of DATA frames). */
  chunkBytes?: number
  handshakeTimeoutMs?: number
  /** Longest wait for a live piece the origin has not reached yet. */
  liveWaitMs?: number
  /** Longest a piece may take to go out before the request fails. */
  pieceTimeoutMs?: number
  maxConnections?: number
}

const BUFFERS_PER_CONNECTION = 3
const TASK_ID = /^[0-9a-f]{64}$/
const uploaded = channel(EVENTS.pieceUploaded)
const uploadFailed = channel(EVENTS.pieceUploadFailed)

export class DataServer {
  private server: Server | undefined
  private boundPort = 0
  private active = 0
  private readonly connections = new Set<DataConnection>()
  /**
   * Read buffers idle between requests, shared by every connection: a child asks each of its
   * parents for a few pieces only, and a pool of its own per connection had allocated three
   * fresh 1 MiB buffers for every connection (most used once or twice).
   */
  private shelf: BufferShelf | undefined
  private readonly components: DataServerComponents
  private readonly options: DataServerOptions

  constructor(components: DataServerComponents, options: DataServerOptions) {
    this.components = components
    this.options = options
  }

  get port(): number {
    return this.boundPort
  }

  get transport(): DataTransport {
    return this.options.transport
  }

  get activeUploads(): number {
    return this.active
  }

  async start(): Promise<void> {
    const { identity } = this.components
    const handshakeTimeoutMs = this.options.handshakeTimeoutMs ?? 10_000
    const accept = (socket: Socket): void => {
      if (this.connections.size >= (this.options.maxConnections ?? 1024)) {
        socket.destroy()
        return
      }
      const conn = new DataConnection(socket, { role: 'server', transport: this.options.transport, identity, access: this.components.access, handshakeTimeoutMs })
      this.connections.add(conn)
      conn.attach(new ServerSession(this, conn))
    }
    if (this.options.transport === 'tls') {
      // The server's context is made once, here (a client's would be per connection: see identity.tls).
      this.server = createTlsServer({
        key: identity.keyPem,
        cert: identity.cert,
        ciphers: TLS_CIPHERS,
        requestCert: true,
        // Certificates are self-signed: what is checked is the key, against the peer ID.
        rejectUnauthorized: false,
        minVersion: 'TLSv1.3',
        ALPNProtocols: [DATA_CHANNEL_PROTOCOL],
        handshakeTimeout: handshakeTimeoutMs
      }, accept)
      this.server.on('tlsClientError', () => {})
    } else {
      this.server = createTcpServer(accept)
    }
    this.server.listen(this.options.port, this.options.host)
    await once(this.server, 'listening')
    this.boundPort = (this.server.address() as AddressInfo).port
  }

  async stop(): Promise<void> {
    for (const c of this.connections) c.close(new NaiadError('PROTO_ERR_ABORTED', 'the node is shutting down'))
    if (this.server !== undefined) await new Promise<void>((resolve) => this.server!.close(() => resolve()))
  }

  /** @internal */
  forget(conn: DataConnection): void {
    this.connections.delete(conn)
  }

  /** @internal A slot for one request, or undefined when all are busy. */
  takeSlot(): (() => void) | undefined {
    if (this.active >= this.options.slots) return undefined
    this.active++
    let held = true
    return () => {
      if (!held) return
      held = false
      this.active--
    }
  }

  /** @internal */
  get settings(): Required<Pick<DataServerOptions, 'chunkBytes' | 'liveWaitMs' | 'pieceTimeoutMs'>> & { slots: number } {
    return {
      chunkBytes: this.options.chunkBytes ?? 1024 * 1024,
      liveWaitMs: this.options.liveWaitMs ?? 30_000,
      pieceTimeoutMs: this.options.pieceTimeoutMs ?? DOWNLOAD_DEFAULTS.pieceTimeoutMs,
      slots: this.options.slots
    }
  }

  /** @internal Idle read buffers of every connection (enough for the slots to read ahead). */
  get buffers(): BufferShelf {
    this.shelf ??= new BufferShelf(this.options.slots * BUFFERS_PER_CONNECTION)
    return this.shelf
  }

  /** @internal */
  get parts(): DataServerComponents {
    return this.components
  }
}

/** One connection's requests, answered in order. */
class ServerSession implements ConnectionHandler {
  private readonly server: DataServer
  private readonly conn: DataConnection
  private readonly queue: Array<{ id: number; req: DataRequest }> = []
  private readonly cancelled = new Set<number>()
  private current: { id: number; abort: AbortController } | undefined
  private running = false
  private pool: BufferPool | undefined
  private isClosed = false

  constructor(server: DataServer, conn: DataConnection) {
    this.server = server
    this.conn = conn
  }

  frame(type: FrameType, id: number, payload: Buffer): void {
    if (type === FRAME.request) {
      if (this.queue.length >= 256) throw new NaiadError('PROTO_ERR_MESSAGE_TOO_LARGE', 'data channel: more than 256 requests queued')
      this.queue.push({ id, req: DataRequest.decode(payload) })
      this.pump()
      return
    }
    if (type === FRAME.cancel) {
      if (this.current?.id === id) this.current.abort.abort(new NaiadError('PROTO_ERR_ABORTED', 'the requester cancelled the piece'))
      else if (this.queue.some((q) => q.id === id)) this.cancelled.add(id)
      return
    }
    throw new NaiadError('PROTO_ERR_DECODE', `data channel: a requester may not send frame type ${type}`)
  }

  data(): void {
    throw new NaiadError('PROTO_ERR_DECODE', 'data channel: a requester may not send piece bytes')
  }

  closed(): void {
    this.isClosed = true
    this.current?.abort.abort(new NaiadError('PROTO_ERR_ABORTED', 'data channel closed'))
    this.server.forget(this.conn)
  }

  private pump(): void {
    if (this.running) return
    this.running = true
    void (async () => {
      try {
        while (!this.isClosed) {
          const next = this.queue.shift()
          if (next === undefined) break
          if (this.cancelled.delete(next.id)) {
            this.respondError(next.id, new NaiadError('PROTO_ERR_ABORTED', 'the requester cancelled the piece'))
            continue
          }
          const abort = new AbortController()
          this.current = { id: next.id, abort }
          // One controller and a plain timer per request: a composite signal per piece
          // (AbortSignal.any) left weak references and finalizers for the collector.
          const timer = setTimeout(() => abort.abort(new DOMException('The operation was aborted due to timeout', 'TimeoutError')), this.server.settings.pieceTimeoutMs + this.server.settings.liveWaitMs)
          try {
            await this.serve(next.id, next.req, abort.signal)
          } finally {
            clearTimeout(timer)
          }
          this.current = undefined
        }
      } catch (err) {
        // A failure after the piece header leaves the stream unusable mid-frame: close it.
        this.server.parts.logger.debug({ err: (err as Error).message, peer: this.conn.peerId }, 'data channel upload failed; closing the connection')
        this.conn.close(err as Error)
      } finally {
        this.running = false
      }
    })()
  }

  private respondError(id: number, err: NaiadError): void {
    this.conn.send(FRAME.response, id, DataResponse.encode({ error: { code: err.code, message: err.message } }))
  }

  /** Answers one request; resolves when its last frame was handed to the socket. Throws only when the stream cannot go on. */
  private async serve(id: number, req: DataRequest, signal: AbortSignal): Promise<void> {
    const { store, access, live, isSource, qos } = this.server.parts
    const peer = this.conn.peerId
    if (!TASK_ID.test(req.taskId)) {
      this.respondError(id, new NaiadError('DFD_ERR_BAD_REQUEST', 'a task ID is 64 lowercase hex digits'))
      return
    }
    if (!access.authorize(peer, req.taskId, req.grant)) {
      this.respondError(id, new NaiadError('DFD_ERR_PIECE_FORBIDDEN', `no valid grant for ${peer} to fetch task ${req.taskId}`))
      return
    }
    const release = this.server.takeSlot()
    if (release === undefined) {
      this.respondError(id, new NaiadError('DFD_ERR_UPLOAD_BUSY', `all ${this.server.settings.slots} upload slots are busy`))
      return
    }
    const unpin = store.pin(req.taskId)
    const receivedAt = Date.now()
    let headerSent = false
    try {
      let stored = store.getPiece(req.taskId, req.num)
      let livePiece: LivePiece | undefined
      if (stored === undefined && req.live && isSource(req.taskId)) {
        const wait = AbortSignal.any([signal, AbortSignal.timeout(this.server.settings.liveWaitMs)])
        livePiece = await live.await(req.taskId, req.num, () => store.hasPiece(req.taskId, req.num), wait).catch(() => undefined)
        if (livePiece === undefined) stored = store.getPiece(req.taskId, req.num)
      }
      if (stored === undefined && livePiece === undefined) {
        this.respondError(id, new NaiadError('DFD_ERR_PIECE_UNAVAILABLE', `piece ${req.num} of task ${req.taskId} is not here`))
        return
      }
      const length = stored?.length ?? livePiece!.length
      if (qos?.active === true) {
        // The peer does not say its class; the tenant's upload share is what is limited here.
        await qos.acquire(length, { priority: 'on-demand', tenantKey: store.getTask(req.taskId)?.url ?? '', direction: 'upload' }, signal)
      }
      this.conn.send(FRAME.response, id, DataResponse.encode({ num: req.num, length, sha256: stored?.sha256 ?? new Uint8Array(0) }))
      headerSent = true
      if (stored !== undefined) {
        await this.sendStored(id, req.taskId, stored, signal)
      } else {
        await this.sendLive(id, req.taskId, livePiece!, signal)
      }
      uploaded.publish({ taskId: req.taskId, num: req.num, length, peerId: peer })
      // The per-piece timeline of a pull (bench/README.md): off unless the level is debug.
      if (this.server.parts.logger.isLevelEnabled('debug')) {
        this.server.parts.logger.debug({ task: req.taskId.slice(0, 12), piece: req.num, live: livePiece !== undefined, receivedAt, waitedMs: Date.now() - receivedAt }, 'piece sent')
      }
    } catch (err) {
      const e = toNaiadError(err, 'DFD_ERR_STORE', 'upload')
      uploadFailed.publish({ taskId: req.taskId, num: req.num, peerId: peer, code: e.code })
      if (!headerSent) {
        this.respondError(id, e)
        return
      }
      // After the header the requester counts bytes: an error ends the body early, in END.
      // The DATA frames already handed to the socket are whole, so the stream stays in step.
      this.conn.send(FRAME.end, id, DataEnd.encode({ error: { code: e.code, message: e.message } }))
    } finally {
      unpin()
      release()
    }
  }

  private buffers(): BufferPool {
    // Each buffer is a whole DATA frame: its header, then one chunk read from disk behind it.
    this.pool ??= new BufferPool(BUFFERS_PER_CONNECTION, FRAME_HEADER_BYTES + this.server.settings.chunkBytes, this.server.buffers)
    return this.pool
  }

  /**
   * Sends `count` bytes of the task's data file from `offset` as DATA frames: each buffer is
   * read from disk once and handed to the socket alone, once the socket took what came
   * before it (see DataConnection.sendData); reads run ahead of the socket by the pool's
   * few buffers, which come back when the socket has taken their bytes.
   */
  private async sendBytes(id: number, taskId: string, offset: number, count: number, signal: AbortSignal): Promise<void> {
    const { store } = this.server.parts
    const pool = this.buffers()
    let failure: Error | undefined
    for (let pos = 0; pos < count;) {
      const buf = await pool.take(signal)
      const n = Math.min(buf.length - FRAME_HEADER_BYTES, count - pos)
      const frame = buf.subarray(0, FRAME_HEADER_BYTES + n)
      try {
        await store.readInto(taskId, offset + pos, frame.subarray(FRAME_HEADER_BYTES))
        await this.conn.idle(signal)
        if (failure !== undefined) throw failure
      } catch (err) {
        pool.give(buf)
        throw err
      }
      pos += n
      this.conn.sendData(id, frame, (err) => {
        if (err !== undefined && err !== null) failure ??= err
        pool.give(buf)
      })
    }
  }

  private async sendStored(id: number, taskId: string, piece: StoredPiece, signal: AbortSignal): Promise<void> {
    await this.sendBytes(id, taskId, piece.offset, piece.length, signal)
    const { store } = this.server.parts
    // A task still downloading has no whole-content digest to send: no database read per piece for it.
    const task = store.isComplete(taskId) ? store.getTask(taskId) : undefined
    this.conn.send(FRAME.end, id, DataEnd.encode(task?.complete === true && task.sha256 !== null ? { contentSha256: task.sha256 } : {}))
  }

  /** A piece the origin is still sending: its bytes as they reach the disk, then its digest. */
  private async sendLive(id: number, taskId: string, piece: LivePiece, signal: AbortSignal): Promise<void> {
    let sent = 0
    for (;;) {
      const ready = piece.written
      if (ready > sent) {
        await this.sendBytes(id, taskId, piece.offset + sent, ready - sent, signal)
        sent = ready
        continue
      }
      const outcome = piece.outcome
      if (outcome !== undefined) {
        if ('error' in outcome) throw outcome.error
        if (sent !== piece.length) throw new NaiadError('DFD_ERR_ORIGIN_TRUNCATED', `live piece ${piece.num} ended after ${sent} of ${piece.length} bytes`)
        this.conn.send(FRAME.end, id, DataEnd.encode({ sha256: outcome.sha256, contentSha256: outcome.contentSha256 ?? new Uint8Array(0) }))
        return
      }
      signal.throwIfAborted()
      await piece.changed(signal)
    }
  }
}
