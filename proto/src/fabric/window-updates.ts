// Yamux window updates at half the window, as Go's and Rust's yamux send them. This
// version of js yamux answers every data frame it receives with a window update (whenever
// its receive window is below the maximum), so each scheduler call cost the supernode a
// second inbound Noise message (the daemon's update for the answer: a socket read, a
// decryption, a frame) and an outbound update of its own. When to send the update is the
// receiver's choice (the yamux spec, like HTTP/2's, leaves it open), so the wire stays
// compatible either way.

import type { StreamMuxerFactory } from '@libp2p/interface'

/** YamuxStream's states (stream.js): an update in these carries a SYN or ACK flag, or is a resume's. */
const INIT = 0
const SYN_RECEIVED = 2
const PAUSED = 5

/** The fields of js yamux's YamuxStream this reads: internal, hence the checks. */
interface YamuxStreamInternals {
  state: number
  recvWindow: number
  recvWindowCapacity: number
  sendWindowUpdate(): void
}

function isYamuxStream(stream: unknown): stream is YamuxStreamInternals {
  const s = stream as Partial<YamuxStreamInternals>
  return typeof s.sendWindowUpdate === 'function' && typeof s.recvWindow === 'number' && typeof s.recvWindowCapacity === 'number' && typeof s.state === 'number'
}

/** Holds `stream`'s window updates back while at least half its receive window is left. */
export function halfWindowUpdates<T>(stream: T): T {
  if (!isYamuxStream(stream)) return stream
  const send = stream.sendWindowUpdate.bind(stream)
  stream.sendWindowUpdate = () => {
    const flagged = stream.state === INIT || stream.state === SYN_RECEIVED || stream.state === PAUSED
    if (!flagged && stream.recvWindowCapacity * 2 >= stream.recvWindow) return
    send()
  }
  return stream
}

/** Wraps a stream muxer factory (yamux()) so that its streams send window updates at half the window. */
export function lazyWindowUpdates<C>(factory: (components: C) => StreamMuxerFactory): (components: C) => StreamMuxerFactory {
  return (components) => {
    const muxers = factory(components)
    const create = muxers.createStreamMuxer.bind(muxers)
    muxers.createStreamMuxer = (maConn) => {
      const muxer = create(maConn)
      // Every stream, inbound or outbound, is made by the muxer's _newStream.
      const m = muxer as unknown as { _newStream?: (...args: unknown[]) => unknown }
      const newStream = m._newStream?.bind(muxer)
      if (newStream !== undefined) m._newStream = (...args) => halfWindowUpdates(newStream(...args))
      return muxer
    }
    return muxers
  }
}
