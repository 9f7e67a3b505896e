// A long-lived request/response session over one fabric stream: many calls, pipelined,
// each a length-prefixed SessionFrame carrying a call ID and the encoded message. Opening a
// stream per call (yamux stream, multistream-select, a peer-store write on the receiving
// side, close) cost several times the work of the call itself; a session pays it once.
// See docs/protocol.md ("Sessions").

import type { Connection, PeerId, Stream } from '@libp2p/interface'
import { Uint8ArrayList } from 'uint8arraylist'

import { f, message, type Fields, type Infer, type MessageSchema } from '../codec/wire.ts'
import { NaiadError, toNaiadError } from '../errors.ts'
import { LIMITS } from '../protocols.ts'
import type { FabricNode } from './node.ts'
import { deadline, fabricError, type CallOptions, type DialTarget } from './rpc.ts'

/** One message of a session, either way: `body` is the encoded request or response of call `id`. */
export const SessionFrame = message('SessionFrame', {
  id: f.uint32(1),
  body: f.bytes(2)
})

/** Varint length prefix + bytes, as lpStream writes them. */
export function lengthPrefixed(bytes: Uint8Array): Uint8Array {
  const out = new Uint8Array(varintLength(bytes.byteLength) + bytes.byteLength)
  out.set(bytes, writeVarint(out, 0, bytes.byteLength))
  return out
}

/**
 * Splits a stream's chunks into its length-prefixed frames. libp2p's LengthPrefixedDecoder
 * learns that a chunk holds no further frame from a RangeError (the varint of the missing
 * next length), so every chunk that arrived cost an Error and its stack trace; this reads
 * the prefix without throwing. A frame split over chunks waits for the rest.
 */
export class FrameDecoder {
  private readonly pending = new Uint8ArrayList()
  private readonly maxLength: number

  constructor(maxLength: number) {
    this.maxLength = maxLength
  }

  /** The frames `chunk` completes, in order (PROTO_ERR_MESSAGE_TOO_LARGE past the maximum). */
  decode(chunk: Uint8Array | Uint8ArrayList): Uint8Array[] {
    const pending = this.pending
    pending.append(chunk)
    const frames: Uint8Array[] = []
    for (;;) {
      const available = pending.byteLength
      let length = 0
      let prefix = 0
      for (;;) {
        if (prefix === available) return frames
        const b = pending.get(prefix)
        length += (b & 0x7f) * 2 ** (7 * prefix)
        prefix++
        if (b < 0x80) break
        if (prefix === 5) throw new NaiadError('PROTO_ERR_DECODE', 'a session frame length longer than 5 bytes')
      }
      if (length > this.maxLength) throw new NaiadError('PROTO_ERR_MESSAGE_TOO_LARGE', `a session frame of ${length} bytes (at most ${this.maxLength})`)
      if (available < prefix + length) return frames
      // subarray(): the bytes in place when the frame lies in one chunk, else one copy.
      frames.push(pending.subarray(prefix, prefix + length))
      pending.consume(prefix + length)
    }
  }
}

/** Bytes of `n` as a varint. */
function varintLength(n: number): number {
  let len = 1
  while (n >= 0x80) {
    n = Math.floor(n / 128)
    len++
  }
  return len
}

function writeVarint(out: Uint8Array, pos: number, n: number): number {
  while (n >= 0x80) {
    out[pos++] = (n & 0x7f) | 0x80
    n = Math.floor(n / 128)
  }
  out[pos++] = n
  return pos
}

/**
 * lengthPrefixed(SessionFrame.encode({ id, body })), built in one buffer: the encoding and
 * then the prefix were two more copies of every request and answer, each an ArrayBuffer
 * outside V8's heap (whose churn started the supernode's major GCs, bench/README.md).
 */
export function sessionFrame(id: number, body: Uint8Array): Uint8Array {
  // Fields at their defaults are left out, as the codec leaves them out.
  const inner = (id === 0 ? 0 : 1 + varintLength(id)) + (body.length === 0 ? 0 : 1 + varintLength(body.length) + body.length)
  const out = new Uint8Array(varintLength(inner) + inner)
  let pos = writeVarint(out, 0, inner)
  if (id !== 0) {
    out[pos++] = 0x08 // field 1, varint
    pos = writeVarint(out, pos, id)
  }
  if (body.length > 0) {
    out[pos++] = 0x12 // field 2, length-delimited
    pos = writeVarint(out, pos, body.length)
    out.set(body, pos)
  }
  return out
}

/**
 * A SessionFrame's call ID and body, the body a view of `buf` (SessionFrame.decode copies
 * it: a second buffer per call, decoded at once and dropped). The usual frame, ID then
 * body, is read here; any other (unknown fields) goes through the codec.
 */
export function readSessionFrame(buf: Uint8Array): { id: number; body: Uint8Array } {
  framePos = 0
  let id = 0
  if (buf[framePos] === 0x08) {
    framePos++
    id = frameVarint(buf)
    if (id < 0) return SessionFrame.decode(buf)
  }
  if (framePos === buf.length) return { id, body: new Uint8Array(0) }
  if (buf[framePos] !== 0x12) return SessionFrame.decode(buf)
  framePos++
  const len = frameVarint(buf)
  if (len < 0 || framePos + len !== buf.length) return SessionFrame.decode(buf)
  return { id, body: buf.subarray(framePos, framePos + len) }
}

/** readSessionFrame's place in the frame it reads (it runs to the end without yielding). */
let framePos = 0

/** The varint at framePos (moving past it), or -1 if it does not end within five bytes and the frame. */
function frameVarint(buf: Uint8Array): number {
  let value = 0
  let mul = 1
  for (let i = 0; i < 5 && framePos < buf.length; i++) {
    const b = buf[framePos++]
    value += (b & 0x7f) * mul
    if (b < 0x80) return value
    mul *= 128
  }
  return -1
}

/**
 * Frames written in the same turn of the event loop go out as one stream message: one
 * yamux frame, one Noise message, instead of one each.
 */
class Outbox {
  private frames: Uint8Array[] = []
  private readonly stream: Stream
  private readonly onError: (err: unknown) => void

  constructor(stream: Stream, onError: (err: unknown) => void) {
    this.stream = stream
    this.onError = onError
  }

  push(frame: Uint8Array): void {
    if (this.frames.push(frame) === 1) queueMicrotask(() => this.flush())
  }

  private flush(): void {
    const frames = this.frames
    this.frames = []
    if (this.stream.writeStatus !== 'writable') return
    try {
      // send() buffers past the high-water mark too; the calls in flight bound the buffer.
      this.stream.send(frames.length === 1 ? frames[0] : new Uint8ArrayList(...frames))
    } catch (err) {
      this.onError(err)
    }
  }
}

interface Pending {
  resolve(body: Uint8Array): void
  reject(err: NaiadError): void
}

export interface SessionOptions {
  /** Largest response frame accepted. */
  maxResponseBytes?: number
}

/**
 * The calling side of a session. The stream is opened by the first call and kept; calls
 * after it are written at once and matched to their answers by ID, so several are in
 * flight together. A call that times out or is aborted fails alone (its late answer is
 * dropped); a stream that breaks fails the calls in flight on it with PROTO_ERR_DIAL, and
 * the next call opens a new one.
 */
export class RpcSession<Q extends Fields, R extends Fields> {
  private stream: Stream | undefined
  private outbox: Outbox | undefined
  private opening: Promise<Stream> | undefined
  private nextId = 1
  private readonly pending = new Map<number, Pending>()

  private readonly node: FabricNode
  private readonly target: () => DialTarget | Promise<DialTarget>
  private readonly protocol: string
  private readonly request: MessageSchema<Q>
  private readonly response: MessageSchema<R>
  private readonly options: SessionOptions

  constructor(
    node: FabricNode,
    target: () => DialTarget | Promise<DialTarget>,
    protocol: string,
    request: MessageSchema<Q>,
    response: MessageSchema<R>,
    options: SessionOptions = {}
  ) {
    this.node = node
    this.target = target
    this.protocol = protocol
    this.request = request
    this.response = response
    this.options = options
  }

  /** Calls in flight (written, not yet answered). */
  get inFlight(): number {
    return this.pending.size
  }

  /** True while a stream is open. */
  get open(): boolean {
    return this.stream !== undefined
  }

  async call(value: Partial<Infer<Q>>, options: CallOptions = {}): Promise<Infer<R>> {
    const timeoutMs = options.timeoutMs ?? LIMITS.callTimeoutMs
    const caller = options.signal
    let remainingMs = timeoutMs
    if (this.stream === undefined) {
      const opened = performance.now()
      const signal = deadline(caller, timeoutMs)
      try {
        await this.openStream(signal, timeoutMs)
      } catch (err) {
        throw fabricError(err, signal, `${this.protocol} session`)
      }
      remainingMs = Math.max(1, timeoutMs - (performance.now() - opened))
    }
    if (caller?.aborted === true) throw fabricError(caller.reason, caller, `${this.protocol} call`)
    const outbox = this.outbox
    if (outbox === undefined) throw new NaiadError('PROTO_ERR_DIAL', `${this.protocol} session lost while opening`)
    const id = this.nextId
    this.nextId = this.nextId >= 0xffffffff ? 1 : this.nextId + 1
    // The call's deadline is a timer cleared with the answer, and the caller's signal is
    // listened to directly. A deadline signal per call (AbortSignal.timeout, joined to the
    // caller's with AbortSignal.any) lived its whole timeout, 5 s, whenever the answer came:
    // a client making hundreds of calls a second moved all of them into the old generation,
    // and its major collections stopped its loop for 70-90 ms (scheduler-scale's generators).
    const body = await new Promise<Uint8Array>((resolve, reject) => {
      const settle = (): void => {
        clearTimeout(timer)
        caller?.removeEventListener('abort', onAbort)
        this.pending.delete(id)
      }
      const onAbort = (): void => {
        settle()
        reject(fabricError(caller!.reason, caller!, `${this.protocol} call`))
      }
      const timer = setTimeout(() => {
        settle()
        reject(new NaiadError('PROTO_ERR_TIMEOUT', `${this.protocol} call timed out`))
      }, remainingMs)
      timer.unref()
      caller?.addEventListener('abort', onAbort, { once: true })
      this.pending.set(id, {
        resolve: (b) => { settle(); resolve(b) },
        reject: (e) => { settle(); reject(e) }
      })
      outbox.push(this.request.encodeTo(value, (body) => sessionFrame(id, body)))
    })
    try {
      return this.response.decode(body)
    } catch (err) {
      throw toNaiadError(err, 'PROTO_ERR_DECODE', `${this.protocol} response`)
    }
  }

  /** Drops the stream (failing the calls in flight); the next call opens a new one. */
  reset(reason = 'session reset'): void {
    if (this.stream !== undefined) this.fail(this.stream, new Error(reason))
  }

  /** Closes the stream for good: calls in flight fail with PROTO_ERR_ABORTED. */
  async close(): Promise<void> {
    const stream = this.stream
    this.stream = undefined
    this.outbox = undefined
    for (const p of this.pending.values()) p.reject(new NaiadError('PROTO_ERR_ABORTED', `${this.protocol} session closed`))
    this.pending.clear()
    await stream?.close().catch(() => stream.abort(new Error('session closed')))
  }

  private openStream(signal: AbortSignal, timeoutMs: number): Promise<Stream> {
    // Concurrent first calls share one opening, bounded by the timeout of the call that
    // started it; each caller still stops waiting at its own deadline.
    this.opening ??= this.dial(AbortSignal.timeout(timeoutMs)).finally(() => { this.opening = undefined })
    return raceSignal(this.opening, signal)
  }

  private async dial(signal: AbortSignal): Promise<Stream> {
    let stream: Stream
    try {
      stream = await this.node.dialProtocol(await this.target(), this.protocol, { signal })
    } catch (err) {
      // A dial that ran out of time is a timeout, like a call's, not a refusal.
      throw fabricError(err, signal, `opening ${this.protocol}`)
    }
    const decoder = new FrameDecoder(this.options.maxResponseBytes ?? LIMITS.maxMessageBytes)
    stream.addEventListener('message', (evt) => {
      try {
        for (const buf of decoder.decode(evt.data)) this.answer(buf)
      } catch (err) {
        this.fail(stream, err)
      }
    })
    stream.addEventListener('close', (evt) => this.fail(stream, evt.error ?? new Error('stream closed')))
    stream.addEventListener('remoteCloseWrite', () => this.fail(stream, new Error('remote closed the session')))
    this.stream = stream
    this.outbox = new Outbox(stream, (err) => this.fail(stream, err))
    return stream
  }

  private answer(buf: Uint8Array): void {
    const frame = readSessionFrame(buf)
    const p = this.pending.get(frame.id)
    if (p === undefined) return // the call gave up already
    this.pending.delete(frame.id)
    p.resolve(frame.body)
  }

  private fail(stream: Stream, err: unknown): void {
    if (this.stream !== stream) return
    this.stream = undefined
    this.outbox = undefined
    const e = fabricError(err, new AbortController().signal, `${this.protocol} session`)
    const lost = e.code === 'PROTO_ERR_MESSAGE_TOO_LARGE'
      ? e
      : new NaiadError('PROTO_ERR_DIAL', `${this.protocol} session lost: ${(err as Error)?.message ?? String(err)}`, { cause: err })
    for (const p of this.pending.values()) p.reject(lost)
    this.pending.clear()
    if (stream.status === 'open' || stream.status === 'closing') stream.abort(lost)
  }
}

/** Waits for `p` until `signal` fires (then rejects with its reason); `p` itself runs on. */
export function raceSignal<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason as Error)
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason as Error)
    signal.addEventListener('abort', onAbort, { once: true })
    p.then(
      (v) => { signal.removeEventListener('abort', onAbort); resolve(v) },
      (e: unknown) => { signal.removeEventListener('abort', onAbort); reject(e as Error) }
    )
  })
}

export interface SessionContext {
  remotePeer: PeerId
  connection: Connection
  /** Aborted when the session's stream closes. */
  signal: AbortSignal
}

export interface ServeSessionOptions {
  maxRequestBytes?: number
  maxInboundStreams?: number
  /** Requests of one session being handled at once; reading pauses above it. */
  maxInFlight?: number
}

/**
 * Serves a session protocol: reads request frames until the caller closes the stream and
 * answers each with a frame of the same ID. The handler's errors become the response's
 * `error` field (the response schema must have one, of type RpcError), as with `serve`;
 * an undecodable frame ends the session.
 */
export async function serveSession<Q extends Fields, R extends Fields>(
  node: FabricNode,
  protocol: string,
  request: MessageSchema<Q>,
  response: MessageSchema<R>,
  handler: (req: Infer<Q>, ctx: SessionContext) => Partial<Infer<R>> | Promise<Partial<Infer<R>>>,
  options: ServeSessionOptions = {}
): Promise<void> {
  const maxInFlight = options.maxInFlight ?? 256
  await node.handle(protocol, (stream, connection) => {
    const closed = new AbortController()
    const ctx: SessionContext = { remotePeer: connection.remotePeer, connection, signal: closed.signal }
    const decoder = new FrameDecoder(options.maxRequestBytes ?? LIMITS.maxMessageBytes)
    let inFlight = 0
    let paused = false
    const outbox = new Outbox(stream, () => { /* the stream closed meanwhile */ })

    const reply = (id: number, value: Partial<Infer<R>>): void => {
      outbox.push(response.encodeTo(value, (body) => sessionFrame(id, body)))
    }
    const errorReply = (err: unknown): Partial<Infer<R>> => {
      const e = toNaiadError(err, 'PROTO_ERR_REMOTE')
      return { error: { code: e.code, message: e.message } } as unknown as Partial<Infer<R>>
    }
    const done = (): void => {
      inFlight--
      if (paused && inFlight < maxInFlight) {
        paused = false
        stream.resume()
      }
    }

    const handle = (id: number, body: Uint8Array): void => {
      let result: Partial<Infer<R>> | Promise<Partial<Infer<R>>>
      try {
        result = handler(request.decode(body), ctx)
      } catch (err) {
        reply(id, errorReply(err))
        return
      }
      if (!(result instanceof Promise)) {
        reply(id, result)
        return
      }
      inFlight++
      if (inFlight >= maxInFlight && !paused) {
        paused = true
        stream.pause()
      }
      result.then((v) => reply(id, v), (err: unknown) => reply(id, errorReply(err))).finally(done)
    }

    stream.addEventListener('message', (evt) => {
      try {
        for (const buf of decoder.decode(evt.data)) {
          const frame = readSessionFrame(buf)
          handle(frame.id, frame.body)
        }
      } catch (err) {
        stream.abort(fabricError(err, closed.signal, `${protocol} session`, 'PROTO_ERR_DECODE'))
      }
    })
    stream.addEventListener('remoteCloseWrite', () => { void stream.close().catch(() => {}) })
    stream.addEventListener('close', () => closed.abort())
  }, { maxInboundStreams: options.maxInboundStreams ?? 4 })
}
