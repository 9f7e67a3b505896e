// The download side of the data channel: one long-lived connection per parent, opened on
// first use and proven to be the parent the scheduler named (its certificate's key is the
// parent's peer ID), with requests pipelined on it. Answers come back in request order;
// each one's bytes go to the request's sink as they arrive, with no copy of their own.

import { connect as tcpConnect, type Socket } from 'node:net'
import { connect as tlsConnect, type ConnectionOptions as TlsConnectionOptions } from 'node:tls'

import type { Logger } from 'pino'
import {
  DATA_CHANNEL_PROTOCOL, DataEnd, DataRequest, DataResponse, FRAME, NaiadError, raiseRemote, toNaiadError,
  type FrameType
} from '@naiad/proto'

import type { PeerAccess } from '../access/access.ts'
import { DataConnection, type ConnectionHandler, type DataTransport } from './connection.ts'
import type { NodeIdentity } from './identity.ts'

export interface DataTarget {
  peerId: string
  host: string
  port: number
  transport: DataTransport
}

/** Flow control a sink may use: pause the connection while its writes catch up. */
export interface Flow {
  pause(): void
  resume(): void
}

/** Where a piece's bytes go as they arrive (the download's piece writer). */
export interface PieceSink {
  /** The piece header; throw to refuse the piece (the rest of its bytes are then skipped). */
  header(response: { num: number; length: number; sha256: Uint8Array }, flow: Flow): void
  /** A slice of the piece, in order; it views the socket's buffer, so copy what must outlive the call. */
  data(bytes: Buffer): void
  /**
   * The last byte arrived (`end.sha256`: a live piece's digest, `end.contentSha256`: the whole
   * content's, when the sender knows them; else empty); resolves once the piece is verified
   * and stored.
   */
  end(end: { sha256: Uint8Array; contentSha256: Uint8Array }): Promise<void>
  /** The piece failed after its header (error in END, connection lost, cancelled). */
  abort(err: Error): void
}

export interface DataClientOptions {
  connectTimeoutMs: number
  /** A connection with nothing in flight for this long is closed. */
  idleMs: number
}

interface Pending {
  id: number
  sink: PieceSink
  resolve: () => void
  reject: (err: Error) => void
  /** Settled from the caller's side (aborted): frames that still come for it are skipped. */
  dropped: boolean
  /** The header arrived; the sink is receiving. */
  started: boolean
  /** Bytes of the body still to come. */
  left: number
  /** When the request reached the head of the queue, or last received a byte. */
  lastProgress: number
  idleMs: number
}

/** One connection to one parent and its queue of requests, answered in order. */
class ClientSession implements ConnectionHandler {
  readonly conn: DataConnection
  readonly queue: Pending[] = []
  private nextId = 1
  private lastUsed = Date.now()
  private readonly onClosed: (session: ClientSession) => void
  private readonly flow: Flow

  constructor(conn: DataConnection, onClosed: (session: ClientSession) => void) {
    this.conn = conn
    this.onClosed = onClosed
    this.flow = { pause: () => conn.pause(), resume: () => conn.resume() }
    conn.attach(this)
  }

  get idleSince(): number {
    return this.queue.length === 0 ? this.lastUsed : Number.POSITIVE_INFINITY
  }

  request(req: DataRequest, sink: PieceSink, idleMs: number, signal: AbortSignal): Promise<void> {
    const id = this.nextId++
    return new Promise<void>((resolve, reject) => {
      const entry: Pending = { id, sink, resolve, reject, dropped: false, started: false, left: 0, lastProgress: Date.now(), idleMs }
      const onAbort = (): void => {
        if (entry.dropped) return
        entry.dropped = true
        this.conn.send(FRAME.cancel, id, new Uint8Array(0))
        const err = signal.reason instanceof NaiadError ? signal.reason : new NaiadError('PROTO_ERR_ABORTED', 'piece request aborted', { cause: signal.reason })
        if (entry.started) sink.abort(err)
        reject(err)
      }
      entry.resolve = () => { signal.removeEventListener('abort', onAbort); resolve() }
      entry.reject = (err) => { signal.removeEventListener('abort', onAbort); reject(err) }
      if (signal.aborted) {
        reject(signal.reason as Error)
        return
      }
      signal.addEventListener('abort', onAbort, { once: true })
      if (this.queue.length === 0) entry.lastProgress = Date.now()
      this.queue.push(entry)
      this.lastUsed = Date.now()
      this.conn.send(FRAME.request, id, DataRequest.encode(req))
    })
  }

  frame(type: FrameType, id: number, payload: Buffer): void {
    const head = this.queue[0]
    if (head?.id !== id) throw new NaiadError('PROTO_ERR_DECODE', `data channel: an answer for request ${id} out of order`)
    head.lastProgress = Date.now()
    if (type === FRAME.response) {
      if (head.started) throw new NaiadError('PROTO_ERR_DECODE', `data channel: a second header for request ${id}`)
      const res = DataResponse.decode(payload)
      if (res.error !== undefined && res.error.code !== '') {
        this.finish(head, () => raiseRemote(res.error))
        return
      }
      head.started = true
      head.left = res.length
      if (head.dropped) return
      try {
        head.sink.header({ num: res.num, length: res.length, sha256: res.sha256 }, this.flow)
      } catch (err) {
        // Refused: skip the body, fail the request now.
        head.dropped = true
        head.reject(err as Error)
      }
      return
    }
    if (type === FRAME.end) {
      if (!head.started) throw new NaiadError('PROTO_ERR_DECODE', `data channel: END before the header of request ${id}`)
      const end = DataEnd.decode(payload)
      this.queue.shift()
      this.lastUsed = Date.now()
      if (this.queue[0] !== undefined) this.queue[0].lastProgress = Date.now()
      if (head.dropped) return
      if (end.error !== undefined && end.error.code !== '') {
        const err = remoteError(end.error)
        head.sink.abort(err)
        head.reject(err)
        return
      }
      if (head.left !== 0) {
        const err = new NaiadError('PROTO_ERR_DECODE', `data channel: piece ended ${head.left} bytes short`)
        head.sink.abort(err)
        head.reject(err)
        return
      }
      head.sink.end(end).then(head.resolve, head.reject)
      return
    }
    throw new NaiadError('PROTO_ERR_DECODE', `data channel: a server may not send frame type ${type}`)
  }

  data(id: number, bytes: Buffer): void {
    const head = this.queue[0]
    if (head?.id !== id || !head.started) throw new NaiadError('PROTO_ERR_DECODE', `data channel: piece bytes for request ${id} out of order`)
    if (bytes.length > head.left) throw new NaiadError('PROTO_ERR_DECODE', 'data channel: more bytes than the piece length')
    head.left -= bytes.length
    head.lastProgress = Date.now()
    if (!head.dropped) head.sink.data(bytes)
  }

  closed(err: Error | undefined): void {
    const e = err instanceof NaiadError ? err : new NaiadError('PROTO_ERR_DIAL', `data channel to ${this.conn.peerId || 'a parent'} closed: ${err?.message ?? 'by the peer'}`, { cause: err })
    for (const p of this.queue.splice(0)) {
      if (p.dropped) continue
      p.dropped = true
      if (p.started) p.sink.abort(e)
      p.reject(e)
    }
    this.onClosed(this)
  }

  /** Closes the connection when its head request made no progress for its idle limit. */
  checkIdle(now: number): void {
    const head = this.queue[0]
    if (head !== undefined && now - head.lastProgress > head.idleMs) {
      this.conn.close(new NaiadError('PROTO_ERR_TIMEOUT', `piece from ${this.conn.peerId} made no progress for ${head.idleMs} ms`))
    }
  }

  private finish(head: Pending, fn: () => void): void {
    this.queue.shift()
    this.lastUsed = Date.now()
    if (this.queue[0] !== undefined) this.queue[0].lastProgress = Date.now()
    if (head.dropped) return
    try {
      fn()
      head.resolve()
    } catch (err) {
      head.reject(err as Error)
    }
  }
}

/** The buffer a connection's socket reads into: TLS records are at most 16 KiB; a few fit. */
const READ_BUFFER_BYTES = 64 * 1024

export class DataClient {
  private readonly sessions = new Map<string, Promise<ClientSession>>()
  private readonly timer: NodeJS.Timeout
  private readonly components: { identity: NodeIdentity; access: PeerAccess; logger: Logger }
  private readonly options: DataClientOptions

  constructor(components: { identity: NodeIdentity; access: PeerAccess; logger: Logger }, options: DataClientOptions) {
    this.components = components
    this.options = options
    this.timer = setInterval(() => this.sweep(), 1000)
    this.timer.unref()
  }

  /**
   * Fetches one piece into `sink`; resolves when the sink has verified and stored it.
   * `idleMs` bounds how long the request may go without a byte once it is at the head of the
   * connection's queue (a stuck parent fails every request queued on it).
   */
  async fetch(target: DataTarget, req: DataRequest, sink: PieceSink, options: { signal: AbortSignal; idleMs: number }): Promise<void> {
    const session = await this.session(target, options.signal)
    await session.request(req, sink, options.idleMs, options.signal)
  }

  /** Pieces in flight to a parent (queued on its connection). */
  inflight(peerId: string): number {
    return this.known.get(peerId)?.queue.length ?? 0
  }

  private readonly known = new Map<string, ClientSession>()

  private session(target: DataTarget, signal: AbortSignal): Promise<ClientSession> {
    let s = this.sessions.get(target.peerId)
    if (s === undefined) {
      s = this.open(target)
      this.sessions.set(target.peerId, s)
      s.then((session) => this.known.set(target.peerId, session), () => this.sessions.delete(target.peerId))
    }
    return raceAbort(s, signal)
  }

  private async open(target: DataTarget): Promise<ClientSession> {
    const { identity, access } = this.components
    const signal = AbortSignal.timeout(this.options.connectTimeoutMs)
    // Piece bytes are read into one buffer per connection, reused for every read: a socket
    // that allocated a buffer per read cost the collector more than the hash did.
    // Set once the TLS handshake is done; bytes read before that wait in `early`.
    const made: { conn?: DataConnection } = {}
    const early: Buffer[] = []
    const onread = {
      buffer: Buffer.allocUnsafeSlow(READ_BUFFER_BYTES),
      callback: (n: number, buf: Buffer): boolean => {
        const chunk = buf.subarray(0, n)
        if (made.conn === undefined) early.push(Buffer.from(chunk))
        else made.conn.feed(chunk)
        return true
      }
    }
    let socket: Socket
    try {
      socket = await new Promise<Socket>((resolve, reject) => {
        const s = target.transport === 'tls'
          ? tlsConnect({
            host: target.host,
            port: target.port,
            secureContext: identity.tls,
            ALPNProtocols: [DATA_CHANNEL_PROTOCOL],
            // Self-signed: the key is checked against the peer ID once connected.
            rejectUnauthorized: false,
            checkServerIdentity: () => undefined,
            // Node passes `onread` on to the TLS socket's reads (its types do not list it).
            onread
          } as TlsConnectionOptions)
          : tcpConnect({ host: target.host, port: target.port, onread })
        const onAbort = (): void => { s.destroy(); reject(new NaiadError('PROTO_ERR_TIMEOUT', `connecting to ${target.host}:${target.port} timed out`)) }
        signal.addEventListener('abort', onAbort, { once: true })
        s.once(target.transport === 'tls' ? 'secureConnect' : 'connect', () => { signal.removeEventListener('abort', onAbort); resolve(s) })
        s.once('error', (err) => { signal.removeEventListener('abort', onAbort); s.destroy(); reject(err) })
      })
    } catch (err) {
      throw err instanceof NaiadError ? err : new NaiadError('PROTO_ERR_DIAL', `cannot reach the data channel of ${target.peerId} at ${target.host}:${target.port}: ${(err as { code?: string }).code ?? (err as Error).message}`, { cause: err })
    }
    const conn = new DataConnection(socket, {
      role: 'client', transport: target.transport, identity, access, expectPeer: target.peerId, handshakeTimeoutMs: this.options.connectTimeoutMs, externalReads: true
    })
    made.conn = conn
    for (const chunk of early.splice(0)) conn.feed(chunk)
    const session = new ClientSession(conn, (closed) => {
      if (this.known.get(target.peerId) === closed) {
        this.known.delete(target.peerId)
        this.sessions.delete(target.peerId)
      }
    })
    await conn.ready
    return session
  }

  private sweep(): void {
    const now = Date.now()
    for (const s of this.known.values()) {
      s.checkIdle(now)
      if (now - s.idleSince > this.options.idleMs) s.conn.close()
    }
  }

  close(): void {
    clearInterval(this.timer)
    for (const s of this.known.values()) s.conn.close(new NaiadError('PROTO_ERR_ABORTED', 'the node is shutting down'))
    this.known.clear()
    this.sessions.clear()
  }
}

/** The error a remote side reported, with its code when this side knows it. */
function remoteError(error: { code: string; message: string }): NaiadError {
  try {
    raiseRemote(error)
  } catch (err) {
    return toNaiadError(err, 'PROTO_ERR_REMOTE')
  }
  return new NaiadError('PROTO_ERR_REMOTE', error.message)
}

function raceAbort<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason as Error)
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason as Error)
    signal.addEventListener('abort', onAbort, { once: true })
    p.then((v) => { signal.removeEventListener('abort', onAbort); resolve(v) }, (err: unknown) => { signal.removeEventListener('abort', onAbort); reject(err as Error) })
  })
}
