// The Prometheus plugin: turns fabric and download events into counters and histograms,
// the host's statistics into gauges, and serves the binary's registry at GET /metrics.
// Both binaries load it; each makes its own instance for its own host.

import { collectDefaultMetrics, Counter, Gauge, Histogram } from 'prom-client'
import { defineOptions, definePlugin, EVENTS, type NaiadPlugin } from '@naiad/proto'

import type { HostContext } from '../plugins/plugin-host.ts'

const SETTINGS = defineOptions([
  { key: 'defaultMetrics', type: 'bool', default: true, help: "Node's process metrics (CPU, memory, event loop, GC)" }
])

/**
 * How often the event loop delay histogram (nodejs_eventloop_lag_p99_seconds and the like)
 * samples: prom-client's 10 ms default woke every daemon 100 times a second, about 4 ms of
 * CPU a second for an idle process — in a 16-host swarm pull, about 5 % of the CPU the
 * daemons spent per GiB. A stall of 100 ms or more is still caught every time.
 */
const LOOP_DELAY_RESOLUTION_MS = 100

/** The metrics plugin for a host whose context is C (it uses only what every host offers). */
export function metricsPlugin<C extends HostContext>(host: C['host']): NaiadPlugin<C> {
  return definePlugin<C, typeof SETTINGS>({
    name: 'metrics',
    version: '1.0.0',
    host,
    settings: SETTINGS,
    setup(ctx) {
      const registry = ctx.metrics
      const prefix = 'naiad_'
      if (ctx.settings.defaultMetrics) collectDefaultMetrics({ register: registry, prefix, eventLoopMonitoringPrecision: LOOP_DELAY_RESOLUTION_MS })

      const downloaded = new Counter({ name: `${prefix}download_bytes_total`, help: 'Verified bytes stored, by source', labelNames: ['source'], registers: [registry] })
      const uploaded = new Counter({ name: `${prefix}upload_bytes_total`, help: 'Piece bytes served to other peers', registers: [registry] })
      const pieceFailures = new Counter({ name: `${prefix}piece_failures_total`, help: 'Pieces that failed to arrive or verify, by error code', labelNames: ['code'], registers: [registry] })
      const tasks = new Counter({ name: `${prefix}tasks_total`, help: 'Finished downloads, by result', labelNames: ['result'], registers: [registry] })
      const taskSeconds = new Histogram({ name: `${prefix}task_duration_seconds`, help: 'Duration of downloads that did not hit the cache', buckets: [0.1, 0.5, 1, 2, 5, 10, 30, 60, 300], registers: [registry] })
      const backToSource = new Counter({ name: `${prefix}back_to_source_total`, help: 'Downloads that went to the origin', registers: [registry] })
      const evicted = new Counter({ name: `${prefix}cache_evicted_bytes_total`, help: 'Bytes evicted from the piece store', registers: [registry] })
      const getParents = new Histogram({ name: `${prefix}scheduler_get_parents_seconds`, help: 'Time the scheduler took to answer get-parents', buckets: [0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5], registers: [registry] })
      const reports = new Counter({ name: `${prefix}scheduler_piece_reports_total`, help: 'Piece results reported to the scheduler', registers: [registry] })

      ctx.subscribe(EVENTS.pieceStored, (m) => downloaded.inc({ source: m.source }, m.length))
      ctx.subscribe(EVENTS.pieceUploaded, (m) => uploaded.inc(m.length))
      ctx.subscribe(EVENTS.pieceFailed, (m) => pieceFailures.inc({ code: m.code }))
      ctx.subscribe(EVENTS.taskSucceeded, (m) => { tasks.inc({ result: 'succeeded' }); taskSeconds.observe(m.durationMs / 1000) })
      ctx.subscribe(EVENTS.taskFailed, () => tasks.inc({ result: 'failed' }))
      ctx.subscribe(EVENTS.backToSource, () => backToSource.inc())
      ctx.subscribe(EVENTS.cacheEvicted, (m) => evicted.inc(m.bytes))
      ctx.subscribe(EVENTS.parentsScheduled, (m) => getParents.observe(m.durationMs / 1000))
      ctx.subscribe(EVENTS.piecesReported, (m) => reports.inc(m.count))

      for (const [name, stat] of Object.entries(ctx.stats)) {
        new Gauge({ name: `${prefix}${name}`, help: stat.help, registers: [registry], collect() { this.set(stat.read()) } })
        ctx.onClose(() => registry.removeSingleMetric(`${prefix}${name}`))
      }

      ctx.route('GET', '/metrics', async () => ({
        headers: { 'content-type': registry.contentType },
        body: await registry.metrics()
      }))
    }
  })
}
