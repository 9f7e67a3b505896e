// Pull traces in the supernode's SQLite database (table `slo_traces`), kept for the
// retention period, and the aggregates the SLIs and objectives are computed from.

import type Database from 'better-sqlite3'
import type { PullTrace } from '@naiad/proto'

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

export class TraceStore {
  private readonly db: Database.Database
  private readonly insertStmt: Database.Statement

  constructor(db: Database.Database) {
    this.db = db
    db.exec(`
      CREATE TABLE IF NOT EXISTS slo_traces (
        trace_id TEXT PRIMARY KEY,
        task_id TEXT NOT NULL,
        peer_id TEXT NOT NULL,
        url TEXT NOT NULL,
        result TEXT NOT NULL,
        error_code TEXT,
        error_message TEXT,
        started_at INTEGER NOT NULL,
        registered_at INTEGER,
        scheduled INTEGER NOT NULL,
        first_piece_at INTEGER,
        finished_at INTEGER NOT NULL,
        received_at INTEGER NOT NULL,
        duration_ms INTEGER NOT NULL,
        content_length INTEGER NOT NULL,
        bytes_peer INTEGER NOT NULL,
        bytes_seed INTEGER NOT NULL,
        bytes_origin INTEGER NOT NULL,
        back_to_source TEXT NOT NULL,
        parents TEXT NOT NULL,
        pieces INTEGER NOT NULL,
        piece_failures INTEGER NOT NULL
      );
      CREATE INDEX IF NOT EXISTS slo_traces_finished ON slo_traces (finished_at);
      CREATE INDEX IF NOT EXISTS slo_traces_task ON slo_traces (task_id, finished_at);
      CREATE INDEX IF NOT EXISTS slo_traces_peer ON slo_traces (peer_id, finished_at);
    `)
    this.insertStmt = db.prepare(`
      INSERT OR IGNORE INTO slo_traces VALUES (
        @trace_id, @task_id, @peer_id, @url, @result, @error_code, @error_message, @started_at, @registered_at, @scheduled,
        @first_piece_at, @finished_at, @received_at, @duration_ms, @content_length, @bytes_peer, @bytes_seed, @bytes_origin,
        @back_to_source, @parents, @pieces, @piece_failures)`)
  }

  /** Stores a trace sent by `peerId`; false when a trace with its ID is already stored (a retried batch). */
  insert(peerId: string, t: PullTrace, receivedAt: number): boolean {
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
    return this.insertStmt.run(r).changes === 1
  }

  /** Newest first, optionally of one task and/or one peer. */
  list(filter: { taskId?: string; peerId?: string; since?: number; limit: number }): TraceRow[] {
    const where: string[] = []
    const args: Array<string | number> = []
    if (filter.taskId !== undefined) { where.push('task_id = ?'); args.push(filter.taskId) }
    if (filter.peerId !== undefined) { where.push('peer_id = ?'); args.push(filter.peerId) }
    if (filter.since !== undefined) { where.push('finished_at >= ?'); args.push(filter.since) }
    const sql = `SELECT * FROM slo_traces ${where.length === 0 ? '' : `WHERE ${where.join(' AND ')}`} ORDER BY finished_at DESC, trace_id LIMIT ?`
    return (this.db.prepare(sql).all(...args, filter.limit) as TraceRecord[]).map(toRow)
  }

  totals(since: number): WindowTotals {
    const r = this.db.prepare(`
      SELECT COUNT(*) AS pulls,
        COALESCE(SUM(result = 'succeeded'), 0) AS succeeded,
        COALESCE(SUM(result = 'succeeded' AND content_length > 0), 0) AS sizedPulls,
        COALESCE(SUM(CASE WHEN result = 'succeeded' AND content_length > 0 THEN duration_ms ELSE 0 END), 0) / 1000.0 AS sizedSeconds,
        COALESCE(SUM(CASE WHEN result = 'succeeded' AND content_length > 0 THEN content_length ELSE 0 END), 0) AS sizedBytes,
        COALESCE(SUM(bytes_peer), 0) AS bytesPeer,
        COALESCE(SUM(bytes_seed), 0) AS bytesSeed,
        COALESCE(SUM(bytes_origin), 0) AS bytesOrigin
      FROM slo_traces WHERE finished_at >= ?`).get(since) as Omit<WindowTotals, 'failed'>
    return { ...r, failed: r.pulls - r.succeeded }
  }

  /**
   * Eligible and good pulls of an objective since a time. `eligible` and `good` are fixed
   * SQL conditions over one row (see objectives.ts); the `?` in `good` bind to `goodParams`.
   */
  count(since: number, eligible: string, good: string, goodParams: number[]): { eligible: number; good: number } {
    return this.db.prepare(`
      SELECT COUNT(*) AS eligible, COALESCE(SUM(${good}), 0) AS good
      FROM slo_traces WHERE finished_at >= ? AND (${eligible})`).get(...goodParams, since) as { eligible: number; good: number }
  }

  /** Deletes traces that finished before `before`; returns how many. */
  prune(before: number): number {
    return this.db.prepare('DELETE FROM slo_traces WHERE finished_at < ?').run(before).changes
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
