// The health plugin's wire contract: daemons push their measured facts to the supernode on
// `/naiad/health/1.0.0`; the reply carries the supernode's clock, from which the daemon
// computes its clock offset NTP-style. Both halves of the plugin use these schemas; the core
// services do not. Field numbers are part of the wire contract: add, never renumber.

import { f, message, type MessageOf } from '../codec/wire.ts'
import { RpcError } from './index.ts'

export const HEALTH_PROTOCOL = '/naiad/health/1.0.0'

/** What a daemon measured about itself; every rate is over the daemon's sliding window. */
export const HealthFacts = message('HealthFacts', {
  diskFreeBytes: f.double(1),
  diskFreeRatio: f.double(2),
  /** Pieces this daemon downloaded in the window, stored or failed. */
  samples: f.uint32(3),
  pieceFailureRate: f.double(4),
  /** Pieces other peers asked this daemon for in the window, served or failed. */
  uploadSamples: f.uint32(5),
  uploadErrorRate: f.double(6),
  /** Mean milliseconds per stored piece in the window; 0 without samples. */
  meanPieceCostMs: f.double(7),
  /** This daemon's clock minus the supernode's, from the previous report's round trip. */
  clockOffsetMs: f.double(8),
  /** Round trip of the report that measured the offset; the offset's error is at most half of it. */
  clockRttMs: f.double(9),
  fuseDevice: f.bool(10),
  fusermount: f.bool(11),
  windowMs: f.uint32(12)
})

export const HealthReport = message('HealthReport', {
  facts: f.message(1, HealthFacts),
  /** The daemon's clock when it sent the report (ms since the epoch): NTP's t0. */
  sentAtMs: f.double(2)
})

export const HealthReply = message('HealthReply', {
  /** The supernode's clock when the report arrived (t1) and when it answered (t2). */
  receivedAtMs: f.double(1),
  repliedAtMs: f.double(2),
  /** The host's state as the supernode sees it: healthy, degraded or isolated. */
  state: f.string(3),
  error: f.message(4, RpcError)
})

export type HealthFacts = MessageOf<typeof HealthFacts>
export type HealthReport = MessageOf<typeof HealthReport>
export type HealthReply = MessageOf<typeof HealthReply>
