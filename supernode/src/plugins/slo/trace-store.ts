// Pull traces in the shared database (table `slo_traces`), kept for the retention period,
// and the aggregates the SLIs and objectives are computed from.

import type { PullTrace } from '@naiad/proto'

import type { Sql } from '../../database/sql.ts'

export interface TraceRow {
  traceId: string
  taskId: string
  peerId: string
  url: string
  result: 'succeeded' | 'failed'
  errorCode: string | null
  errorMessage: string | null
  startedAt: number
  registeredAt: number | null
  scheduled: boolean
  firstPieceAt: number | null
  finishedAt: number
  receivedAt: number
  durationMs: number
  contentLength: number
  bytesPeer: number
  bytesSeed: number
  bytesOrigin: number
  backToSource: Array<{ atMs: number; reason: string }>
  parents: Array<{ peerId: string; isSeed: boolean; bytes: number; pieces: number }>
  pieces: number
  pieceFailures: number
}

interface TraceRecord {
  trace_id: string
  task_id: string
  peer_id: string
  url: string
  result: string
  error_code: string | null
  error_message: string | null
  started_at: number
  registered_at: number | null
  scheduled: number
  first_piece_at: number | null
  finished_at: number
  received_at: number
  duration_ms: number
  content_length: number
  bytes_peer: number
  bytes_seed: number
  bytes_origin: number
  back_to_source: string
  parents: string
  pieces: number
  piece_failures: number
}

/** Counts over the pulls that finished in a window, in one pass of SQL. */
export interface WindowTotals {
  pulls: number
  succeeded: number
  failed: number
  /** Over succeeded pulls of known, non-zero length. */
  sizedPulls: number
  sizedSeconds: number
  sizedBytes: number
  bytesPeer: number
  bytesSeed: number
  bytesOrigin: number
}

export const GIB = 1024 ** 3

const COLUMNS = ['trace_id', 'task_id', 'peer_id', 'url', 'result', 'error_code', 'error_message', 'started_at', 'registered_at', 'scheduled',
  'first_piece_at', 'finished_at', 'received_at', 'duration_ms', 'content_length', 'bytes_peer', 'bytes_seed', 'bytes_origin',
  'back_to_source', 'parents', 'pieces', 'piece_failures'] as const satisfies ReadonlyArray<keyof TraceRecord>

const INSERT = `INSERT INTO slo_traces (${COLUMNS.join(', ')}) VALUES (${COLUMNS.map(() => '?').join(', ')}) ON CONFLICT (trace_id) DO NOTHING`

export class TraceStore {
  private readonly sql: Sql

  constructor(sql: Sql) {
    this.sql = sql
  }

  /** Stores a trace sent by `peerId`; false when a trace with its ID is already stored (a retried batch). */
  async insert(peerId: string, t: PullTrace, receivedAt: number, signal?: AbortSignal): Promise<boolean> {
    const orNull = (n: number): number | null => (n < 0 ? null : n)
    const r: TraceRecord = {
      trace_id: t.traceId,
      task_id: t.taskId,
      peer_id: peerId,
      url: t.url,
      result: t.result === 'succeeded' ? 'succeeded' : 'failed',
      error_code: t.errorCode === '' ? null : t.errorCode,
      error_message: t.errorMessage === '' ? null : t.errorMessage,
      started_at: t.startedAtMs,
      registered_at: orNull(t.registeredAtMs),
      scheduled: t.scheduled ? 1 : 0,
      first_piece_at: orNull(t.firstPieceAtMs),
      finished_at: t.finishedAtMs,
      received_at: receivedAt,
      duration_ms: t.durationMs,
      content_length: t.contentLength,
      bytes_peer: t.bytesPeer,
      bytes_seed: t.bytesSeed,
      bytes_origin: t.bytesOrigin,
      back_to_source: JSON.stringify(t.backToSource.map((b) => ({ atMs: b.atMs, reason: b.reason }))),
      parents: JSON.stringify(t.parents.map((p) => ({ peerId: p.peerId, isSeed: p.isSeed, bytes: p.bytes, pieces: p.pieces }))),
      pieces: t.pieces,
      piece_failures: t.pieceFailures
    }
    return await this.sql.run(INSERT, COLUMNS.map((c) => r[c]), signal) === 1
  }

  /** Newest first, optionally of one task and/or one peer. */
  async list(filter: { taskId?: string; peerId?: string; since?: number; limit: number }, signal?: AbortSignal): Promise<TraceRow[]> {
    const where: string[] = []
    const args: Array<string | number> = []
    if (filter.taskId !== undefined) { where.push('task_id = ?'); args.push(filter.taskId) }
    if (filter.peerId !== undefined) { where.push('peer_id = ?'); args.push(filter.peerId) }
    if (filter.since !== undefined) { where.push('finished_at >= ?'); args.push(filter.since) }
    const sql = `SELECT * FROM slo_traces ${where.length === 0 ? '' : `WHERE ${where.join(' AND ')}`} ORDER BY finished_at DESC, trace_id LIMIT ?`
    return (await this.sql.all<TraceRecord>(sql, [...args, filter.limit], signal)).map(toRow)
  }

  async totals(since: number, signal?: AbortSignal): Promise<WindowTotals> {
    const sized = "result = 'succeeded' AND content_length > 0"
    const r = await this.sql.get<Omit<WindowTotals, 'failed'>>(`
      SELECT COUNT(*) AS pulls,
        COALESCE(SUM(CASE WHEN result = 'succeeded' THEN 1 ELSE 0 END), 0) AS succeeded,
        COALESCE(SUM(CASE WHEN ${sized} THEN 1 ELSE 0 END), 0) AS "sizedPulls",
        COALESCE(SUM(CASE WHEN ${sized} THEN duration_ms ELSE 0 END), 0) / 1000.0 AS "sizedSeconds",
        COALESCE(SUM(CASE WHEN ${sized} THEN content_length ELSE 0 END), 0) AS "sizedBytes",
        COALESCE(SUM(bytes_peer), 0) AS "bytesPeer",
        COALESCE(SUM(bytes_seed), 0) AS "bytesSeed",
        COALESCE(SUM(bytes_origin), 0) AS "bytesOrigin"
      FROM slo_traces WHERE finished_at >= ?`, [since], signal)
    return { ...r!, failed: r!.pulls - r!.succeeded }
  }

  /**
   * Eligible and good pulls of an objective since a time. `eligible` and `good` are fixed
   * SQL conditions over one row (see objectives.ts); the `?` in `good` bind to `goodParams`.
   */
  async count(since: number, eligible: string, good: string, goodParams: number[], signal?: AbortSignal): Promise<{ eligible: number; good: number }> {
    const r = await this.sql.get<{ eligible: number; good: number }>(`
      SELECT COUNT(*) AS eligible, COALESCE(SUM(CASE WHEN ${good} THEN 1 ELSE 0 END), 0) AS good
      FROM slo_traces WHERE finished_at >= ? AND (${eligible})`, [...goodParams, since], signal)
    return r!
  }

  /** Deletes traces that finished before `before`; returns how many. */
  async prune(before: number, signal?: AbortSignal): Promise<number> {
    return this.sql.run('DELETE FROM slo_traces WHERE finished_at < ?', [before], signal)
  }
}

function toRow(r: TraceRecord): TraceRow {
  return {
    traceId: r.trace_id,
    taskId: r.task_id,
    peerId: r.peer_id,
    url: r.url,
    result: r.result === 'succeeded' ? 'succeeded' : 'failed',
    errorCode: r.error_code,
    errorMessage: r.error_message,
    startedAt: r.started_at,
    registeredAt: r.registered_at,
    scheduled: r.scheduled === 1,
    firstPieceAt: r.first_piece_at,
    finishedAt: r.finished_at,
    receivedAt: r.received_at,
    durationMs: r.duration_ms,
    contentLength: r.content_length,
    bytesPeer: r.bytes_peer,
    bytesSeed: r.bytes_seed,
    bytesOrigin: r.bytes_origin,
    backToSource: JSON.parse(r.back_to_source) as TraceRow['backToSource'],
    parents: JSON.parse(r.parents) as TraceRow['parents'],
    pieces: r.pieces,
    pieceFailures: r.piece_failures
  }
}
