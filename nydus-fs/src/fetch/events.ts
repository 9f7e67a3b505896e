// diagnostics_channel names the mount's read path publishes on (metrics, tracing and tests
// subscribe; publishing costs nothing without subscribers). Candidates for proto's EVENTS.

export const NYDUS_EVENTS = {
  /** { type: 'fetched', source, bytes, chunks, priority, ms } */
  fetched: 'naiad:nydus:fetched',
  /** { type: 'failed', source, code, message } — one failed range request */
  failed: 'naiad:nydus:fetch-failed',
  /** { type: 'digest', source, chunk } — a chunk whose bytes did not match its digest */
  digest: 'naiad:nydus:digest-mismatch'
} as const
