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

import { defineOptions, NaiadError, type OptionValues } from '@naiad/proto'

import { supernodePlugin } from '../../plugin-api/context.ts'
import { parseDurationMs, parseJobRequest } from './job-request.ts'
import { JobStore, PUBLIC_HEADERS, splitSecrets, type BlobRow, type JobRow, type JobState, type NodeBlobRow } from './job-store.ts'
import { PreheatRunner } from './runner.ts'

export const PREHEAT_SETTINGS = defineOptions([
  { key: 'insecureRegistries', type: 'list', default: [], help: "registries reached over plain HTTP, as the daemons' --insecure-registry" },
  { key: 'parallelism', type: 'int', min: 1, max: 64, default: 4, help: 'default blobs in flight per job' },
  { key: 'ttlAfterFinished', type: 'any', default: 0, parse: (v: unknown) => parseDurationMs(v, 'ttlAfterFinished', 1000), help: 'default TTL of finished jobs (a duration or seconds); 0 keeps them' },
  { key: 'checkInterval', type: 'duration', min: 1, default: '1s', help: 'how often deadlines and TTLs are checked' },
  { key: 'nodeParallelism', type: 'int', min: 1, max: 1024, default: 16, help: 'peer scopes: daemons preheated at once per job' },
  { key: 'nodeTimeout', type: 'duration', min: 1, default: '30m', help: 'peer scopes: the longest one daemon may take for one blob, for jobs without a deadline' }
])

export type PreheatSettings = OptionValues<typeof PREHEAT_SETTINGS>

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

export const preheatPlugin = supernodePlugin({
  name: 'preheat',
  version: '1.0.0',
  settings: PREHEAT_SETTINGS,
  setup(ctx) {
    const settings = ctx.settings
    const { seed, control } = ctx
    const store = new JobStore(ctx.database)
    // Manifest reads obey the supernode's source policy; preheat's insecure registries count as allowed.
    const policy = ctx.sourcePolicy.with(settings.insecureRegistries)
    const seedNode = { hostname: 'supernode-seed', peerId: ctx.fabric.peerId.toString() }
    const runner = seed === undefined
      ? undefined
      : new PreheatRunner({
        store, seed, logger: ctx.logger, insecureRegistries: settings.insecureRegistries,
        control, nodeParallelism: settings.nodeParallelism, nodeTimeoutMs: settings.nodeTimeout,
        connect: policy.connector({ timeout: 10_000 })
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
        insecureRegistries: settings.insecureRegistries, defaultParallelism: settings.parallelism, defaultTtlMs: settings.ttlAfterFinished, peerScopes: true
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
    ctx.every(settings.checkInterval, async () => {
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
})
