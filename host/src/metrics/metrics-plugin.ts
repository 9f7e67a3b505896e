// The Prometheus plugin: turns fabric and download events into counters and histograms,
// host statistics into gauges, and serves them at GET /metrics.

import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client'
import { EVENTS, type NaiadPlugin } from '@naiad/proto'

/** Gauges a host offers to plugins: name → help text and a reader. */
export type Stats = Record<string, { help: string; read: () => number }>

export const metricsPlugin: NaiadPlugin = {
  name: 'metrics',
  version: '1.0.0',
  setup(ctx) {
    // One registry per binary, shared through `extensions.promRegistry` with plugins that add
    // their own metrics (slo), whichever of them is set up first.
    const registry = (ctx.extensions.promRegistry as Registry | undefined) ?? new Registry()
    ctx.extensions.promRegistry = registry
    const prefix = 'naiad_'
    if (ctx.settings.defaultMetrics !== false) collectDefaultMetrics({ register: registry, prefix })

    const downloaded = new Counter({ name: `${prefix}download_bytes_total`, help: 'Verified bytes stored, by source', labelNames: ['source'], registers: [registry] })
    const uploaded = new Counter({ name: `${prefix}upload_bytes_total`, help: 'Piece bytes served to other peers', registers: [registry] })
    const pieceFailures = new Counter({ name: `${prefix}piece_failures_total`, help: 'Pieces that failed to arrive or verify, by error code', labelNames: ['code'], registers: [registry] })
    const tasks = new Counter({ name: `${prefix}tasks_total`, help: 'Finished downloads, by result', labelNames: ['result'], registers: [registry] })
    const taskSeconds = new Histogram({ name: `${prefix}task_duration_seconds`, help: 'Duration of downloads that did not hit the cache', buckets: [0.1, 0.5, 1, 2, 5, 10, 30, 60, 300], registers: [registry] })
    const backToSource = new Counter({ name: `${prefix}back_to_source_total`, help: 'Downloads that went to the origin', registers: [registry] })
    const evicted = new Counter({ name: `${prefix}cache_evicted_bytes_total`, help: 'Bytes evicted from the piece store', registers: [registry] })
    const getParents = new Histogram({ name: `${prefix}scheduler_get_parents_seconds`, help: 'Time the scheduler took to answer get-parents', buckets: [0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5], registers: [registry] })
    const reports = new Counter({ name: `${prefix}scheduler_piece_reports_total`, help: 'Piece results reported to the scheduler', registers: [registry] })

    ctx.subscribe<{ length: number; source: string }>(EVENTS.pieceStored, (m) => downloaded.inc({ source: m.source }, m.length))
    ctx.subscribe<{ length: number }>(EVENTS.pieceUploaded, (m) => uploaded.inc(m.length))
    ctx.subscribe<{ code: string }>(EVENTS.pieceFailed, (m) => pieceFailures.inc({ code: m.code }))
    ctx.subscribe<{ durationMs: number }>(EVENTS.taskSucceeded, (m) => { tasks.inc({ result: 'succeeded' }); taskSeconds.observe(m.durationMs / 1000) })
    ctx.subscribe<{ code: string }>(EVENTS.taskFailed, () => tasks.inc({ result: 'failed' }))
    ctx.subscribe(EVENTS.backToSource, () => backToSource.inc())
    ctx.subscribe<{ bytes: number }>(EVENTS.cacheEvicted, (m) => evicted.inc(m.bytes))
    ctx.subscribe<{ durationMs: number }>(EVENTS.parentsScheduled, (m) => getParents.observe(m.durationMs / 1000))
    ctx.subscribe<{ count: number }>(EVENTS.piecesReported, (m) => reports.inc(m.count))

    const stats = (ctx.extensions.stats ?? {}) as Stats
    for (const [name, stat] of Object.entries(stats)) {
      new Gauge({ name: `${prefix}${name}`, help: stat.help, registers: [registry], collect() { this.set(stat.read()) } })
    }

    ctx.route('GET', '/metrics', async () => ({
      headers: { 'content-type': registry.contentType },
      body: await registry.metrics()
    }))
  }
}
