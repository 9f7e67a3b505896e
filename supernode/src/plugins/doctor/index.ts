// The doctor plugin, supernode half: daemons running the doctor plugin push their latest
// report over /naiad/doctor/1.0.0; the supernode keeps the latest one per node (in its
// SQLite database, so a restart keeps them) and serves them all at GET /api/v1/doctor.
//
// @example
// # supernode.yaml
// plugins: [metrics, doctor]
// plugin-config:
//   doctor: { staleAfter: 5m }
//
// curl localhost:8002/api/v1/doctor     # every node, its findings, summary counts

import { defineOptions, DoctorReportRequest, DoctorReportResponse, NaiadError, PROTOCOLS } from '@naiad/proto'

import { supernodePlugin } from '../../plugin-api/context.ts'

import { ReportStore, type StoredReport } from './report-store.ts'

type Status = 'ok' | 'warn' | 'fail' | 'info'
const STATUSES = new Set(['ok', 'warn', 'fail', 'info'])

interface RuleResult {
  rule: string
  severity: string
  status: Status
  title: string
  checked: number
  findings: Array<Record<string, unknown>>
}

/** Checks a pushed report's shape: the supernode serves it to operators, so it must be what it claims. */
export function validateReport(json: string): { generatedAt: string; results: RuleResult[]; node: Record<string, unknown> } {
  const bad = (why: string): NaiadError => new NaiadError('SN_ERR_BAD_REQUEST', `doctor report: ${why}`)
  let doc: Record<string, unknown>
  try {
    doc = JSON.parse(json) as Record<string, unknown>
  } catch {
    throw bad('not JSON')
  }
  if (doc === null || typeof doc !== 'object' || doc.version !== 1) throw bad('expected an object with version 1')
  if (typeof doc.generatedAt !== 'string' || Number.isNaN(Date.parse(doc.generatedAt))) throw bad('generatedAt must be an ISO date')
  if (!Array.isArray(doc.results)) throw bad('results must be a list')
  for (const r of doc.results as Array<Record<string, unknown>>) {
    if (r === null || typeof r !== 'object' || typeof r.rule !== 'string' || typeof r.severity !== 'string' || !STATUSES.has(r.status as string) ||
      typeof r.checked !== 'number' || !Array.isArray(r.findings)) {
      throw bad('each result needs rule, severity, status (ok|warn|fail|info), checked and findings')
    }
  }
  return { generatedAt: doc.generatedAt, results: doc.results as RuleResult[], node: (doc.node ?? {}) as Record<string, unknown> }
}

function nodeView(r: StoredReport, staleAfterMs: number, now: number): Record<string, unknown> {
  const report = JSON.parse(r.report) as { generatedAt: string; results: RuleResult[]; summary: Record<string, number> }
  const has = (s: Status): boolean => report.results.some((x) => x.status === s)
  return {
    peerId: r.peerId,
    hostname: r.hostname,
    receivedAt: new Date(r.receivedAt).toISOString(),
    generatedAt: report.generatedAt,
    stale: now - r.receivedAt > staleAfterMs,
    status: has('fail') ? 'fail' : has('warn') ? 'warn' : 'ok',
    summary: report.summary,
    findings: report.results.flatMap((x) => x.findings.map((f) => ({ ...f, status: x.status }))),
    results: report.results
  }
}

const SETTINGS = defineOptions([
  { key: 'staleAfter', type: 'duration', min: 1, default: '5m', help: "a node's report older than this is shown as stale" }
])

export const doctorAggregatorPlugin = supernodePlugin({
  name: 'doctor',
  version: '1.0.0',
  settings: SETTINGS,
  async setup(ctx) {
    const staleAfterMs = ctx.settings.staleAfter
    const store = new ReportStore(ctx.database)

    await ctx.serve(PROTOCOLS.doctor, DoctorReportRequest, DoctorReportResponse, async (req, { remotePeer }) => {
      validateReport(req.report)
      // Keyed by the authenticated peer ID: a node can only replace its own report.
      await store.put({ peerId: remotePeer.toString(), hostname: req.hostname.slice(0, 255), receivedAt: Date.now(), report: req.report })
      return {}
    }, { maxInboundStreams: 64 })

    ctx.route('GET', '/api/v1/doctor', async () => {
      const now = Date.now()
      const nodes = (await store.all()).map((r) => nodeView(r, staleAfterMs, now))
      const byRule: Record<string, { warn: number; fail: number; info: number }> = {}
      for (const n of nodes) {
        for (const r of n.results as RuleResult[]) {
          if (r.status === 'ok') continue
          byRule[r.rule] ??= { warn: 0, fail: 0, info: 0 }
          byRule[r.rule][r.status]++
        }
      }
      const count = (s: string): number => nodes.filter((n) => n.status === s).length
      return {
        body: {
          summary: {
            nodes: nodes.length, ok: count('ok'), warn: count('warn'), fail: count('fail'),
            stale: nodes.filter((n) => n.stale === true).length,
            findings: nodes.reduce((k, n) => k + (n.findings as unknown[]).length, 0),
            byRule
          },
          nodes
        }
      }
    })

    ctx.route('GET', '/api/v1/doctor/:peerId', async (req) => {
      const r = await store.get(req.params.peerId)
      if (r === undefined) return { status: 404, body: { message: `no doctor report from ${req.params.peerId}` } }
      return { body: nodeView(r, staleAfterMs, Date.now()) }
    })
  }
})
