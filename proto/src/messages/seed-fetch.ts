// The seed-fetch wire contract (`/naiad/seed-fetch/1.0.0`, docs/protocol.md): one supernode
// asks another's seed to fetch a task into its cache, because the seed of a task is its
// owner's (the preheat plugin warms the owner's seed, not its own). Supernode to supernode
// only: the callee serves it to peers whose credential carries the role `supernode`. The
// request carries the origin's headers, credentials included: the fabric is encrypted and
// the callee keeps them no longer than the fetch. Field numbers are part of the wire
// contract: add, never renumber.

import { f, message, type MessageOf } from '../codec/wire.ts'
import { Header, RpcError } from './index.ts'

/** The task to fetch, as the seed takes it (the same fields make the same task ID). */
export const SeedFetchRequest = message('SeedFetchRequest', {
  url: f.string(1),
  headers: f.repeated(f.message(2, Header)),
  digest: f.string(3), // '' = none
  range: f.string(4), // '' = the whole content
  filter: f.repeated(f.string(5)),
  /** How long the callee may take; it stops the fetch after it. 0 = its default. */
  timeoutMs: f.uint32(6)
})

/**
 * The callee's answers, several per stream: progress frames (done false) at least every
 * keepalive interval, then one last frame with done true and the result, or with an error.
 */
export const SeedFetchFrame = message('SeedFetchFrame', {
  error: f.message(1, RpcError),
  done: f.bool(2),
  taskId: f.string(3),
  completedBytes: f.uint64(4),
  totalBytes: f.int64(5), // -1 while unknown
  contentLength: f.uint64(6),
  sha256: f.string(7),
  fromPeers: f.uint64(8),
  fromOrigin: f.uint64(9),
  cached: f.bool(10)
})

export type SeedFetchRequest = MessageOf<typeof SeedFetchRequest>
export type SeedFetchFrame = MessageOf<typeof SeedFetchFrame>
