// Preheat jobs and their blobs in the supernode's SQLite database (tables `preheat_*`), so a
// job outlives a supernode restart. A job's credentials (password, Authorization and every
// other header not on the allow-list, the token resolved from the registry) never reach the
// database: the runner keeps them in memory (see splitSecrets). Progress bytes are kept in memory by the runner and
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
  /** `seed` (or a Dragonfly/Harbor name of it), `all_peers`, or `labels` with `labels` set. */
  scope: string
  /** The label selector of scope `labels`: daemons carrying all of them. */
  labels?: Record<string, string>
  headers: Record<string, string>
  username?: string
  password?: string
  /** Stored jobs only: the request carried credentials, which were kept in memory only. */
  credentials?: boolean
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
  /** Never written any more (the resolved token stays in memory); old databases are wiped of it. */
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

/** A daemon a peer-scope job preheats; chosen once, when the seed has the blobs. */
export interface NodeRow {
  jobId: number
  hostId: string
  hostname: string
  labels: Record<string, string>
  /** Set when the node could not be reached or refused; its remaining blobs were not sent. */
  errorCode: string | null
  error: string | null
}

/** One blob on one daemon. */
export interface NodeBlobRow {
  jobId: number
  hostId: string
  idx: number
  state: BlobState
  bytes: number
  cached: boolean
  fromPeers: number
  fromOrigin: number
  taskId: string | null
  errorCode: string | null
  error: string | null
  startedAt: number | null
  finishedAt: number | null
}

interface NodeRecord { job_id: number; host_id: string; hostname: string; labels: string; error_code: string | null; error: string | null }
interface NodeBlobRecord {
  job_id: number; host_id: string; idx: number; state: string; bytes: number; cached: number; from_peers: number; from_origin: number
  task_id: string | null; error_code: string | null; error: string | null; started_at: number | null; finished_at: number | null
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

/** Request headers that carry no secret: shown in job views and stored. Every other header is redacted and kept in memory only. */
export const PUBLIC_HEADERS = new Set(['accept', 'accept-encoding', 'accept-language', 'user-agent', 'range', 'content-type', 'x-naiad-priority', 'if-none-match', 'if-modified-since'])

/** A job's secrets, which live in the runner's memory only. */
export interface JobSecrets {
  headers: Record<string, string>
  username?: string
  password?: string
}

/** Splits parsed job arguments into what may be stored and what must not. */
export function splitSecrets(args: JobArgs): { stored: JobArgs; secrets: JobSecrets | undefined } {
  const headers: Record<string, string> = {}
  const secret: Record<string, string> = {}
  for (const [k, v] of Object.entries(args.headers)) {
    if (PUBLIC_HEADERS.has(k.toLowerCase())) {
      headers[k] = v
    } else {
      // The name is kept (views show it redacted); the value stays in memory.
      headers[k] = '<redacted>'
      secret[k] = v
    }
  }
  const { username, password, ...rest } = args
  const has = Object.keys(secret).length > 0 || (username !== undefined && username !== '') || password !== undefined
  return {
    stored: { ...rest, headers, ...(has ? { credentials: true } : {}) },
    secrets: has ? { headers: secret, username, password } : undefined
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
      CREATE TABLE IF NOT EXISTS preheat_nodes (
        job_id INTEGER NOT NULL, host_id TEXT NOT NULL, hostname TEXT NOT NULL, labels TEXT NOT NULL,
        error_code TEXT, error TEXT, PRIMARY KEY (job_id, host_id)) WITHOUT ROWID;
      CREATE TABLE IF NOT EXISTS preheat_node_blobs (
        job_id INTEGER NOT NULL, host_id TEXT NOT NULL, idx INTEGER NOT NULL, state TEXT NOT NULL, bytes INTEGER NOT NULL DEFAULT 0,
        cached INTEGER NOT NULL DEFAULT 0, from_peers INTEGER NOT NULL DEFAULT 0, from_origin INTEGER NOT NULL DEFAULT 0, task_id TEXT,
        error_code TEXT, error TEXT, started_at INTEGER, finished_at INTEGER, PRIMARY KEY (job_id, host_id, idx)) WITHOUT ROWID;
    `)
    // Databases from before credentials stayed in memory: drop what they kept.
    db.prepare('UPDATE preheat_jobs SET authorization = NULL WHERE authorization IS NOT NULL').run()
    for (const r of db.prepare<[], { id: number; args: string }>('SELECT id, args FROM preheat_jobs').all()) {
      const args = JSON.parse(r.args) as JobArgs
      const secrets = splitSecrets(args).secrets
      const held = secrets !== undefined && (secrets.password !== undefined || secrets.username !== undefined || Object.values(secrets.headers).some((v) => v !== '<redacted>'))
      if (held) db.prepare('UPDATE preheat_jobs SET args = ? WHERE id = ?').run(JSON.stringify(splitSecrets(args).stored), r.id)
    }
  }

  /** Stores a job; its secrets (see splitSecrets) are dropped here, whatever the caller passes. */
  create(type: string, args: JobArgs, now: number): JobRow {
    const r = this.db.prepare<[string, string, number, number], { id: number }>(
      "INSERT INTO preheat_jobs (type, args, state, created_at, updated_at) VALUES (?, ?, 'PENDING', ?, ?) RETURNING id"
    ).get(type, JSON.stringify(splitSecrets(args).stored), now, now)
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

  update(id: number, fields: Partial<Pick<JobRow, 'state' | 'errorCode' | 'error' | 'resolved' | 'startedAt' | 'finishedAt'>>, now: number): void {
    const cols: Record<string, unknown> = { updated_at: now }
    if (fields.state !== undefined) cols.state = fields.state
    if (fields.errorCode !== undefined) cols.error_code = fields.errorCode
    if (fields.error !== undefined) cols.error = fields.error
    if (fields.resolved !== undefined) cols.resolved = fields.resolved ? 1 : 0
    if (fields.startedAt !== undefined) cols.started_at = fields.startedAt
    if (fields.finishedAt !== undefined) cols.finished_at = fields.finishedAt
    const names = Object.keys(cols)
    this.db.prepare(`UPDATE preheat_jobs SET ${names.map((n) => `${n} = @${n}`).join(', ')} WHERE id = @id`).run({ ...cols, id })
  }

  delete(id: number): void {
    this.db.transaction(() => {
      this.db.prepare('DELETE FROM preheat_node_blobs WHERE job_id = ?').run(id)
      this.db.prepare('DELETE FROM preheat_nodes WHERE job_id = ?').run(id)
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

  /** Records the target daemons of a job, each with the blobs (by index) it is to get. */
  addNodes(jobId: number, nodes: Array<Pick<NodeRow, 'hostId' | 'hostname' | 'labels'>>, idxs: number[]): void {
    const node = this.db.prepare('INSERT OR IGNORE INTO preheat_nodes (job_id, host_id, hostname, labels) VALUES (?, ?, ?, ?)')
    const blob = this.db.prepare("INSERT OR IGNORE INTO preheat_node_blobs (job_id, host_id, idx, state) VALUES (?, ?, ?, 'PENDING')")
    this.db.transaction(() => {
      for (const n of nodes) {
        node.run(jobId, n.hostId, n.hostname, JSON.stringify(n.labels))
        for (const idx of idxs) blob.run(jobId, n.hostId, idx)
      }
    })()
  }

  nodes(jobId: number): NodeRow[] {
    return this.db.prepare<[number], NodeRecord>('SELECT * FROM preheat_nodes WHERE job_id = ? ORDER BY hostname, host_id').all(jobId).map((r) => ({
      jobId: r.job_id, hostId: r.host_id, hostname: r.hostname, labels: JSON.parse(r.labels) as Record<string, string>, errorCode: r.error_code, error: r.error
    }))
  }

  updateNode(jobId: number, hostId: string, fields: { errorCode: string | null; error: string | null }): void {
    this.db.prepare('UPDATE preheat_nodes SET error_code = ?, error = ? WHERE job_id = ? AND host_id = ?').run(fields.errorCode, fields.error, jobId, hostId)
  }

  nodeBlobs(jobId: number, hostId?: string): NodeBlobRow[] {
    const rows = hostId === undefined
      ? this.db.prepare<[number], NodeBlobRecord>('SELECT * FROM preheat_node_blobs WHERE job_id = ? ORDER BY host_id, idx').all(jobId)
      : this.db.prepare<[number, string], NodeBlobRecord>('SELECT * FROM preheat_node_blobs WHERE job_id = ? AND host_id = ? ORDER BY idx').all(jobId, hostId)
    return rows.map((r) => ({
      jobId: r.job_id, hostId: r.host_id, idx: r.idx, state: r.state as BlobState, bytes: r.bytes, cached: r.cached === 1, fromPeers: r.from_peers,
      fromOrigin: r.from_origin, taskId: r.task_id, errorCode: r.error_code, error: r.error, startedAt: r.started_at, finishedAt: r.finished_at
    }))
  }

  updateNodeBlob(jobId: number, hostId: string, idx: number, fields: Partial<Pick<NodeBlobRow, 'state' | 'bytes' | 'cached' | 'fromPeers' | 'fromOrigin' | 'taskId' | 'errorCode' | 'error' | 'startedAt' | 'finishedAt'>>): void {
    const columns: Record<string, string> = {
      state: 'state', bytes: 'bytes', cached: 'cached', fromPeers: 'from_peers', fromOrigin: 'from_origin', taskId: 'task_id',
      errorCode: 'error_code', error: 'error', startedAt: 'started_at', finishedAt: 'finished_at'
    }
    const cols: Record<string, unknown> = {}
    for (const [k, v] of Object.entries(fields)) {
      if (v !== undefined) cols[columns[k]] = typeof v === 'boolean' ? (v ? 1 : 0) : v
    }
    const names = Object.keys(cols)
    if (names.length === 0) return
    this.db.prepare(`UPDATE preheat_node_blobs SET ${names.map((n) => `${n} = @${n}`).join(', ')} WHERE job_id = @jobId AND host_id = @hostId AND idx = @idx`)
      .run({ ...cols, jobId, hostId, idx })
  }

  /** Node blobs left RUNNING by a stopped supernode start over (the daemons' caches make finished work instant). */
  resetRunningNodeBlobs(jobId: number): void {
    this.db.prepare("UPDATE preheat_node_blobs SET state = 'PENDING', started_at = NULL WHERE job_id = ? AND state = 'RUNNING'").run(jobId)
  }

  /** Finished jobs whose time to live has run out. */
  expired(now: number): number[] {
    return this.list().filter((j) => j.finishedAt !== null && j.args.ttlMs > 0 && j.finishedAt + j.args.ttlMs <= now).map((j) => j.id)
  }
}
