// The preheat plugin: puts images and files into the seed's cache before anyone pulls them,
// so the first pull on every node is served by the swarm, not the registry.
//
// @example
// # supernode.yaml
// plugins: [metrics, preheat]
// plugin-config:
//   preheat: { insecureRegistries: ["registry.local:5000"], parallelism: 4 }
//
// curl -XPOST localhost:8002/api/v1/jobs -d '{"type":"preheat","args":{"type":"image","url":"registry.local:5000/app:v1"}}'
//
// Scopes: "seed" (the seed's cache), "all_peers" and {labels: {...}} (the seed, then every
// matching daemon through the control service, ctx.extensions.control).
//
// Routes: /api/v1/jobs (Naiad) and /oapi/v1/jobs + /healthy (Dragonfly's open API, which
// Harbor's Dragonfly preheat provider calls). See docs/preheat.md.

import type Database from 'better-sqlite3'
import { Agent, interceptors } from 'undici'
import { NaiadError, type NaiadPlugin } from '@naiad/proto'
import type { DestinationPolicy } from '@naiad/peer'

import { parseDurationMs, parseJobRequest } from './job-request.ts'
import { JobStore, PUBLIC_HEADERS, splitSecrets, type BlobRow, type JobRow, type JobState, type NodeBlobRow } from './job-store.ts'
import { PreheatRunner, type PeerControl, type SeedDownloader } from './runner.ts'

export interface PreheatSettings {
  insecureRegistries: string[]
  parallelism: number
  /** Default ttlAfterFinished for jobs that name none; 0 keeps finished jobs. */
  ttlAfterFinishedMs: number
  /** How often deadlines and TTLs are checked. */
  checkIntervalMs: number
  /** Peer scopes: daemons preheated at once per job. */
  nodeParallelism: number
  /** Peer scopes: how long a daemon may take for one blob when the job has no deadline. */
  nodeTimeoutMs: number
}

function readSettings(raw: Record<string, unknown>): PreheatSettings {
  const bad = (key: string, want: string): NaiadError => new NaiadError('PROTO_ERR_BAD_CONFIG', `plugin-config.preheat.${key}: expected ${want}`)
  const insecure = raw.insecureRegistries ?? []
  if (!Array.isArray(insecure) || insecure.some((h) => typeof h !== 'string')) throw bad('insecureRegistries', 'a list of HOST[:PORT]')
  const parallelism = raw.parallelism ?? 4
  if (typeof parallelism !== 'number' || !Number.isInteger(parallelism) || parallelism < 1 || parallelism > 64) throw bad('parallelism', 'an integer from 1 to 64')
  const nodeParallelism = raw.nodeParallelism ?? 16
  if (typeof nodeParallelism !== 'number' || !Number.isInteger(nodeParallelism) || nodeParallelism < 1 || nodeParallelism > 1024) throw bad('nodeParallelism', 'an integer from 1 to 1024')
  let ttl = 0
  let check = 1000
  let nodeTimeout = 30 * 60_000
  try {
    ttl = parseDurationMs(raw.ttlAfterFinished, 'ttlAfterFinished', 1000)
    check = raw.checkInterval === undefined ? 1000 : parseDurationMs(raw.checkInterval, 'checkInterval', 1000)
    if (raw.nodeTimeout !== undefined) nodeTimeout = parseDurationMs(raw.nodeTimeout, 'nodeTimeout', 1000)
  } catch (err) {
    throw new NaiadError('PROTO_ERR_BAD_CONFIG', `plugin-config.preheat: ${(err as Error).message}`, { cause: err })
  }
  if (nodeTimeout <= 0) throw bad('nodeTimeout', 'a duration above zero')
  return { insecureRegistries: insecure as string[], parallelism, ttlAfterFinishedMs: ttl, checkIntervalMs: check, nodeParallelism, nodeTimeoutMs: nodeTimeout }
}

const iso = (ms: number | null): string | null => ms === null ? null : new Date(ms).toISOString()

/** Harbor's provider knows only PENDING, SUCCESS and FAILURE; anything else it counts as failed. */
function openApiState(s: JobState): JobState {
  if (s === 'RUNNING') return 'PENDING'
  if (s === 'CANCELED') return 'FAILURE'
  return s
}

/** A job's arguments as views show them: only allow-listed headers keep their values. */
function redactedArgs(job: JobRow): Record<string, unknown> {
  const headers = Object.fromEntries(Object.entries(job.args.headers).map(([k, v]) => [k, PUBLIC_HEADERS.has(k.toLowerCase()) ? v : '<redacted>']))
  return { ...job.args, headers, username: undefined, password: job.args.credentials === true ? '<redacted>' : undefined }
}

/** Job IDs are positive decimal integers, spelled plainly (not 0x1, 1e3, 01 or +1). */
const JOB_ID = /^[1-9]\d{0,15}$/

export const preheatPlugin: NaiadPlugin = {
  name: 'preheat',
  version: '1.0.0',
  setup(ctx) {
    if (ctx.host !== 'supernode') throw new NaiadError('PROTO_ERR_PLUGIN', 'the preheat plugin runs on the supernode only')
    const settings = readSettings(ctx.settings)
    const seed = ctx.extensions.seed as { engine: { tasks: SeedDownloader } } | undefined
    const control = ctx.extensions.control as PeerControl | undefined
    const database = ctx.extensions.database as Database.Database | undefined
    if (database === undefined) throw new NaiadError('PROTO_ERR_PLUGIN', 'the preheat plugin needs the supernode database')
    const store = new JobStore(database)
    // Manifest reads obey the supernode's source policy; preheat's insecure registries count as allowed.
    const policy = (ctx.extensions.sourcePolicy as DestinationPolicy | undefined)?.with(settings.insecureRegistries)
    const agent = policy === undefined ? undefined : new Agent({ connect: policy.connector({ timeout: 10_000 }) })
    if (agent !== undefined) ctx.onClose(() => agent.close())
    const seedNode = { hostname: 'supernode-seed', peerId: ctx.fabric.peerId.toString() }
    const runner = seed === undefined
      ? undefined
      : new PreheatRunner({
        store, seed: seed.engine.tasks, logger: ctx.logger, insecureRegistries: settings.insecureRegistries,
        control, nodeParallelism: settings.nodeParallelism, nodeTimeoutMs: settings.nodeTimeoutMs,
        dispatcher: agent?.compose(interceptors.redirect({ maxRedirections: 5 }))
      })

    const blobView = (job: JobRow, b: BlobRow): Record<string, unknown> => ({
      kind: b.kind, url: b.url, digest: b.digest, size: b.size, state: b.state,
      bytes: b.state === 'RUNNING' ? runner?.inFlight(job.id, b.idx) ?? 0 : b.bytes,
      cached: b.cached, task_id: b.taskId,
      error: b.error === null ? null : { code: b.errorCode, message: b.error },
      started_at: iso(b.startedAt), finished_at: iso(b.finishedAt)
    })

    const nodeBlobView = (blob: BlobRow | undefined, b: NodeBlobRow): Record<string, unknown> => ({
      kind: blob?.kind, url: blob?.url, digest: blob?.digest ?? null, size: blob?.size ?? -1, state: b.state, bytes: b.bytes,
      cached: b.cached, from_peers: b.fromPeers, from_origin: b.fromOrigin, task_id: b.taskId,
      error: b.error === null ? null : { code: b.errorCode, message: b.error },
      started_at: iso(b.startedAt), finished_at: iso(b.finishedAt)
    })

    /** A node's state from its blobs: RUNNING while any runs, then FAILURE if any failed, SUCCESS when all did. */
    const nodeState = (blobs: Array<{ state: BlobRow['state'] }>, failed: boolean): string => {
      const has = (s: BlobRow['state']): boolean => blobs.some((b) => b.state === s)
      if (has('RUNNING')) return 'RUNNING'
      if (has('PENDING')) return failed ? 'FAILURE' : 'PENDING'
      if (failed || has('FAILURE')) return 'FAILURE'
      if (has('SKIPPED')) return 'SKIPPED'
      return 'SUCCESS'
    }

    const jobView = (job: JobRow, openApi: boolean): Record<string, unknown> => {
      const blobs = store.blobs(job.id)
      const count = (s: BlobRow['state']): number => blobs.filter((b) => b.state === s).length
      const views = blobs.map((b) => blobView(job, b))
      const finished = job.state === 'SUCCESS' || job.state === 'FAILURE' || job.state === 'CANCELED'
      const host = { hostname: seedNode.hostname, ip: '' }
      const byIdx = new Map(blobs.map((b) => [b.idx, b]))
      const nodeBlobs = store.nodeBlobs(job.id)
      const peers = store.nodes(job.id).map((n) => {
        const mine = nodeBlobs.filter((b) => b.hostId === n.hostId)
        return {
          node: 'peer', hostname: n.hostname, peerId: n.hostId, labels: n.labels,
          state: nodeState(mine, n.error !== null),
          error: n.error === null ? null : { code: n.errorCode, message: n.error },
          progress: {
            blobs: mine.length, succeeded: mine.filter((b) => b.state === 'SUCCESS').length, failed: mine.filter((b) => b.state === 'FAILURE').length,
            bytes: mine.reduce((sum, b) => sum + b.bytes, 0)
          },
          blobs: mine.map((b) => nodeBlobView(byIdx.get(b.idx), b))
        }
      })
      const peerTasks = (state: BlobRow['state']): Array<Record<string, unknown>> => nodeBlobs.filter((b) => b.state === state).map((b) => ({
        url: byIdx.get(b.idx)?.url ?? '', task_id: b.taskId, hostname: peers.find((p) => p.peerId === b.hostId)?.hostname ?? b.hostId, ip: '',
        ...(state === 'FAILURE' ? { description: b.error ?? '' } : {})
      }))
      const peerCount = (s: string): number => peers.filter((p) => p.state === s).length
      return {
        id: job.id,
        type: job.type,
        state: openApi ? openApiState(job.state) : job.state,
        args: redactedArgs(job),
        error: job.error === null ? null : { code: job.errorCode, message: job.error },
        created_at: iso(job.createdAt),
        updated_at: iso(job.updatedAt),
        started_at: iso(job.startedAt),
        finished_at: iso(job.finishedAt),
        progress: {
          blobs: blobs.length, succeeded: count('SUCCESS'), failed: count('FAILURE'), running: count('RUNNING'), pending: count('PENDING'), skipped: count('SKIPPED'),
          bytes: views.reduce((n, v) => n + (v.bytes as number), 0),
          total_bytes: blobs.every((b) => b.size >= 0) ? blobs.reduce((n, b) => n + b.size, 0) : -1,
          // Peer scopes: the daemons chosen so far (none until the seed holds the blobs).
          nodes: {
            total: peers.length, succeeded: peerCount('SUCCESS'), failed: peerCount('FAILURE'), running: peerCount('RUNNING'),
            pending: peerCount('PENDING'), skipped: peerCount('SKIPPED')
          }
        },
        // Per node: the seed first, then with a peer scope every target daemon.
        nodes: [{ node: 'seed', ...seedNode, state: nodeState(blobs, false), blobs: views }, ...peers],
        // Dragonfly's result shape, which Harbor renders.
        result: {
          job_states: [{
            state: openApiState(job.state),
            error: job.error ?? '',
            ttl: job.args.ttlMs,
            results: [{
              scheduler_cluster_id: 1,
              success_tasks: finished ? [...blobs.filter((b) => b.state === 'SUCCESS').map((b) => ({ url: b.url, task_id: b.taskId, ...host })), ...peerTasks('SUCCESS')] : [],
              failure_tasks: [...blobs.filter((b) => b.state === 'FAILURE').map((b) => ({ url: b.url, task_id: b.taskId, ...host, description: b.error ?? '' })), ...peerTasks('FAILURE')]
            }]
          }]
        }
      }
    }

    const jobId = (raw: string | undefined): number => {
      const id = JOB_ID.test(raw ?? '') ? Number(raw) : NaN
      if (!Number.isSafeInteger(id)) throw new NaiadError('SN_ERR_BAD_REQUEST', `bad job id "${String(raw).slice(0, 40)}": expected a positive integer`)
      return id
    }
    const mustGet = (id: number): JobRow => {
      const job = store.get(id)
      if (job === undefined) throw new NaiadError('SN_ERR_JOB_NOT_FOUND', `no preheat job ${id}`)
      return job
    }

    const create = (body: unknown, openApi: boolean): { status: number; body: object } => {
      const args = parseJobRequest(body, {
        insecureRegistries: settings.insecureRegistries, defaultParallelism: settings.parallelism, defaultTtlMs: settings.ttlAfterFinishedMs, peerScopes: control !== undefined
      })
      if (runner === undefined) throw new NaiadError('SN_ERR_BAD_REQUEST', 'this supernode runs without a seed (--no-seed): there is nowhere to preheat to')
      if (policy !== undefined) {
        for (const u of args.urls ?? []) policy.checkUrl(u)
      }
      const job = store.create('preheat', args, Date.now())
      ctx.logger.info({ job: job.id, type: args.type, url: args.url, urls: args.urls?.length, scope: args.scope, labels: args.labels }, 'preheat job created')
      runner.start(job, splitSecrets(args).secrets)
      return { status: openApi ? 200 : 201, body: jobView(store.get(job.id)!, openApi) }
    }

    const cancel = async (id: number, openApi: boolean): Promise<{ status: number; body: object }> => {
      const job = mustGet(id)
      if (job.state === 'PENDING' || job.state === 'RUNNING') {
        await runner?.stop(id, 'canceled')
        return { status: 200, body: jobView(mustGet(id), openApi) }
      }
      // A finished job has nothing to stop: DELETE removes its record.
      store.delete(id)
      runner?.forget(id)
      return { status: 200, body: { id, deleted: true } }
    }

    for (const [prefix, openApi] of [['/api/v1', false], ['/oapi/v1', true]] as const) {
      ctx.route('POST', `${prefix}/jobs`, (req) => create(req.body, openApi))
      ctx.route('GET', `${prefix}/jobs`, () => ({ body: store.list().map((j) => jobView(j, openApi)) }))
      ctx.route('GET', `${prefix}/jobs/:id`, (req) => ({ body: jobView(mustGet(jobId(req.params.id)), openApi) }))
      ctx.route('DELETE', `${prefix}/jobs/:id`, (req) => cancel(jobId(req.params.id), openApi))
    }
    ctx.route('GET', '/healthy', () => ({ body: { status: 'ok' } }))

    // Deadlines and time-to-live. Deadlines count from creation, across restarts.
    ctx.every(settings.checkIntervalMs, async () => {
      const now = Date.now()
      for (const job of store.unfinished()) {
        if (job.args.deadlineMs > 0 && job.createdAt + job.args.deadlineMs <= now && runner?.isActive(job.id) === true) {
          ctx.logger.warn({ job: job.id }, 'preheat job passed its deadline')
          await runner.stop(job.id, 'deadline')
        }
      }
      for (const id of store.expired(now)) {
        store.delete(id)
        runner?.forget(id)
        ctx.logger.info({ job: id }, 'finished preheat job expired')
      }
    })

    // Jobs unfinished at the last shutdown resume: blobs already in the seed's cache are instant.
    if (runner !== undefined) {
      for (const job of store.unfinished()) {
        ctx.logger.info({ job: job.id, state: job.state }, 'resuming preheat job')
        runner.start(job)
      }
      ctx.onClose(() => runner.close())
    }
  }
}
