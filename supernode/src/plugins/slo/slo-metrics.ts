// The slo plugin's Prometheus metrics, on the registry the metrics plugin serves at
// /metrics. docker/grafana/naiad-slo.json queries exactly these names.

import { Counter, Gauge, Histogram, type Registry } from 'prom-client'
import type { PullTrace } from '@naiad/proto'

import type { ObjectiveReport } from './objectives.ts'

export const SLO_METRIC_NAMES = [
  'naiad_slo_pull_duration_seconds',
  'naiad_slo_pull_seconds_per_gib',
  'naiad_slo_pull_bytes_total',
  'naiad_slo_pulls_total',
  'naiad_slo_pull_failures_total',
  'naiad_slo_objective_compliance',
  'naiad_slo_objective_target',
  'naiad_slo_error_budget_remaining',
  'naiad_slo_burn_rate'
] as const

export class SloMetrics {
  private readonly duration: Histogram<'result'>
  private readonly perGiB: Histogram
  private readonly bytes: Counter<'source'>
  private readonly pulls: Counter<'result'>
  private readonly failures: Counter<'code'>

  constructor(registry: Registry, objectives: () => Promise<ObjectiveReport[]>) {
    const registers = [registry]
    this.duration = new Histogram({
      name: 'naiad_slo_pull_duration_seconds', help: 'Duration of pulls reported by the daemons, by result', labelNames: ['result'],
      buckets: [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600], registers
    })
    this.perGiB = new Histogram({
      name: 'naiad_slo_pull_seconds_per_gib', help: 'Seconds per GiB of succeeded pulls of known length',
      buckets: [1, 2, 5, 10, 15, 20, 30, 45, 60, 120, 300, 600], registers
    })
    this.bytes = new Counter({ name: 'naiad_slo_pull_bytes_total', help: 'Bytes the daemons stored during pulls, by source (peer, seed, origin)', labelNames: ['source'], registers })
    this.pulls = new Counter({ name: 'naiad_slo_pulls_total', help: 'Pulls reported by the daemons, by result', labelNames: ['result'], registers })
    this.failures = new Counter({ name: 'naiad_slo_pull_failures_total', help: 'Failed pulls by error code', labelNames: ['code'], registers })
    for (const source of ['peer', 'seed', 'origin']) this.bytes.inc({ source }, 0)
    for (const result of ['succeeded', 'failed']) this.pulls.inc({ result }, 0)

    // Objectives are computed from the stored traces at scrape time (two indexed queries per
    // objective and gauge), so they survive a restart and are never older than the scrape.
    const reports = objectives
    new Gauge({
      name: 'naiad_slo_objective_compliance', help: 'Share of eligible pulls that were good over the objective window (NaN with no eligible pull)', labelNames: ['objective', 'sli'], registers,
      async collect() { const rs = await reports(); this.reset(); for (const r of rs) this.set({ objective: r.name, sli: r.sli }, r.compliance ?? Number.NaN) }
    })
    new Gauge({
      name: 'naiad_slo_objective_target', help: 'Target of each objective', labelNames: ['objective', 'sli'], registers,
      async collect() { const rs = await reports(); this.reset(); for (const r of rs) this.set({ objective: r.name, sli: r.sli }, r.target) }
    })
    new Gauge({
      name: 'naiad_slo_error_budget_remaining', help: 'Share of the error budget left over the objective window (negative when overspent)', labelNames: ['objective'], registers,
      async collect() { const rs = await reports(); this.reset(); for (const r of rs) this.set({ objective: r.name }, r.errorBudgetRemaining) }
    })
    new Gauge({
      name: 'naiad_slo_burn_rate', help: 'Error-budget burn rate over the objective window (long) and its short window', labelNames: ['objective', 'window'], registers,
      async collect() {
        const rs = await reports()
        this.reset()
        for (const r of rs) {
          this.set({ objective: r.name, window: 'long' }, r.burnRate)
          this.set({ objective: r.name, window: 'short' }, r.burnRateShort)
        }
      }
    })
  }

  observe(t: PullTrace): void {
    const result = t.result === 'succeeded' ? 'succeeded' : 'failed'
    this.duration.observe({ result }, t.durationMs / 1000)
    if (result === 'succeeded' && t.contentLength > 0) this.perGiB.observe((t.durationMs / 1000) / (t.contentLength / 1024 ** 3))
    this.pulls.inc({ result })
    if (result === 'failed') this.failures.inc({ code: t.errorCode === '' ? 'unknown' : t.errorCode })
    if (t.bytesPeer > 0) this.bytes.inc({ source: 'peer' }, t.bytesPeer)
    if (t.bytesSeed > 0) this.bytes.inc({ source: 'seed' }, t.bytesSeed)
    if (t.bytesOrigin > 0) this.bytes.inc({ source: 'origin' }, t.bytesOrigin)
  }
}
