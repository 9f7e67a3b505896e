// Fewer, larger writes under the muxer, the bytes on the wire unchanged. A scheduler call
// cost each side two Noise messages and up to six socket writes: yamux answers every data
// frame it receives with a window update of its own (this yamux sends one whenever its
// receive window is below the maximum, not at half of it), and libp2p's TCP connection
// writes each part of a Noise message (2-byte length, ciphertext, tag; the ciphertext in
// two parts above 1,200 bytes) with a socket write of its own, a TCP segment each with
// Nagle off. Socket writes were a quarter of the supernode's CPU at 10,000 peers
// (bench/README.md, scheduler-scale). Here the frames yamux sends in one microtask (a
// request's window update and its answer) become one Noise message, and each Noise
// message one socket write.

import type { ConnectionEncrypter, MessageStream } from '@libp2p/interface'
import { Uint8ArrayList } from 'uint8arraylist'

import { quietLengthDecoder } from './noise-reads.ts'

/**
 * Sends up to this size are held to the end of the microtask and copied into one buffer;
 * larger ones (bulk data, a backlog) go out as before, where the copy would cost more than
 * the writes it saves.
 */
export const COALESCE_MAX_BYTES = 16 * 1024

/** The part of libp2p's TCP connection (socket-to-conn.ts) this reaches: protected, hence the check. */
interface SendsData {
  sendData(data: Uint8ArrayList): { sentBytes: number; canSendMore: boolean }
}

function sendsData(conn: unknown): conn is SendsData {
  return typeof (conn as Partial<SendsData>).sendData === 'function'
}

/**
 * Makes `conn` (the raw transport connection, under the encryption) write a small message
 * of several parts as one buffer. A connection of another kind is left as it is.
 */
export function coalesceWrites<T extends MessageStream>(conn: T): T {
  if (!sendsData(conn)) return conn
  const sendData = conn.sendData.bind(conn)
  conn.sendData = (data) => {
    if (data.byteLength > COALESCE_MAX_BYTES) return sendData(data)
    // subarray() is the list's one buffer as it is, or the concatenation of its several.
    return sendData(new Uint8ArrayList(data.subarray()))
  }
  return conn
}

/**
 * Makes the sends on `conn` (the encrypted connection, under the muxer) of one microtask go
 * down as one: one encryption, one write. A send past COALESCE_MAX_BYTES, or while the
 * connection is already waiting to drain, goes at once after what is held, so that its
 * back-pressure reaches the muxer as before; a held send answers "can send more".
 */
export function batchSends<T extends MessageStream>(conn: T): T {
  const send = conn.send.bind(conn)
  const close = conn.close.bind(conn)
  let held: Uint8ArrayList | undefined
  const flush = (): void => {
    const data = held
    held = undefined
    if (data === undefined || conn.status !== 'open') return
    try {
      send(data)
    } catch (err) {
      // What send() would have thrown to the muxer: the connection is unusable.
      conn.abort(err as Error)
    }
  }
  conn.send = (data) => {
    if (held !== undefined) {
      held.append(data)
      if (held.byteLength <= COALESCE_MAX_BYTES) return true
      const all = held
      held = undefined
      return send(all)
    }
    // A closing connection answers at once, as before (send() throws there).
    if (data.byteLength > COALESCE_MAX_BYTES || conn.writableNeedsDrain || conn.status !== 'open') return send(data)
    held = new Uint8ArrayList(data)
    queueMicrotask(flush)
    return true
  }
  conn.close = async (options) => {
    flush()
    await close(options)
  }
  return conn
}

/**
 * Wraps a connection encrypter factory (noise()) so that every connection it secures sends
 * a microtask's frames as one message (batchSends), writes each message once
 * (coalesceWrites) and reads without a thrown error per chunk (quietLengthDecoder).
 */
export function batchedWrites<C, E>(factory: (components: C) => ConnectionEncrypter<E>): (components: C) => ConnectionEncrypter<E> {
  return (components) => {
    const encrypter = factory(components)
    // The encrypter itself is kept (libp2p reads its protocol and capability symbols).
    const inbound = encrypter.secureInbound.bind(encrypter)
    const outbound = encrypter.secureOutbound.bind(encrypter)
    encrypter.secureInbound = async (conn, options) => {
      const secured = await inbound(coalesceWrites(conn), options)
      return { ...secured, connection: batchSends(quietLengthDecoder(secured.connection)) }
    }
    encrypter.secureOutbound = async (conn, options) => {
      const secured = await outbound(coalesceWrites(conn), options)
      return { ...secured, connection: batchSends(quietLengthDecoder(secured.connection)) }
    }
    return encrypter
  }
}
