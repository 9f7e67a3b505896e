// The data channel: the wire contract of piece bytes between two peers (docs/protocol.md,
// "Data channel"). One long-lived connection per pair of peers — TLS 1.3 by default, each
// side's certificate made from its fabric identity key, plain TCP only where the operator
// chooses it — carrying frames:
//
//   type u8 | id u32 | length u32 | payload (length bytes)
//
// Both sides open with HELLO (and, in plaintext, AUTH); then the requester sends REQUEST
// frames (pipelined, each with its own id) and the server answers each, in order, with
// RESPONSE (the piece header), DATA frames (raw piece bytes, never wrapped in a message)
// and END (the digest of a piece streamed while it arrived, or an error after the header).
// CANCEL withdraws a request. Payloads of the other frames are protobuf messages below.

import { f, message, type MessageOf } from '../codec/wire.ts'
import { NaiadError } from '../errors.ts'
import { RpcError } from '../messages/index.ts'

/** TLS ALPN identifier; also the version a plaintext HELLO names. */
export const DATA_CHANNEL_PROTOCOL = 'naiad-data/1'

export const FRAME = {
  hello: 1,
  auth: 2,
  request: 3,
  response: 4,
  data: 5,
  end: 6,
  cancel: 7
} as const

export type FrameType = (typeof FRAME)[keyof typeof FRAME]

export const FRAME_HEADER_BYTES = 9

/** Largest payload of any frame but DATA; DATA frames are bounded by DATA_FRAME_MAX. */
export const CONTROL_FRAME_MAX = 64 * 1024
/** Largest DATA frame a sender writes and a receiver accepts. */
export const DATA_FRAME_MAX = 1024 * 1024

/** First frame of each side: who it is and what it holds. */
export const DataHello = message('DataHello', {
  protocol: f.string(1), // DATA_CHANNEL_PROTOCOL
  peerId: f.string(2), // under TLS it must be the peer ID of the certificate's key
  nonce: f.bytes(3), // plaintext only: 32 random bytes the other side signs in its AUTH
  credential: f.bytes(4) // membership credential (cluster admission); empty without
})

/** Plaintext only: the sender's identity key signs the handshake transcript (see dataAuthPayload). */
export const DataAuth = message('DataAuth', {
  signature: f.bytes(1)
})

export const DataRequest = message('DataRequest', {
  taskId: f.string(1),
  num: f.uint32(2),
  grant: f.bytes(3), // the supernode's grant for the requester and task (cluster admission); empty without
  /**
   * The requester asks the task's trusted source (the seed) for a piece it may not hold yet:
   * the source sends the bytes as they arrive from the origin and the piece's digest in END.
   */
  live: f.bool(4)
})

/** The piece header: `length` bytes follow in DATA frames, then END. With an error, nothing follows. */
export const DataResponse = message('DataResponse', {
  error: f.message(1, RpcError),
  num: f.uint32(2),
  length: f.uint32(3),
  sha256: f.bytes(4) // the stored piece's digest; empty for a live piece (END carries it)
})

export const DataEnd = message('DataEnd', {
  error: f.message(1, RpcError),
  sha256: f.bytes(2), // a live piece's digest, computed by the source as its last byte arrived
  /**
   * The whole content's SHA-256, when the sender knows it (a complete task, or the last
   * piece of a live one). Taken only from the task's trusted source: it spares a peer waiting
   * for the scheduler to relay it, or reading the content back.
   */
  contentSha256: f.bytes(3)
})

export type DataHello = MessageOf<typeof DataHello>
export type DataAuth = MessageOf<typeof DataAuth>
export type DataRequest = MessageOf<typeof DataRequest>
export type DataResponse = MessageOf<typeof DataResponse>
export type DataEnd = MessageOf<typeof DataEnd>

/** The 9-byte frame header. */
export function frameHeader(type: FrameType, id: number, length: number, into: Buffer = Buffer.allocUnsafe(FRAME_HEADER_BYTES)): Buffer {
  into[0] = type
  into.writeUInt32BE(id >>> 0, 1)
  into.writeUInt32BE(length >>> 0, 5)
  return into
}

/** A whole frame (header and payload) in one buffer, for the small control frames. */
export function encodeFrame(type: FrameType, id: number, payload: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(FRAME_HEADER_BYTES + payload.length)
  frameHeader(type, id, payload.length, out)
  out.set(payload, FRAME_HEADER_BYTES)
  return out
}

/**
 * What a plaintext peer signs in AUTH: the protocol, its role, and both nonces (the other
 * side's first). Each side signs a transcript that names the other's fresh nonce, so a
 * signature cannot be replayed on another connection.
 */
export function dataAuthPayload(role: 'client' | 'server', theirNonce: Uint8Array, myNonce: Uint8Array): Uint8Array {
  return Buffer.concat([Buffer.from(`${DATA_CHANNEL_PROTOCOL} ${role} `), theirNonce, myNonce])
}

export interface FrameSink {
  /** A control frame (any type but DATA), its payload in a buffer of its own. */
  frame(type: FrameType, id: number, payload: Buffer): void
  /**
   * A slice of a DATA frame's payload, as it arrives: a DATA frame may come in several
   * slices (`remaining` bytes of the frame still to come after this one). The slice views
   * the socket's buffer: copy what must outlive the call.
   */
  data(id: number, bytes: Buffer, remaining: number): void
}

/**
 * Incremental frame parser: feed it socket chunks in order; it calls the sink for each
 * frame. DATA payloads are passed through as slices of the chunks, never concatenated.
 * Throws PROTO_ERR_DECODE / PROTO_ERR_MESSAGE_TOO_LARGE on a malformed stream.
 */
export class FrameReader {
  private readonly sink: FrameSink
  private head = Buffer.allocUnsafe(FRAME_HEADER_BYTES)
  private headFill = 0
  private type = 0
  private id = 0
  /** Payload bytes of the current frame still to come; -1 while reading a header. */
  private left = -1
  private control: Buffer | undefined
  private controlFill = 0

  constructor(sink: FrameSink) {
    this.sink = sink
  }

  push(chunk: Buffer): void {
    let pos = 0
    while (pos < chunk.length) {
      if (this.left < 0) {
        const n = Math.min(FRAME_HEADER_BYTES - this.headFill, chunk.length - pos)
        chunk.copy(this.head, this.headFill, pos, pos + n)
        this.headFill += n
        pos += n
        if (this.headFill < FRAME_HEADER_BYTES) return
        this.headFill = 0
        this.type = this.head[0]
        this.id = this.head.readUInt32BE(1)
        const length = this.head.readUInt32BE(5)
        if (this.type < FRAME.hello || this.type > FRAME.cancel) throw new NaiadError('PROTO_ERR_DECODE', `data channel: unknown frame type ${this.type}`)
        const max = this.type === FRAME.data ? DATA_FRAME_MAX : CONTROL_FRAME_MAX
        if (length > max) throw new NaiadError('PROTO_ERR_MESSAGE_TOO_LARGE', `data channel: frame of ${length} bytes exceeds ${max}`)
        this.left = length
        if (this.type !== FRAME.data) {
          this.control = Buffer.allocUnsafe(length)
          this.controlFill = 0
        }
        if (length === 0) this.finishFrame()
        continue
      }
      const n = Math.min(this.left, chunk.length - pos)
      this.left -= n
      if (this.type === FRAME.data) {
        this.sink.data(this.id, chunk.subarray(pos, pos + n), this.left)
      } else {
        chunk.copy(this.control!, this.controlFill, pos, pos + n)
        this.controlFill += n
      }
      pos += n
      if (this.left === 0) this.finishFrame()
    }
  }

  private finishFrame(): void {
    const type = this.type as FrameType
    this.left = -1
    if (type === FRAME.data) return
    const payload = this.control!
    this.control = undefined
    this.sink.frame(type, this.id, payload)
  }
}
