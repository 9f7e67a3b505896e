// The supernode half of the slo plugin: receives pull traces from the daemons over
// /naiad/trace/1.0.0, keeps them in SQLite for the retention period, and turns them into
// SLIs (success rate, pull seconds per GiB, back-to-source ratio), objectives with error
// budgets and burn rates, an API and Prometheus metrics. The daemon half builds the traces
// (dfdaemon/src/plugins/slo/).
//
// @example
// # supernode.yaml
// plugins: [metrics, slo]
// plugin-config:
//   slo:
//     retention: 7d
//     objectives:
//       - { name: pull-speed, sli: seconds-per-gib, threshold: 30, target: 0.99, window: 1h }
//       - { name: success, sli: success-rate, target: 0.999, window: 1h }
//
// curl localhost:8002/api/v1/slo
// curl 'localhost:8002/api/v1/traces?task=<task id>'
//
// See docs/slo.md.

import { NaiadError, SLO_TRACE_PROTOCOL, TraceAck, TraceBatch, type PullTrace } from '@naiad/proto'

import { supernodePlugin } from '../../plugin-api/context.ts'
import { evaluate, indicators, formatMs, parseSloDuration, SLO_SETTINGS, sloSettings } from './objectives.ts'
import { SloMetrics } from './slo-metrics.ts'
import { TraceStore, type TraceRow } from './trace-store.ts'

const iso = (ms: number | null): string | null => (ms === null ? null : new Date(ms).toISOString())

/** A trace as the API shows it: the stored fields and its timeline in time order. */
export function traceView(t: TraceRow): Record<string, unknown> {
  const total = t.bytesPeer + t.bytesSeed + t.bytesOrigin
  const at = (ms: number): { at: string; offsetMs: number } => ({ at: new Date(ms).toISOString(), offsetMs: ms - t.startedAt })
  const timeline: Array<Record<string, unknown> & { offsetMs: number }> = [{ event: 'started', ...at(t.startedAt) }]
  if (t.registeredAt !== null) timeline.push({ event: 'registered', ...at(t.registeredAt), scheduled: t.scheduled })
  if (t.firstPieceAt !== null) timeline.push({ event: 'first-piece', ...at(t.firstPieceAt) })
  for (const b of t.backToSource) timeline.push({ event: 'back-to-source', ...at(b.atMs), reason: b.reason })
  timeline.push(t.result === 'succeeded'
    ? { event: 'succeeded', ...at(t.finishedAt) }
    : { event: 'failed', ...at(t.finishedAt), code: t.errorCode })
  timeline.sort((a, b) => a.offsetMs - b.offsetMs)
  return {
    id: t.traceId,
    taskId: t.taskId,
    peerId: t.peerId,
    url: t.url,
    result: t.result,
    error: t.errorCode === null ? null : { code: t.errorCode, message: t.errorMessage ?? '' },
    startedAt: iso(t.startedAt),
    finishedAt: iso(t.finishedAt),
    receivedAt: iso(t.receivedAt),
    durationMs: t.durationMs,
    contentLength: t.contentLength,
    secondsPerGiB: t.result === 'succeeded' && t.contentLength > 0 ? (t.durationMs / 1000) / (t.contentLength / 1024 ** 3) : null,
    bytes: { peer: t.bytesPeer, seed: t.bytesSeed, origin: t.bytesOrigin },
    backToSourceRatio: total === 0 ? null : t.bytesOrigin / total,
    scheduled: t.scheduled,
    pieces: t.pieces,
    pieceFailures: t.pieceFailures,
    parents: t.parents,
    backToSource: t.backToSource.map((b) => ({ at: iso(b.atMs), reason: b.reason })),
    timeline
  }
}

const MAX_ID = 256

/** Rejects what a daemon could not have produced; such a trace is skipped, not stored. */
function validTrace(t: PullTrace): boolean {
  const nonneg = [t.durationMs, t.bytesPeer, t.bytesSeed, t.bytesOrigin, t.pieces, t.pieceFailures, t.startedAtMs, t.finishedAtMs]
  return t.traceId !== '' && t.traceId.length <= MAX_ID && t.taskId !== '' && t.taskId.length <= MAX_ID && t.url.length <= 8192 &&
    (t.result === 'succeeded' || t.result === 'failed') && t.errorCode.length <= MAX_ID && t.errorMessage.length <= 4096 &&
    nonneg.every((n) => Number.isSafeInteger(n) && n >= 0) && t.finishedAtMs >= t.startedAtMs &&
    t.backToSource.length <= 64 && t.parents.length <= 1024
}

export const sloSupernodePlugin = supernodePlugin({
  name: 'slo',
  version: '1.0.0',
  settings: SLO_SETTINGS,
  async setup(ctx) {
    const settings = sloSettings(ctx.settings)
    const store = new TraceStore(ctx.database)
    // The binary's registry, which the metrics plugin serves at /metrics.
    const metrics = new SloMetrics(ctx.metrics, () => Promise.all(settings.objectives.map((o) => evaluate(store, o, Date.now()))))

    await ctx.serve(SLO_TRACE_PROTOCOL, TraceBatch, TraceAck, async (req, { remotePeer }) => {
      // The sender is the connection's authenticated peer, whatever the trace says.
      const peerId = remotePeer.toString()
      const now = Date.now()
      let accepted = 0
      let skipped = 0
      for (const t of req.traces) {
        if (!validTrace(t)) { skipped++; continue }
        accepted++
        // A trace that waited on its daemon past the retention would be pruned at once.
        if (t.finishedAtMs < now - settings.retentionMs) continue
        if (await store.insert(peerId, t, now)) metrics.observe(t)
      }
      if (skipped > 0) ctx.logger.warn({ peer: peerId, skipped }, 'skipped malformed traces')
      return { accepted }
    })

    ctx.route('GET', '/api/v1/slo', async (req) => {
      let windowMs = settings.windowMs
      let window = settings.window
      if (req.query.window !== undefined) {
        try {
          windowMs = parseSloDuration(req.query.window, 'window')
        } catch (err) {
          throw new NaiadError('SN_ERR_BAD_REQUEST', `bad window "${req.query.window}": expected a duration such as 30m, 1h or 7d`, { cause: err })
        }
        window = formatMs(windowMs)
      }
      const now = Date.now()
      return {
        body: {
          generatedAt: new Date(now).toISOString(),
          retention: formatMs(settings.retentionMs),
          sli: await indicators(store, windowMs, window, now),
          objectives: await Promise.all(settings.objectives.map((o) => evaluate(store, o, now)))
        }
      }
    })

    ctx.route('GET', '/api/v1/traces', async (req) => {
      const limit = req.query.limit === undefined ? 100 : Number(req.query.limit)
      if (!Number.isInteger(limit) || limit < 1 || limit > 10_000) throw new NaiadError('SN_ERR_BAD_REQUEST', `bad limit "${req.query.limit}": expected an integer from 1 to 10000`)
      const rows = await store.list({ taskId: req.query.task, peerId: req.query.peer, limit })
      return { body: rows.map(traceView) }
    })

    const prune = async (): Promise<void> => {
      const n = await store.prune(Date.now() - settings.retentionMs)
      if (n > 0) ctx.logger.info({ deleted: n }, 'pruned traces past their retention')
    }
    await prune()
    ctx.every(settings.pruneIntervalMs, prune)
  }
})
