// One data-channel connection, either end: the socket, the frame reader and the opening
// handshake. Under TLS the certificates already proved both identities (each side's key is
// its fabric identity key): the HELLOs only carry the protocol version and the membership
// credentials. In plaintext each side signs the other's fresh nonce (AUTH). Either way the
// cluster's admission (PeerAccess.admit) sees the proven peer ID before any request.

import { randomBytes } from 'node:crypto'
import type { Socket } from 'node:net'
import type { TLSSocket } from 'node:tls'

import {
  DATA_CHANNEL_PROTOCOL, DataAuth, DataHello, dataAuthPayload, encodeFrame, FRAME, FRAME_HEADER_BYTES, frameHeader,
  FrameReader, NaiadError, type FrameType
} from '@naiad/proto'

import type { PeerAccess } from '../access/access.ts'
import { peerIdOfCertificate, signWith, verifyPeerSignature, type NodeIdentity } from './identity.ts'

export type DataTransport = 'tls' | 'tcp'

export interface ConnectionOptions {
  role: 'client' | 'server'
  transport: DataTransport
  identity: NodeIdentity
  access: PeerAccess
  /** Client: the peer ID the scheduler named; anything else is refused. */
  expectPeer?: string
  handshakeTimeoutMs: number
  /**
   * The owner reads the socket itself (with `onread`, into one buffer of its own, no
   * allocation per read) and hands the bytes to feed(); else the connection listens to 'data'.
   */
  externalReads?: boolean
}

/** What the owner (the data client or server) does with an open connection's frames. */
export interface ConnectionHandler {
  frame(type: FrameType, id: number, payload: Buffer): void
  data(id: number, bytes: Buffer, remaining: number): void
  closed(err: Error | undefined): void
}

const NONCE_BYTES = 32

export class DataConnection {
  readonly socket: Socket
  /** The other side's peer ID, once proven. */
  peerId = ''
  /** Settles when the handshake is done (identity proven, admitted) or failed. */
  readonly ready: Promise<void>
  private readonly options: ConnectionOptions
  private readonly reader: FrameReader
  private handler: ConnectionHandler | undefined
  private state: 'hello' | 'auth' | 'admitting' | 'open' | 'closed' = 'hello'
  /** Frames that arrived while admission was deciding (a client's first requests). */
  private early: Array<[FrameType, number, Buffer]> = []
  private readonly nonce: Uint8Array
  private theirHello: DataHello | undefined
  private settle!: { resolve: () => void; reject: (err: Error) => void }
  private closeError: Error | undefined
  private readonly timer: NodeJS.Timeout
  /** Frames handed to the socket that it has not taken yet, and who waits for none to be left. */
  private unwritten = 0
  private readonly idleWaiters: Array<() => void> = []
  private readonly taken = (): void => {
    if (--this.unwritten === 0) for (const w of this.idleWaiters.splice(0)) w()
  }

  constructor(socket: Socket, options: ConnectionOptions) {
    this.socket = socket
    this.options = options
    this.nonce = options.transport === 'tcp' ? randomBytes(NONCE_BYTES) : new Uint8Array(0)
    this.ready = new Promise((resolve, reject) => { this.settle = { resolve, reject } })
    this.ready.catch(() => {})
    this.reader = new FrameReader({
      frame: (type, id, payload) => this.onFrame(type, id, payload),
      data: (id, bytes, remaining) => {
        if (this.state !== 'open') throw new NaiadError('PROTO_ERR_DECODE', 'data channel: piece bytes before the handshake')
        this.handler?.data(id, bytes, remaining)
      }
    })
    socket.setNoDelay(true)
    if (options.externalReads !== true) socket.on('data', (chunk: Buffer) => this.feed(chunk))
    socket.on('error', (err) => this.close(err))
    socket.on('close', () => this.close(this.closeError ?? new NaiadError('PROTO_ERR_DECODE', 'data channel closed by the peer')))
    this.timer = setTimeout(() => {
      if (this.state !== 'open') this.close(new NaiadError('PROTO_ERR_TIMEOUT', `data channel handshake took over ${options.handshakeTimeoutMs} ms`))
    }, options.handshakeTimeoutMs)
    this.timer.unref()
    if (options.transport === 'tls') {
      // Under TLS the key the certificate holds is proven: it is the peer's identity.
      try {
        const cert = (socket as TLSSocket).getPeerX509Certificate()
        if (cert === undefined) throw new NaiadError('PROTO_ERR_IDENTITY', 'the peer presented no certificate')
        this.peerId = peerIdOfCertificate(cert)
      } catch (err) {
        this.close(err instanceof NaiadError ? err : new NaiadError('PROTO_ERR_IDENTITY', `the peer's certificate names no peer ID: ${(err as Error).message}`, { cause: err }))
        return
      }
      if (options.expectPeer !== undefined && this.peerId !== options.expectPeer) {
        this.close(new NaiadError('PROTO_ERR_IDENTITY', `the data channel at ${socket.remoteAddress}:${socket.remotePort} is ${this.peerId}, not ${options.expectPeer}`))
        return
      }
    }
    this.send(FRAME.hello, 0, DataHello.encode({
      protocol: DATA_CHANNEL_PROTOCOL,
      peerId: options.identity.peerId,
      nonce: this.nonce,
      credential: options.access.credential()
    }))
  }

  /**
   * Bytes read from the socket, in order. They may view a buffer the reader reuses: frames
   * and handlers copy what they keep.
   */
  feed(chunk: Buffer): void {
    if (this.state === 'closed') return
    try {
      this.reader.push(chunk)
    } catch (err) {
      this.close(err as Error)
    }
  }

  /** Takes over the connection's frames once it is open. */
  attach(handler: ConnectionHandler): void {
    this.handler = handler
    if (this.state === 'closed') handler.closed(this.closeError)
  }

  get open(): boolean {
    return this.state === 'open'
  }

  /** A control frame. */
  send(type: FrameType, id: number, payload: Uint8Array): void {
    if (this.state === 'closed') return
    this.unwritten++
    this.socket.write(encodeFrame(type, id, payload), this.taken)
  }

  /**
   * A DATA frame whose payload follows FRAME_HEADER_BYTES of room at the start of `frame`:
   * the header is written into that room and the frame goes out as one buffer. Send it once
   * idle() resolved: frames queued behind a write in progress leave together as one writev,
   * and under TLS the buffers of a writev are first joined into a fresh allocation, a copy of
   * every byte; one buffer per write is encrypted where it lies. `done` runs once the socket
   * has taken the bytes (the buffer may then be reused).
   */
  sendData(id: number, frame: Buffer, done: (err?: Error | null) => void): void {
    if (this.state === 'closed') {
      done(this.closeError ?? new NaiadError('PROTO_ERR_ABORTED', 'data channel closed'))
      return
    }
    frameHeader(FRAME.data, id, frame.length - FRAME_HEADER_BYTES, frame)
    this.unwritten++
    this.socket.write(frame, (err) => {
      this.taken()
      done(err)
    })
  }

  /** Resolves once the socket has taken every frame handed to it (rejects when `signal` fires first). */
  idle(signal: AbortSignal): Promise<void> {
    signal.throwIfAborted()
    if (this.unwritten === 0) return Promise.resolve()
    return new Promise<void>((resolve, reject) => {
      const onAbort = (): void => {
        const i = this.idleWaiters.indexOf(done)
        if (i >= 0) this.idleWaiters.splice(i, 1)
        reject(signal.reason as Error)
      }
      const done = (): void => {
        signal.removeEventListener('abort', onAbort)
        resolve()
      }
      this.idleWaiters.push(done)
      signal.addEventListener('abort', onAbort, { once: true })
    })
  }

  pause(): void {
    this.socket.pause()
  }

  resume(): void {
    this.socket.resume()
  }

  close(err?: Error): void {
    if (this.state === 'closed') return
    const was = this.state
    this.state = 'closed'
    this.closeError = err
    clearTimeout(this.timer)
    this.socket.destroy()
    if (was !== 'open') this.settle.reject(err ?? new NaiadError('PROTO_ERR_ABORTED', 'data channel closed during its handshake'))
    this.handler?.closed(err)
  }

  private onFrame(type: FrameType, id: number, payload: Buffer): void {
    if (this.state === 'admitting' && type !== FRAME.hello && type !== FRAME.auth && type !== FRAME.data) {
      if (this.early.length >= 1024) throw new NaiadError('PROTO_ERR_MESSAGE_TOO_LARGE', 'data channel: too many requests before admission')
      this.early.push([type, id, payload])
      return
    }
    if (this.state === 'open') {
      if (type === FRAME.hello || type === FRAME.auth) throw new NaiadError('PROTO_ERR_DECODE', 'data channel: a second handshake')
      this.handler?.frame(type, id, payload)
      return
    }
    if (this.state === 'hello' && type === FRAME.hello) {
      const hello = DataHello.decode(payload)
      if (hello.protocol !== DATA_CHANNEL_PROTOCOL) throw new NaiadError('PROTO_ERR_DECODE', `data channel: the peer speaks ${hello.protocol || 'nothing'}, not ${DATA_CHANNEL_PROTOCOL}`)
      this.theirHello = hello
      if (this.options.transport === 'tls') {
        if (hello.peerId !== this.peerId) throw new NaiadError('PROTO_ERR_IDENTITY', `the peer says it is ${hello.peerId}, its certificate is ${this.peerId}`)
        this.admit()
        return
      }
      if (this.options.expectPeer !== undefined && hello.peerId !== this.options.expectPeer) {
        throw new NaiadError('PROTO_ERR_IDENTITY', `the data channel at ${this.socket.remoteAddress}:${this.socket.remotePort} says it is ${hello.peerId}, not ${this.options.expectPeer}`)
      }
      if (hello.nonce.length !== NONCE_BYTES) throw new NaiadError('PROTO_ERR_DECODE', 'data channel: a plaintext HELLO without a nonce')
      this.state = 'auth'
      this.send(FRAME.auth, 0, DataAuth.encode({ signature: signWith(this.options.identity, dataAuthPayload(this.options.role, hello.nonce, this.nonce)) }))
      return
    }
    if (this.state === 'auth' && type === FRAME.auth) {
      const hello = this.theirHello!
      const theirRole = this.options.role === 'client' ? 'server' : 'client'
      const { signature } = DataAuth.decode(payload)
      if (!verifyPeerSignature(hello.peerId, dataAuthPayload(theirRole, this.nonce, hello.nonce), signature)) {
        throw new NaiadError('PROTO_ERR_IDENTITY', `the peer could not prove it is ${hello.peerId}`)
      }
      this.peerId = hello.peerId
      this.admit()
      return
    }
    throw new NaiadError('PROTO_ERR_DECODE', `data channel: unexpected frame ${type} during the handshake`)
  }

  /** Identity proven: the cluster's admission decides whether the connection may be used. */
  private admit(): void {
    this.state = 'admitting'
    const hello = this.theirHello!
    const signal = AbortSignal.timeout(this.options.handshakeTimeoutMs)
    Promise.resolve()
      .then(() => this.options.access.admit(this.peerId, hello.credential, signal))
      .then((ok) => {
        if (this.state === 'closed') return
        if (!ok) {
          this.close(new NaiadError('DFD_ERR_PIECE_FORBIDDEN', `peer ${this.peerId} is not admitted to the cluster`))
          return
        }
        this.state = 'open'
        clearTimeout(this.timer)
        this.settle.resolve()
        try {
          for (const [type, id, payload] of this.early.splice(0)) {
            if (this.state !== 'open') break
            this.handler?.frame(type, id, payload)
          }
        } catch (err) {
          this.close(err as Error)
        }
      }, (err: unknown) => this.close(err as Error))
  }
}
