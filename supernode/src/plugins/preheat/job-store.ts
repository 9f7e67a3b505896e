// Preheat jobs and their blobs in the supernode's SQLite database (tables `preheat_*`), so a
// job outlives a supernode restart. Progress bytes are kept in memory by the runner and
// written when a blob finishes: a restart loses only the progress counter, not the work,
// because the seed's cache already holds what was fetched.

import type Database from 'better-sqlite3'

export type JobState = 'PENDING' | 'RUNNING' | 'SUCCESS' | 'FAILURE' | 'CANCELED'
export type BlobState = 'PENDING' | 'RUNNING' | 'SUCCESS' | 'FAILURE' | 'SKIPPED'

export interface JobArgs {
  type: 'image' | 'file'
  url?: string
  urls?: string[]
  platform: string
  scope: string
  headers: Record<string, string>
  username?: string
  password?: string
  parallelism: number
  /** ms from creation; 0 = none. */
  deadlineMs: number
  /** ms after finishing until the job is deleted; 0 = kept. */
  ttlMs: number
}

export interface JobRow {
  id: number
  type: string
  args: JobArgs
  state: JobState
  errorCode: string | null
  error: string | null
  /** Authorization resolved while reading the manifest (Bearer token), reused for blobs. */
  authorization: string | null
  resolved: boolean
  createdAt: number
  updatedAt: number
  startedAt: number | null
  finishedAt: number | null
}

export interface BlobRow {
  jobId: number
  idx: number
  kind: 'config' | 'layer' | 'file'
  url: string
  digest: string | null
  size: number
  state: BlobState
  bytes: number
  cached: boolean
  taskId: string | null
  errorCode: string | null
  error: string | null
  startedAt: number | null
  finishedAt: number | null
}

interface JobRecord {
  id: number; type: string; args: string; state: string; error_code: string | null; error: string | null; authorization: string | null
  resolved: number; created_at: number; updated_at: number; started_at: number | null; finished_at: number | null
}
interface BlobRecord {
  job_id: number; idx: number; kind: string; url: string; digest: string | null; size: number; state: string; bytes: number; cached: number
  task_id: string | null; error_code: string | null; error: string | null; started_at: number | null; finished_at: number | null
}

function toJob(r: JobRecord): JobRow {
  return {
    id: r.id, type: r.type, args: JSON.parse(r.args) as JobArgs, state: r.state as JobState, errorCode: r.error_code, error: r.error,
    authorization: r.authorization, resolved: r.resolved === 1, createdAt: r.created_at, updatedAt: r.updated_at, startedAt: r.started_at, finishedAt: r.finished_at
  }
}

function toBlob(r: BlobRecord): BlobRow {
  return {
    jobId: r.job_id, idx: r.idx, kind: r.kind as BlobRow['kind'], url: r.url, digest: r.digest, size: r.size, state: r.state as BlobState, bytes: r.bytes,
    cached: r.cached === 1, taskId: r.task_id, errorCode: r.error_code, error: r.error, startedAt: r.started_at, finishedAt: r.finished_at
  }
}

export class JobStore {
  private readonly db: Database.Database

  constructor(db: Database.Database) {
    this.db = db
    db.exec(`
      CREATE TABLE IF NOT EXISTS preheat_jobs (
        id INTEGER PRIMARY KEY AUTOINCREMENT, type TEXT NOT NULL, args TEXT NOT NULL, state TEXT NOT NULL,
        error_code TEXT, error TEXT, authorization TEXT, resolved INTEGER NOT NULL DEFAULT 0,
        created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, started_at INTEGER, finished_at INTEGER);
      CREATE TABLE IF NOT EXISTS preheat_blobs (
        job_id INTEGER NOT NULL, idx INTEGER NOT NULL, kind TEXT NOT NULL, url TEXT NOT NULL, digest TEXT, size INTEGER NOT NULL,
        state TEXT NOT NULL, bytes INTEGER NOT NULL DEFAULT 0, cached INTEGER NOT NULL DEFAULT 0, task_id TEXT,
        error_code TEXT, error TEXT, started_at INTEGER, finished_at INTEGER, PRIMARY KEY (job_id, idx)) WITHOUT ROWID;
    `)
  }

  create(type: string, args: JobArgs, now: number): JobRow {
    const r = this.db.prepare<[string, string, number, number], { id: number }>(
      "INSERT INTO preheat_jobs (type, args, state, created_at, updated_at) VALUES (?, ?, 'PENDING', ?, ?) RETURNING id"
    ).get(type, JSON.stringify(args), now, now)
    return this.get(r!.id)!
  }

  get(id: number): JobRow | undefined {
    const r = this.db.prepare<[number], JobRecord>('SELECT * FROM preheat_jobs WHERE id = ?').get(id)
    return r === undefined ? undefined : toJob(r)
  }

  list(): JobRow[] {
    return this.db.prepare<[], JobRecord>('SELECT * FROM preheat_jobs ORDER BY id').all().map(toJob)
  }

  /** Jobs that were not finished when the supernode stopped. */
  unfinished(): JobRow[] {
    return this.db.prepare<[], JobRecord>("SELECT * FROM preheat_jobs WHERE state IN ('PENDING', 'RUNNING') ORDER BY id").all().map(toJob)
  }

  update(id: number, fields: Partial<Pick<JobRow, 'state' | 'errorCode' | 'error' | 'authorization' | 'resolved' | 'startedAt' | 'finishedAt'>>, now: number): void {
    const cols: Record<string, unknown> = { updated_at: now }
    if (fields.state !== undefined) cols.state = fields.state
    if (fields.errorCode !== undefined) cols.error_code = fields.errorCode
    if (fields.error !== undefined) cols.error = fields.error
    if (fields.authorization !== undefined) cols.authorization = fields.authorization
    if (fields.resolved !== undefined) cols.resolved = fields.resolved ? 1 : 0
    if (fields.startedAt !== undefined) cols.started_at = fields.startedAt
    if (fields.finishedAt !== undefined) cols.finished_at = fields.finishedAt
    const names = Object.keys(cols)
    this.db.prepare(`UPDATE preheat_jobs SET ${names.map((n) => `${n} = @${n}`).join(', ')} WHERE id = @id`).run({ ...cols, id })
  }

  delete(id: number): void {
    this.db.transaction(() => {
      this.db.prepare('DELETE FROM preheat_blobs WHERE job_id = ?').run(id)
      this.db.prepare('DELETE FROM preheat_jobs WHERE id = ?').run(id)
    })()
  }

  addBlobs(jobId: number, blobs: Array<Pick<BlobRow, 'kind' | 'url' | 'digest' | 'size'>>): void {
    const insert = this.db.prepare("INSERT OR IGNORE INTO preheat_blobs (job_id, idx, kind, url, digest, size, state) VALUES (?, ?, ?, ?, ?, ?, 'PENDING')")
    this.db.transaction(() => { blobs.forEach((b, i) => insert.run(jobId, i, b.kind, b.url, b.digest, b.size)) })()
  }

  blobs(jobId: number): BlobRow[] {
    return this.db.prepare<[number], BlobRecord>('SELECT * FROM preheat_blobs WHERE job_id = ? ORDER BY idx').all(jobId).map(toBlob)
  }

  updateBlob(jobId: number, idx: number, fields: Partial<Pick<BlobRow, 'state' | 'bytes' | 'cached' | 'taskId' | 'errorCode' | 'error' | 'startedAt' | 'finishedAt' | 'size'>>): void {
    const cols: Record<string, unknown> = {}
    if (fields.state !== undefined) cols.state = fields.state
    if (fields.bytes !== undefined) cols.bytes = fields.bytes
    if (fields.size !== undefined) cols.size = fields.size
    if (fields.cached !== undefined) cols.cached = fields.cached ? 1 : 0
    if (fields.taskId !== undefined) cols.task_id = fields.taskId
    if (fields.errorCode !== undefined) cols.error_code = fields.errorCode
    if (fields.error !== undefined) cols.error = fields.error
    if (fields.startedAt !== undefined) cols.started_at = fields.startedAt
    if (fields.finishedAt !== undefined) cols.finished_at = fields.finishedAt
    const names = Object.keys(cols)
    if (names.length === 0) return
    this.db.prepare(`UPDATE preheat_blobs SET ${names.map((n) => `${n} = @${n}`).join(', ')} WHERE job_id = @jobId AND idx = @idx`).run({ ...cols, jobId, idx })
  }

  /** Blobs left RUNNING by a stopped supernode start over (the seed's cache makes finished work instant). */
  resetRunningBlobs(jobId: number): void {
    this.db.prepare("UPDATE preheat_blobs SET state = 'PENDING', started_at = NULL WHERE job_id = ? AND state = 'RUNNING'").run(jobId)
  }

  /** Finished jobs whose time to live has run out. */
  expired(now: number): number[] {
    return this.list().filter((j) => j.finishedAt !== null && j.args.ttlMs > 0 && j.finishedAt + j.args.ttlMs <= now).map((j) => j.id)
  }
}
