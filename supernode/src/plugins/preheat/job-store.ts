// Preheat jobs and their blobs in the shared database (tables `preheat_*`), so a job
// outlives a supernode restart (and, on PostgreSQL, the supernode that took it). A job's credentials (password, Authorization and every
// other header not on the allow-list, the token resolved from the registry) never reach the
// database: the runner keeps them in memory (see splitSecrets). Progress bytes are kept in memory by the runner and
// written when a blob finishes: a restart loses only the progress counter, not the work,
// because the seed's cache already holds what was fetched.

import type { Param, Sql } from '../../database/sql.ts'

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

/** `SET a = ?, b = ?` and its values, from the columns that are set. */
function assignments(cols: Record<string, Param>): [string, Param[]] {
  const names = Object.keys(cols)
  return [names.map((n) => `${n} = ?`).join(', '), names.map((n) => cols[n])]
}

const orNull = (v: unknown): Param => (typeof v === 'boolean' ? (v ? 1 : 0) : v as Param)

export class JobStore {
  private readonly sql: Sql

  constructor(sql: Sql) {
    this.sql = sql
  }

  /**
   * Stores a job, leased to `lease.owner` (the supernode that runs it); its secrets (see
   * splitSecrets) are dropped here, whatever the caller passes.
   */
  async create(type: string, args: JobArgs, now: number, lease: { owner: string; ms: number }, signal?: AbortSignal): Promise<JobRow> {
    const r = await this.sql.get<{ id: number }>(
      "INSERT INTO preheat_jobs (type, args, state, created_at, updated_at, owner, lease_until) VALUES (?, ?, 'PENDING', ?, ?, ?, ?) RETURNING id",
      [type, JSON.stringify(splitSecrets(args).stored), now, now, lease.owner, now + lease.ms], signal)
    return (await this.get(r!.id, signal))!
  }

  /**
   * Takes or keeps the lease on an unfinished job: true when `owner` holds it now. A job is
   * free when it has no owner or its owner's lease ran out (that supernode stopped or died).
   */
  async claim(id: number, owner: string, leaseMs: number, now: number, signal?: AbortSignal): Promise<boolean> {
    return await this.sql.run(`UPDATE preheat_jobs SET owner = ?, lease_until = ?
      WHERE id = ? AND state IN ('PENDING', 'RUNNING') AND (owner IS NULL OR owner = ? OR lease_until < ?)`, [owner, now + leaseMs, id, owner, now], signal) === 1
  }

  /** Extends the leases `owner` holds on `ids`; returns those it still holds on unfinished jobs (another supernode may have canceled one). */
  async renew(owner: string, ids: number[], leaseMs: number, now: number, signal?: AbortSignal): Promise<Set<number>> {
    if (ids.length === 0) return new Set()
    const rows = await this.sql.all<{ id: number }>(`UPDATE preheat_jobs SET lease_until = ?
      WHERE owner = ? AND state IN ('PENDING', 'RUNNING') AND id IN (${ids.map(() => '?').join(', ')}) RETURNING id`, [now + leaseMs, owner, ...ids], signal)
    return new Set(rows.map((r) => r.id))
  }

  /** Gives up `owner`'s leases (a clean shutdown), so another supernode takes its jobs at once. */
  async release(owner: string, signal?: AbortSignal): Promise<void> {
    await this.sql.run("UPDATE preheat_jobs SET lease_until = 0 WHERE owner = ? AND state IN ('PENDING', 'RUNNING')", [owner], signal)
  }

  async get(id: number, signal?: AbortSignal): Promise<JobRow | undefined> {
    const r = await this.sql.get<JobRecord>('SELECT * FROM preheat_jobs WHERE id = ?', [id], signal)
    return r === undefined ? undefined : toJob(r)
  }

  async list(signal?: AbortSignal): Promise<JobRow[]> {
    return (await this.sql.all<JobRecord>('SELECT * FROM preheat_jobs ORDER BY id', [], signal)).map(toJob)
  }

  /** Jobs that were not finished when the supernode stopped. */
  async unfinished(signal?: AbortSignal): Promise<JobRow[]> {
    return (await this.sql.all<JobRecord>("SELECT * FROM preheat_jobs WHERE state IN ('PENDING', 'RUNNING') ORDER BY id", [], signal)).map(toJob)
  }

  async update(id: number, fields: Partial<Pick<JobRow, 'state' | 'errorCode' | 'error' | 'resolved' | 'startedAt' | 'finishedAt'>>, now: number, signal?: AbortSignal): Promise<void> {
    const cols: Record<string, Param> = { updated_at: now }
    if (fields.state !== undefined) cols.state = fields.state
    if (fields.errorCode !== undefined) cols.error_code = fields.errorCode
    if (fields.error !== undefined) cols.error = fields.error
    if (fields.resolved !== undefined) cols.resolved = fields.resolved ? 1 : 0
    if (fields.startedAt !== undefined) cols.started_at = fields.startedAt
    if (fields.finishedAt !== undefined) cols.finished_at = fields.finishedAt
    const [set, values] = assignments(cols)
    await this.sql.run(`UPDATE preheat_jobs SET ${set} WHERE id = ?`, [...values, id], signal)
  }

  async delete(id: number, signal?: AbortSignal): Promise<void> {
    await this.sql.transaction(async (tx) => {
      await tx.run('DELETE FROM preheat_node_blobs WHERE job_id = ?', [id])
      await tx.run('DELETE FROM preheat_nodes WHERE job_id = ?', [id])
      await tx.run('DELETE FROM preheat_blobs WHERE job_id = ?', [id])
      await tx.run('DELETE FROM preheat_jobs WHERE id = ?', [id])
    }, signal)
  }

  async addBlobs(jobId: number, blobs: Array<Pick<BlobRow, 'kind' | 'url' | 'digest' | 'size'>>, signal?: AbortSignal): Promise<void> {
    await this.sql.transaction(async (tx) => {
      for (const [i, b] of blobs.entries()) {
        await tx.run("INSERT INTO preheat_blobs (job_id, idx, kind, url, digest, size, state) VALUES (?, ?, ?, ?, ?, ?, 'PENDING') ON CONFLICT DO NOTHING",
          [jobId, i, b.kind, b.url, b.digest, b.size])
      }
    }, signal)
  }

  async blobs(jobId: number, signal?: AbortSignal): Promise<BlobRow[]> {
    return (await this.sql.all<BlobRecord>('SELECT * FROM preheat_blobs WHERE job_id = ? ORDER BY idx', [jobId], signal)).map(toBlob)
  }

  async updateBlob(jobId: number, idx: number, fields: Partial<Pick<BlobRow, 'state' | 'bytes' | 'cached' | 'taskId' | 'errorCode' | 'error' | 'startedAt' | 'finishedAt' | 'size'>>, signal?: AbortSignal): Promise<void> {
    const columns: Record<string, string> = {
      state: 'state', bytes: 'bytes', size: 'size', cached: 'cached', taskId: 'task_id', errorCode: 'error_code', error: 'error', startedAt: 'started_at', finishedAt: 'finished_at'
    }
    const cols: Record<string, Param> = {}
    for (const [k, v] of Object.entries(fields)) if (v !== undefined) cols[columns[k]] = orNull(v)
    if (Object.keys(cols).length === 0) return
    const [set, values] = assignments(cols)
    await this.sql.run(`UPDATE preheat_blobs SET ${set} WHERE job_id = ? AND idx = ?`, [...values, jobId, idx], signal)
  }

  /** Blobs left RUNNING by a stopped supernode start over (the seed's cache makes finished work instant). */
  async resetRunningBlobs(jobId: number, signal?: AbortSignal): Promise<void> {
    await this.sql.run("UPDATE preheat_blobs SET state = 'PENDING', started_at = NULL WHERE job_id = ? AND state = 'RUNNING'", [jobId], signal)
  }

  /** Records the target daemons of a job, each with the blobs (by index) it is to get. */
  async addNodes(jobId: number, nodes: Array<Pick<NodeRow, 'hostId' | 'hostname' | 'labels'>>, idxs: number[], signal?: AbortSignal): Promise<void> {
    await this.sql.transaction(async (tx) => {
      for (const n of nodes) {
        await tx.run('INSERT INTO preheat_nodes (job_id, host_id, hostname, labels) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING', [jobId, n.hostId, n.hostname, JSON.stringify(n.labels)])
        for (const idx of idxs) {
          await tx.run("INSERT INTO preheat_node_blobs (job_id, host_id, idx, state) VALUES (?, ?, ?, 'PENDING') ON CONFLICT DO NOTHING", [jobId, n.hostId, idx])
        }
      }
    }, signal)
  }

  async nodes(jobId: number, signal?: AbortSignal): Promise<NodeRow[]> {
    const rows = await this.sql.all<NodeRecord>('SELECT * FROM preheat_nodes WHERE job_id = ? ORDER BY hostname, host_id', [jobId], signal)
    return rows.map((r) => ({
      jobId: r.job_id, hostId: r.host_id, hostname: r.hostname, labels: JSON.parse(r.labels) as Record<string, string>, errorCode: r.error_code, error: r.error
    }))
  }

  async updateNode(jobId: number, hostId: string, fields: { errorCode: string | null; error: string | null }, signal?: AbortSignal): Promise<void> {
    await this.sql.run('UPDATE preheat_nodes SET error_code = ?, error = ? WHERE job_id = ? AND host_id = ?', [fields.errorCode, fields.error, jobId, hostId], signal)
  }

  async nodeBlobs(jobId: number, hostId?: string, signal?: AbortSignal): Promise<NodeBlobRow[]> {
    const rows = hostId === undefined
      ? await this.sql.all<NodeBlobRecord>('SELECT * FROM preheat_node_blobs WHERE job_id = ? ORDER BY host_id, idx', [jobId], signal)
      : await this.sql.all<NodeBlobRecord>('SELECT * FROM preheat_node_blobs WHERE job_id = ? AND host_id = ? ORDER BY idx', [jobId, hostId], signal)
    return rows.map((r) => ({
      jobId: r.job_id, hostId: r.host_id, idx: r.idx, state: r.state as BlobState, bytes: r.bytes, cached: r.cached === 1, fromPeers: r.from_peers,
      fromOrigin: r.from_origin, taskId: r.task_id, errorCode: r.error_code, error: r.error, startedAt: r.started_at, finishedAt: r.finished_at
    }))
  }

  async updateNodeBlob(jobId: number, hostId: string, idx: number, fields: Partial<Pick<NodeBlobRow, 'state' | 'bytes' | 'cached' | 'fromPeers' | 'fromOrigin' | 'taskId' | 'errorCode' | 'error' | 'startedAt' | 'finishedAt'>>, signal?: AbortSignal): Promise<void> {
    const columns: Record<string, string> = {
      state: 'state', bytes: 'bytes', cached: 'cached', fromPeers: 'from_peers', fromOrigin: 'from_origin', taskId: 'task_id',
      errorCode: 'error_code', error: 'error', startedAt: 'started_at', finishedAt: 'finished_at'
    }
    const cols: Record<string, Param> = {}
    for (const [k, v] of Object.entries(fields)) if (v !== undefined) cols[columns[k]] = orNull(v)
    if (Object.keys(cols).length === 0) return
    const [set, values] = assignments(cols)
    await this.sql.run(`UPDATE preheat_node_blobs SET ${set} WHERE job_id = ? AND host_id = ? AND idx = ?`, [...values, jobId, hostId, idx], signal)
  }

  /** Node blobs left RUNNING by a stopped supernode start over (the daemons' caches make finished work instant). */
  async resetRunningNodeBlobs(jobId: number, signal?: AbortSignal): Promise<void> {
    await this.sql.run("UPDATE preheat_node_blobs SET state = 'PENDING', started_at = NULL WHERE job_id = ? AND state = 'RUNNING'", [jobId], signal)
  }

  /** Finished jobs whose time to live has run out. */
  async expired(now: number, signal?: AbortSignal): Promise<number[]> {
    return (await this.list(signal)).filter((j) => j.finishedAt !== null && j.args.ttlMs > 0 && j.finishedAt + j.args.ttlMs <= now).map((j) => j.id)
  }
}
