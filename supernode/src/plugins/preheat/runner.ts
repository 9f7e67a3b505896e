// Runs preheat jobs: resolves an image to its blobs (once; the list is stored), then fetches
// the blobs through the seed, `parallelism` at a time. The seed of a task is its owner's: with
// several supernodes, a blob whose task another supernode owns is fetched by that one's seed
// (clusterSeeds), where daemons pulling it will look; only when the owner cannot be reached
// does this supernode's seed fetch it (correct, only less useful). With a peer scope (`all_peers`, a label
// selector) the target daemons are then chosen (once; stored) and each gets a control
// `download` per blob, `parallelism` blobs at a time per daemon, `nodeParallelism` daemons at
// a time; they fetch from the seed and from each other. A job stops starting blobs when it is
// canceled, passes its deadline or the supernode shuts down; on shutdown nothing is marked,
// so the job resumes at the next start and finds finished blobs in the seed's and the
// daemons' caches.

import type { Logger } from 'pino'
import type { buildConnector } from 'undici'
import type { DownloadProgress, DownloadRequest, DownloadResult } from '@naiad/peer'
import { NaiadError, taskIdOf, toNaiadError } from '@naiad/proto'

import { blobUrl, parseImageRef } from './image-ref.ts'
import { isPeerScope } from './job-request.ts'
import type { SeedDownloader, SupernodePluginContext } from '../../plugin-api/context.ts'
import type { BlobRow, JobRow, JobSecrets, JobStore, NodeBlobRow, NodeRow } from './job-store.ts'
import { resolveImage } from './manifest-resolver.ts'

/** The part of the supernode's control client a preheat needs. */
export type PeerControl = SupernodePluginContext['control']

export type StopReason = 'canceled' | 'deadline' | 'shutdown'

/** Codes after which a daemon is not sent its remaining blobs: it cannot be reached or will not listen. */
const NODE_FATAL = new Set(['PROTO_ERR_DIAL', 'SN_ERR_HOST_NOT_FOUND', 'DFD_ERR_CONTROL_FORBIDDEN', 'DFD_ERR_CONTROL_UNKNOWN'])

/**
 * Codes of a seed fetch sent to a task's owner that say the owner was not reached, refused,
 * went silent or stopped (not that the fetch itself failed): the local seed fetches instead.
 */
const OWNER_UNREACHABLE = new Set(['PROTO_ERR_DIAL', 'PROTO_ERR_TIMEOUT', 'PROTO_ERR_FORBIDDEN', 'PROTO_ERR_ABORTED', 'PROTO_ERR_DECODE'])

interface ActiveJob {
  controller: AbortController
  /** Bytes so far per blob index, for blobs in flight. */
  progress: Map<number, number>
  /** Why the job failed before its blobs could (e.g. no daemon matched its scope). */
  failure?: NaiadError
  done: Promise<void>
}

export interface RunnerComponents {
  store: JobStore
  seed: SeedDownloader
  /** The cluster's seeds: a blob whose task another supernode owns is fetched by that one's seed. */
  clusterSeeds?: SupernodePluginContext['clusterSeeds']
  logger: Logger
  insecureRegistries: readonly string[]
  /** Needed for peer scopes. */
  control?: PeerControl
  /** Daemons preheated at once by one job. */
  nodeParallelism?: number
  /** How long one daemon may take for one blob when the job has no deadline. */
  nodeTimeoutMs?: number
  /** How registry connections are made (the supernode's source policy). */
  connect?: buildConnector.connector
  now?: () => number
}

function basicAuth(username: string | undefined, password: string | undefined): string | undefined {
  if (username === undefined || username === '') return undefined
  return `Basic ${Buffer.from(`${username}:${password ?? ''}`).toString('base64')}`
}

export class PreheatRunner {
  private readonly c: RunnerComponents
  private readonly active = new Map<number, ActiveJob>()
  /** Each job's credentials and the token resolved with them: memory only, never the database. */
  private readonly secrets = new Map<number, JobSecrets & { authorization?: string }>()
  private closed = false

  constructor(components: RunnerComponents) {
    this.c = components
  }

  private now(): number {
    return (this.c.now ?? Date.now)()
  }

  isActive(id: number): boolean {
    return this.active.has(id)
  }

  /** The jobs running here. */
  activeIds(): number[] {
    return [...this.active.keys()]
  }

  /** Bytes fetched so far for a blob in flight, if it is in flight. */
  inFlight(jobId: number, idx: number): number | undefined {
    return this.active.get(jobId)?.progress.get(idx)
  }

  /** Starts a job; `secrets` are its credentials, kept in memory until the job is deleted. */
  start(job: JobRow, secrets?: JobSecrets): void {
    if (secrets !== undefined) this.secrets.set(job.id, { ...secrets })
    if (this.closed || this.active.has(job.id)) return
    const controller = new AbortController()
    const entry: ActiveJob = { controller, progress: new Map(), done: Promise.resolve() }
    this.active.set(job.id, entry)
    entry.done = this.run(job, entry)
      .catch((err: unknown) => this.c.logger.error({ job: job.id, err: (err as Error).message }, 'preheat job crashed'))
      .finally(() => this.active.delete(job.id))
  }

  /** Stops a running job; resolves once it has settled. */
  async stop(id: number, reason: StopReason): Promise<boolean> {
    const entry = this.active.get(id)
    if (entry === undefined) return false
    entry.controller.abort(reason)
    await entry.done
    return true
  }

  /** Forgets a deleted job's credentials. */
  forget(id: number): void {
    this.secrets.delete(id)
  }

  async close(): Promise<void> {
    this.closed = true
    await Promise.all([...this.active.keys()].map((id) => this.stop(id, 'shutdown')))
  }

  private async run(job: JobRow, entry: ActiveJob): Promise<void> {
    const { store, logger } = this.c
    const signal = entry.controller.signal
    await store.update(job.id, { state: 'RUNNING', startedAt: job.startedAt ?? this.now() }, this.now())
    await store.resetRunningBlobs(job.id)
    const args = job.args
    const secrets = this.secrets.get(job.id)
    if (args.credentials === true && secrets === undefined) {
      // Credentials are never stored: a job that needed them cannot resume after a restart.
      const error = 'the job\'s credentials are kept in memory only and the supernode restarted since it was created; create the job again'
      await store.update(job.id, { state: 'FAILURE', errorCode: 'SN_ERR_UNAUTHORIZED', error, finishedAt: this.now() }, this.now())
      logger.warn({ job: job.id }, 'preheat job lost its credentials in a restart')
      return
    }
    const headers: Record<string, string> = {}
    for (const [k, v] of Object.entries({ ...args.headers, ...secrets?.headers })) headers[k.toLowerCase()] = v
    const basic = basicAuth(secrets?.username, secrets?.password)
    if (basic !== undefined && headers.authorization === undefined) headers.authorization = basic

    let authorization: string | undefined = secrets?.authorization ?? headers.authorization
    if (!job.resolved || (args.type === 'image' && authorization === undefined && args.credentials === true)) {
      try {
        if (args.type === 'image') {
          const ref = parseImageRef(args.url!, this.c.insecureRegistries)
          const r = await resolveImage(ref, { headers, platform: args.platform, signal, connect: this.c.connect })
          authorization = r.authorization
          if (secrets !== undefined) secrets.authorization = authorization
          if (!job.resolved) await store.addBlobs(job.id, r.blobs.map((b) => ({ kind: b.kind, url: blobUrl(ref, b.digest), digest: b.digest, size: b.size })))
        } else {
          await store.addBlobs(job.id, (args.urls ?? []).map((url) => ({ kind: 'file' as const, url, digest: null, size: -1 })))
        }
        await store.update(job.id, { resolved: true }, this.now())
      } catch (err) {
        if (signal.aborted) return this.finishStopped(job.id, signal.reason as StopReason)
        const e = toNaiadError(err, 'OCI_ERR_REGISTRY')
        logger.warn({ job: job.id, code: e.code, err: e.message }, 'preheat could not resolve its image')
        await store.update(job.id, { state: 'FAILURE', errorCode: e.code, error: e.message, finishedAt: this.now() }, this.now())
        return
      }
    }

    const blobHeaders = { ...headers, ...(authorization === undefined ? {} : { authorization }) }
    const queue = (await store.blobs(job.id)).filter((b) => b.state !== 'SUCCESS')
    const worker = async (): Promise<void> => {
      for (let b = queue.shift(); b !== undefined && !signal.aborted; b = queue.shift()) await this.fetchBlob(job, b, blobHeaders, entry)
    }
    await Promise.all(Array.from({ length: Math.max(1, Math.min(args.parallelism, queue.length)) }, worker))

    if (signal.aborted) return this.finishStopped(job.id, signal.reason as StopReason)
    if (isPeerScope(args.scope)) {
      await this.distribute(job, blobHeaders, entry)
      if (signal.aborted) return this.finishStopped(job.id, signal.reason as StopReason)
    }
    await this.finish(job.id, entry)
  }

  private async finish(jobId: number, entry: ActiveJob): Promise<void> {
    const { store, logger } = this.c
    const blobs = await store.blobs(jobId)
    const failed = blobs.filter((b) => b.state === 'FAILURE')
    const nodes = await store.nodes(jobId)
    const nodeBlobs = await store.nodeBlobs(jobId)
    const failedNodes = nodes.filter((n) => n.error !== null || nodeBlobs.some((b) => b.hostId === n.hostId && b.state === 'FAILURE'))
    const now = this.now()
    if (entry.failure !== undefined) {
      await store.update(jobId, { state: 'FAILURE', errorCode: entry.failure.code, error: entry.failure.message, finishedAt: now }, now)
      logger.warn({ job: jobId, code: entry.failure.code, err: entry.failure.message }, 'preheat job failed')
    } else if (failed.length > 0) {
      const first = failed[0]
      await store.update(jobId, {
        state: 'FAILURE', errorCode: first.errorCode, finishedAt: now,
        error: `${failed.length} of ${blobs.length} blobs failed; first: ${first.url}: ${first.error ?? 'unknown error'}`
      }, now)
      logger.warn({ job: jobId, failed: failed.length, blobs: blobs.length }, 'preheat job failed')
    } else if (failedNodes.length > 0) {
      const node = failedNodes[0]
      const blob = nodeBlobs.find((b) => b.hostId === node.hostId && b.state === 'FAILURE')
      const url = blob === undefined ? undefined : blobs.find((b) => b.idx === blob.idx)?.url
      await store.update(jobId, {
        state: 'FAILURE', errorCode: node.errorCode ?? blob?.errorCode ?? null, finishedAt: now,
        error: `${failedNodes.length} of ${nodes.length} nodes failed; first: ${node.hostname || node.hostId}: ${node.error ?? `${url ?? ''}: ${blob?.error ?? 'unknown error'}`}`
      }, now)
      logger.warn({ job: jobId, failedNodes: failedNodes.length, nodes: nodes.length }, 'preheat job failed on some nodes')
    } else {
      await store.update(jobId, { state: 'SUCCESS', finishedAt: now }, now)
      logger.info({ job: jobId, blobs: blobs.length, cached: blobs.filter((b) => b.cached).length, nodes: nodes.length }, 'preheat job succeeded')
    }
  }

  /** Peer scopes: choose the daemons (once), then have each fetch every blob the seed holds. */
  private async distribute(job: JobRow, headers: Record<string, string>, entry: ActiveJob): Promise<void> {
    const { store, logger } = this.c
    const control = this.c.control
    if (control === undefined) {
      entry.failure = new NaiadError('SN_ERR_SCOPE_UNSUPPORTED', `scope "${job.args.scope}" needs the control service, which this supernode does not offer`)
      return
    }
    const blobs = await store.blobs(job.id)
    const ready = blobs.filter((b) => b.state === 'SUCCESS').map((b) => b.idx)
    let nodes = await store.nodes(job.id)
    if (nodes.length === 0) {
      // Nothing reached the seed (the job fails on the seed's errors): no daemon to bother.
      if (ready.length === 0) return
      const targets = control.hosts(job.args.scope === 'labels' ? job.args.labels ?? {} : {})
      if (targets.length === 0) {
        const which = job.args.scope === 'labels' ? `carries the labels ${JSON.stringify(job.args.labels)}` : 'is attached to the supernode'
        entry.failure = new NaiadError('SN_ERR_HOST_NOT_FOUND', `no live daemon ${which}; the seed holds the blobs`)
        return
      }
      await store.addNodes(job.id, targets.map((t) => ({ hostId: t.id, hostname: t.hostname, labels: t.labels })), ready)
      nodes = await store.nodes(job.id)
      logger.info({ job: job.id, nodes: nodes.length }, 'preheating daemons')
    }
    await store.resetRunningNodeBlobs(job.id)
    const byIdx = new Map(blobs.map((b) => [b.idx, b]))
    const queue = nodes.filter((n) => n.error === null)
    const worker = async (): Promise<void> => {
      for (let n = queue.shift(); n !== undefined && !entry.controller.signal.aborted; n = queue.shift()) await this.preheatNode(job, n, byIdx, headers, entry)
    }
    await Promise.all(Array.from({ length: Math.max(1, Math.min(this.c.nodeParallelism ?? 16, queue.length)) }, worker))
  }

  private async preheatNode(job: JobRow, node: NodeRow, blobs: Map<number, BlobRow>, headers: Record<string, string>, entry: ActiveJob): Promise<void> {
    const { store } = this.c
    const control = this.c.control!
    const signal = entry.controller.signal
    const queue = (await store.nodeBlobs(job.id, node.hostId)).filter((b) => b.state !== 'SUCCESS')
    let fatal: NaiadError | undefined
    const send = async (nb: NodeBlobRow): Promise<void> => {
      const blob = blobs.get(nb.idx)
      if (blob === undefined) return
      if (fatal !== undefined) {
        await store.updateNodeBlob(job.id, node.hostId, nb.idx, { state: 'FAILURE', errorCode: fatal.code, error: `not sent: ${fatal.message}`, finishedAt: this.now() })
        return
      }
      await store.updateNodeBlob(job.id, node.hostId, nb.idx, { state: 'RUNNING', startedAt: this.now(), errorCode: null, error: null })
      try {
        const r = await control.send(node.hostId, 'download', {
          url: blob.url, headers, digest: blob.digest ?? undefined, priority: 'preheat'
        }, { signal, timeoutMs: this.blobTimeoutMs(job) })
        await store.updateNodeBlob(job.id, node.hostId, nb.idx, {
          state: 'SUCCESS', bytes: r.contentLength, cached: r.cached, fromPeers: r.fromPeers, fromOrigin: r.fromOrigin, taskId: r.taskId, finishedAt: this.now()
        })
      } catch (err) {
        if (signal.aborted) {
          if (signal.reason !== 'shutdown') await store.updateNodeBlob(job.id, node.hostId, nb.idx, { state: 'PENDING', startedAt: null })
          return
        }
        const e = toNaiadError(err, 'DFD_ERR_TASK_FAILED')
        await store.updateNodeBlob(job.id, node.hostId, nb.idx, { state: 'FAILURE', errorCode: e.code, error: e.message, finishedAt: this.now() })
        if (NODE_FATAL.has(e.code) && fatal === undefined) {
          fatal = e
          await store.updateNode(job.id, node.hostId, { errorCode: e.code, error: e.message })
          this.c.logger.warn({ job: job.id, node: node.hostname || node.hostId, code: e.code, err: e.message }, 'preheat cannot reach a node; its remaining blobs are not sent')
        }
      }
    }
    const worker = async (): Promise<void> => {
      for (let b = queue.shift(); b !== undefined && !signal.aborted; b = queue.shift()) await send(b)
    }
    await Promise.all(Array.from({ length: Math.max(1, Math.min(job.args.parallelism, queue.length)) }, worker))
  }

  /** A daemon may take until the job's deadline, or nodeTimeoutMs without one. */
  private blobTimeoutMs(job: JobRow): number {
    if (job.args.deadlineMs > 0) return Math.max(1000, job.createdAt + job.args.deadlineMs - this.now())
    return this.c.nodeTimeoutMs ?? 30 * 60_000
  }

  private async fetchBlob(job: JobRow, b: BlobRow, headers: Record<string, string>, entry: ActiveJob): Promise<void> {
    const { store } = this.c
    const jobId = job.id
    const signal = entry.controller.signal
    await store.updateBlob(jobId, b.idx, { state: 'RUNNING', startedAt: this.now(), errorCode: null, error: null })
    entry.progress.set(b.idx, 0)
    try {
      const r = await this.seedDownload(job, { url: b.url, headers, digest: b.digest ?? undefined }, signal, (p) => entry.progress.set(b.idx, p.completedBytes))
      await store.updateBlob(jobId, b.idx, { state: 'SUCCESS', bytes: r.contentLength, size: r.contentLength, cached: r.cached, taskId: r.taskId, finishedAt: this.now() })
    } catch (err) {
      // A stopped job leaves the blob to the stop handling: PENDING again, to resume or skip.
      if (signal.aborted) {
        if (signal.reason !== 'shutdown') await store.updateBlob(jobId, b.idx, { state: 'PENDING', startedAt: null })
        return
      }
      const e = toNaiadError(err, 'DFD_ERR_TASK_FAILED')
      await store.updateBlob(jobId, b.idx, { state: 'FAILURE', errorCode: e.code, error: e.message, finishedAt: this.now() })
    } finally {
      entry.progress.delete(b.idx)
    }
  }

  /** Fetches through the seed of the task's owner; through this supernode's own when that one is this or cannot be reached. */
  private async seedDownload(job: JobRow, req: DownloadRequest, signal: AbortSignal, onProgress: (p: Pick<DownloadProgress, 'completedBytes'>) => void): Promise<DownloadResult> {
    const seeds = this.c.clusterSeeds
    if (seeds !== undefined) {
      const owner = seeds.ownerOf(taskIdOf({ url: req.url, digest: req.digest }))
      if (owner.id !== seeds.selfId) {
        // The owner's whole fetch is bounded as a daemon's would be; running out of that time is
        // the blob failing, not the owner being unreachable (its silence is the idle timeout).
        const timeoutMs = this.blobTimeoutMs(job)
        const overall = AbortSignal.timeout(timeoutMs)
        try {
          return await seeds.download(owner, req, { signal: AbortSignal.any([signal, overall]), timeoutMs, onProgress })
        } catch (err) {
          const e = toNaiadError(err, 'PROTO_ERR_REMOTE')
          if (signal.aborted || overall.aborted || !OWNER_UNREACHABLE.has(e.code)) throw e
          this.c.logger.warn({ job: job.id, url: req.url, owner: owner.id, code: e.code, err: e.message }, 'cannot have the task owner\'s seed fetch a blob; this supernode\'s seed fetches it instead (the owner\'s seed will fetch it again for the daemons)')
        }
      }
    }
    return this.c.seed.download(req, { signal, onProgress })
  }

  /** Records a job as stopped (its pending blobs skipped); also for a job another supernode runs, which notices at its next lease renewal. */
  async finishStopped(jobId: number, reason: StopReason): Promise<void> {
    if (reason === 'shutdown') return
    const now = this.now()
    const { store } = this.c
    for (const b of await store.blobs(jobId)) if (b.state === 'PENDING') await store.updateBlob(jobId, b.idx, { state: 'SKIPPED' })
    for (const b of await store.nodeBlobs(jobId)) if (b.state === 'PENDING') await store.updateNodeBlob(jobId, b.hostId, b.idx, { state: 'SKIPPED' })
    if (reason === 'canceled') {
      await store.update(jobId, { state: 'CANCELED', error: 'canceled by DELETE before all blobs were preheated', finishedAt: now }, now)
    } else {
      await store.update(jobId, { state: 'FAILURE', errorCode: 'DFD_ERR_TIMEOUT', error: 'the job passed its deadline before all blobs were preheated', finishedAt: now }, now)
    }
  }
}
