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
  { key: 'lease', type: 'duration', min: 1000, default: '15s', help: 'with several supernodes on one database: how long a job stays with a supernode that stopped renewing it (at least 3 checkIntervals)' },
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
  async setup(ctx) {
    const settings = ctx.settings
    const { seed, control, clusterSeeds } = ctx
    const store = new JobStore(ctx.database)
    // Each job runs on one supernode, which holds its lease in the shared database and renews
    // it every check; when that supernode dies, another takes the job once the lease runs out.
    const self = ctx.fabric.peerId.toString()
    const leaseMs = Math.max(settings.lease, 3 * settings.checkInterval)
    // Manifest reads obey the supernode's source policy; preheat's insecure registries count as allowed.
    const policy = ctx.sourcePolicy.with(settings.insecureRegistries)
    const seedNode = { hostname: 'supernode-seed', peerId: ctx.fabric.peerId.toString() }
    const runner = seed === undefined
      ? undefined
      : new PreheatRunner({
        store, seed, clusterSeeds, logger: ctx.logger, insecureRegistries: settings.insecureRegistries,
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

    const jobView = async (job: JobRow, openApi: boolean): Promise<Record<string, unknown>> => {
      const blobs = await store.blobs(job.id)
      const count = (s: BlobRow['state']): number => blobs.filter((b) => b.state === s).length
      const views = blobs.map((b) => blobView(job, b))
      const finished = job.state === 'SUCCESS' || job.state === 'FAILURE' || job.state === 'CANCELED'
      const host = { hostname: seedNode.hostname, ip: '' }
      const byIdx = new Map(blobs.map((b) => [b.idx, b]))
      const nodeBlobs = await store.nodeBlobs(job.id)
      const peers = (await store.nodes(job.id)).map((n) => {
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
    const mustGet = async (id: number): Promise<JobRow> => {
      const job = await store.get(id)
      if (job === undefined) throw new NaiadError('SN_ERR_JOB_NOT_FOUND', `no preheat job ${id}`)
      return job
    }

    const create = async (body: unknown, openApi: boolean): Promise<{ status: number; body: object }> => {
      const args = parseJobRequest(body, {
        insecureRegistries: settings.insecureRegistries, defaultParallelism: settings.parallelism, defaultTtlMs: settings.ttlAfterFinished, peerScopes: true
      })
      if (runner === undefined) throw new NaiadError('SN_ERR_BAD_REQUEST', 'this supernode runs without a seed (--no-seed): there is nowhere to preheat to')
      if (policy !== undefined) {
        for (const u of args.urls ?? []) policy.checkUrl(u)
      }
      const job = await store.create('preheat', args, Date.now(), { owner: self, ms: leaseMs })
      ctx.logger.info({ job: job.id, type: args.type, url: args.url, urls: args.urls?.length, scope: args.scope, labels: args.labels }, 'preheat job created')
      runner.start(job, splitSecrets(args).secrets)
      return { status: openApi ? 200 : 201, body: await jobView((await store.get(job.id))!, openApi) }
    }

    const cancel = async (id: number, openApi: boolean): Promise<{ status: number; body: object }> => {
      const job = await mustGet(id)
      if (job.state === 'PENDING' || job.state === 'RUNNING') {
        // Another supernode's job is marked here; that one stops it at its next lease renewal.
        if (await runner?.stop(id, 'canceled') !== true) await runner?.finishStopped(id, 'canceled')
        return { status: 200, body: await jobView(await mustGet(id), openApi) }
      }
      // A finished job has nothing to stop: DELETE removes its record.
      await store.delete(id)
      runner?.forget(id)
      return { status: 200, body: { id, deleted: true } }
    }

    for (const [prefix, openApi] of [['/api/v1', false], ['/oapi/v1', true]] as const) {
      ctx.route('POST', `${prefix}/jobs`, (req) => create(req.body, openApi))
      ctx.route('GET', `${prefix}/jobs`, async () => ({ body: await Promise.all((await store.list()).map((j) => jobView(j, openApi))) }))
      ctx.route('GET', `${prefix}/jobs/:id`, async (req) => ({ body: await jobView(await mustGet(jobId(req.params.id)), openApi) }))
      ctx.route('DELETE', `${prefix}/jobs/:id`, (req) => cancel(jobId(req.params.id), openApi))
    }
    ctx.route('GET', '/healthy', () => ({ body: { status: 'ok' } }))

    /** Runs an unfinished job here if no live supernode holds it (at start-up: the jobs this one ran before it stopped). */
    const adopt = async (job: JobRow): Promise<void> => {
      if (runner === undefined || runner.isActive(job.id) || !await store.claim(job.id, self, leaseMs, Date.now())) return
      ctx.logger.info({ job: job.id, state: job.state }, 'resuming preheat job')
      runner.start(job)
    }

    // Leases, deadlines and time-to-live. Deadlines count from creation, across restarts.
    ctx.every(settings.checkInterval, async () => {
      const now = Date.now()
      if (runner !== undefined) {
        const held = await store.renew(self, runner.activeIds(), leaseMs, now)
        // Canceled or finished through another supernode: stop without writing over what it recorded.
        for (const id of runner.activeIds()) if (!held.has(id)) await runner.stop(id, 'shutdown')
      }
      for (const job of await store.unfinished()) {
        if (job.args.deadlineMs > 0 && job.createdAt + job.args.deadlineMs <= now && runner?.isActive(job.id) === true) {
          ctx.logger.warn({ job: job.id }, 'preheat job passed its deadline')
          await runner.stop(job.id, 'deadline')
        }
      }
      for (const id of await store.expired(now)) {
        await store.delete(id)
        runner?.forget(id)
        ctx.logger.info({ job: id }, 'finished preheat job expired')
      }
      for (const job of await store.unfinished()) await adopt(job)
    })

    // Jobs unfinished at the last shutdown resume: blobs already in the seed's cache are instant.
    if (runner !== undefined) {
      for (const job of await store.unfinished()) await adopt(job)
      ctx.onClose(async () => {
        await runner.close()
        await store.release(self)
      })
    }
  }
})
