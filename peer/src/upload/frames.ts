// Piece-protocol framing: a varint-length-prefixed header message, then (for a piece) its
// raw bytes. Piece bytes are never wrapped in a message, so they cross the wire once.

import type { Stream } from '@libp2p/interface'
import { NaiadError } from '@naiad/proto'

export function frame(payload: Uint8Array): Uint8Array {
  const head: number[] = []
  let n = payload.length
  while (n > 0x7f) { head.push((n & 0x7f) | 0x80); n >>>= 7 }
  head.push(n)
  const out = new Uint8Array(head.length + payload.length)
  out.set(head, 0)
  out.set(payload, head.length)
  return out
}

/** Sends bytes honouring back-pressure: waits for 'drain' whenever send() says the buffer is full. */
export async function sendAll(stream: Stream, data: Uint8Array, signal: AbortSignal): Promise<void> {
  if (!stream.send(data)) await stream.onDrain({ signal })
}

/**
 * Reads one header frame (at most `maxHeader` bytes) and, when `body` returns a length,
 * that many raw bytes into one buffer. Returns the header bytes and the body.
 */
export async function readFrameAndBody(
  stream: Stream,
  maxHeader: number,
  body: (header: Uint8Array) => number,
  signal: AbortSignal
): Promise<{ header: Uint8Array; body: Buffer | undefined }> {
  let pending: Buffer = Buffer.alloc(0)
  let header: Uint8Array | undefined
  let out: Buffer | undefined
  let want = 0
  let got = 0
  const onAbort = (): void => stream.abort(signal.reason as Error)
  signal.addEventListener('abort', onAbort, { once: true })
  try {
    for await (const chunk of stream) {
      // A Uint8ArrayList's subarray() concatenates (allocates and copies) when it holds
      // several buffers, and yamux hands over lists: take the buffers one by one instead.
      for (const bytes of chunk instanceof Uint8Array ? [chunk] : chunk) {
        if (header === undefined) {
          pending = pending.length === 0 ? Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength) : Buffer.concat([pending, bytes])
          let len = 0
          let shift = 0
          let i = 0
          for (; i < pending.length && i < 5; i++) {
            len |= (pending[i] & 0x7f) << shift
            shift += 7
            if ((pending[i] & 0x80) === 0) break
          }
          if (i >= pending.length) continue
          if (i >= 5 || len > maxHeader) throw new NaiadError('PROTO_ERR_MESSAGE_TOO_LARGE', `piece header of ${len} bytes exceeds ${maxHeader}`)
          const start = i + 1
          if (pending.length < start + len) continue
          header = pending.subarray(start, start + len)
          want = body(header)
          const rest = pending.subarray(start + len)
          if (want === 0) return { header, body: undefined }
          out = Buffer.allocUnsafe(want)
          if (rest.length > want) throw new NaiadError('PROTO_ERR_DECODE', 'peer sent more bytes than the piece length')
          rest.copy(out, 0)
          got = rest.length
        } else {
          if (got + bytes.length > want) throw new NaiadError('PROTO_ERR_DECODE', 'peer sent more bytes than the piece length')
          out!.set(bytes, got)
          got += bytes.length
        }
      }
      if (out !== undefined && got === want) return { header: header!, body: out }
    }
  } finally {
    signal.removeEventListener('abort', onAbort)
  }
  signal.throwIfAborted()
  throw new NaiadError('PROTO_ERR_DECODE', header === undefined ? 'stream ended before the piece header' : `stream ended after ${got} of ${want} piece bytes`)
}
