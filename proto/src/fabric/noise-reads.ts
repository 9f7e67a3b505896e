// Noise's reads without a thrown error per chunk. Noise splits what the socket delivers into
// its messages with libp2p's LengthPrefixedDecoder, which learns that a chunk holds no
// further message from a RangeError thrown by the length decoder (fewer than 2 bytes left):
// an Error and its stack trace, some 3 µs, for every chunk a supernode reads, several
// percent of its CPU at 10,000 peers (bench/README.md, scheduler-scale).

/** The decoder fields of Noise's EncryptedMessageStream (utils.js) this reaches: internal, hence the checks. */
interface NoiseDecoderInternals {
  decoder?: {
    lengthDecoder?: (data: { byteLength: number }) => number
    maxDataLength?: number
  }
}

/**
 * Makes the length decoder of `conn`'s Noise message decoder answer a short buffer with a
 * length that cannot be complete yet (the largest allowed: the buffer holds fewer than 2
 * bytes) instead of throwing; the decoder then waits for more bytes, as after the throw. A
 * connection of another kind is left as it is.
 */
export function quietLengthDecoder<T>(conn: T): T {
  const decoder = (conn as NoiseDecoderInternals).decoder
  const decode = decoder?.lengthDecoder
  const max = decoder?.maxDataLength
  if (decoder === undefined || decode === undefined || typeof max !== 'number') return conn
  decoder.lengthDecoder = (data) => data.byteLength < 2 ? max : decode(data)
  return conn
}
