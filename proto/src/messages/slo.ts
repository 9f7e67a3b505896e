// The slo plugin's fabric protocol: a daemon sends the timelines of its finished pulls to
// the supernode in batches. A contract shared by the plugin's two halves, so it lives here;
// the core services never use it. Field numbers are part of the wire contract.

import { f, message, type MessageOf } from '../codec/wire.ts'
import { RpcError } from './index.ts'

export const SLO_TRACE_PROTOCOL = '/naiad/trace/1.0.0'

export const TraceBackToSource = message('TraceBackToSource', {
  atMs: f.int64(1), // Unix ms on the daemon's clock
  reason: f.string(2)
})

/** One parent that served pieces of the pull. */
export const TraceParent = message('TraceParent', {
  peerId: f.string(1),
  isSeed: f.bool(2),
  bytes: f.uint64(3),
  pieces: f.uint32(4)
})

/** The timeline of one pull on one daemon. Times are Unix ms on the daemon's clock; -1 when the step never happened. */
export const PullTrace = message('PullTrace', {
  traceId: f.string(1), // random, so that a batch sent twice is stored once
  taskId: f.string(2),
  url: f.string(3), // without its query string
  startedAtMs: f.int64(4),
  registeredAtMs: f.int64(5),
  scheduled: f.bool(6), // the scheduler answered the registration
  firstPieceAtMs: f.int64(7),
  finishedAtMs: f.int64(8),
  durationMs: f.uint64(9),
  result: f.string(10), // succeeded | failed
  errorCode: f.string(11),
  errorMessage: f.string(12),
  contentLength: f.int64(13), // -1 when never learnt
  bytesPeer: f.uint64(14),
  bytesSeed: f.uint64(15),
  bytesOrigin: f.uint64(16),
  backToSource: f.repeated(f.message(17, TraceBackToSource)),
  parents: f.repeated(f.message(18, TraceParent)),
  pieces: f.uint32(19),
  pieceFailures: f.uint32(20)
})

export const TraceBatch = message('TraceBatch', {
  traces: f.repeated(f.message(1, PullTrace))
})

export const TraceAck = message('TraceAck', {
  accepted: f.uint32(1), // traces stored now (a trace already stored counts as accepted too)
  error: f.message(2, RpcError)
})

export type PullTrace = MessageOf<typeof PullTrace>
