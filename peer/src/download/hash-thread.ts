// The worker side of HashFeed (hash-feed.ts): SHA-256 of a source read's bytes, per piece and
// of the whole content, off the main thread. Messages arrive in the order the bytes were
// read; each batch's buffer goes back to the main thread for reuse once hashed.

import { createHash, type Hash } from 'node:crypto'
import { parentPort } from 'node:worker_threads'

export type HashRequest =
  | { op: 'data'; feed: number; buf: ArrayBuffer; length: number; pieces: boolean }
  | { op: 'piece'; feed: number; seq: number }
  | { op: 'end'; feed: number; seq: number }
  | { op: 'drop'; feed: number }

export type HashReply =
  | { op: 'buffer'; feed: number; buf: ArrayBuffer }
  | { op: 'digest'; feed: number; seq: number; digest: Uint8Array }

interface Feed {
  piece: Hash
  whole: Hash
}

const feeds = new Map<number, Feed>()
const port = parentPort!

port.on('message', (m: HashRequest) => {
  if (m.op === 'drop') {
    feeds.delete(m.feed)
    return
  }
  let f = feeds.get(m.feed)
  if (f === undefined) {
    f = { piece: createHash('sha256'), whole: createHash('sha256') }
    feeds.set(m.feed, f)
  }
  if (m.op === 'data') {
    const bytes = new Uint8Array(m.buf, 0, m.length)
    if (m.pieces) f.piece.update(bytes)
    f.whole.update(bytes)
    port.postMessage({ op: 'buffer', feed: m.feed, buf: m.buf } satisfies HashReply, [m.buf])
  } else if (m.op === 'piece') {
    const digest = f.piece.digest()
    f.piece = createHash('sha256')
    port.postMessage({ op: 'digest', feed: m.feed, seq: m.seq, digest } satisfies HashReply)
  } else {
    feeds.delete(m.feed)
    port.postMessage({ op: 'digest', feed: m.feed, seq: m.seq, digest: f.whole.digest() } satisfies HashReply)
  }
})
