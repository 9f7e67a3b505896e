// Runs preheat jobs: resolves an image to its blobs (once; the list is stored), then fetches
// the blobs through the seed, `parallelism` at a time. A job stops starting blobs when it is
// canceled, passes its deadline or the supernode shuts down; on shutdown nothing is marked,
// so the job resumes at the next start and finds finished blobs in the seed's cache.

import type { Logger } from 'pino'
import type { DownloadProgress, DownloadRequest, DownloadResult } from '@naiad/dfdaemon'
import { toNaiadError } from '@naiad/proto'

import { blobUrl, parseImageRef } from './image-ref.ts'
import type { BlobRow, JobRow, JobStore } from './job-store.ts'
import { resolveImage } from './manifest-resolver.ts'

/** The part of the seed a preheat needs. */
export interface SeedDownloader {
  download(req: DownloadRequest, options: { signal?: AbortSignal; onProgress?: (p: DownloadProgress) => void }): Promise<DownloadResult>
}

export type StopReason = 'canceled' | 'deadline' | 'shutdown'

interface ActiveJob {
  controller: AbortController
  /** Bytes so far per blob index, for blobs in flight. */
  progress: Map<number, number>
  done: Promise<void>
}

export interface RunnerComponents {
  store: JobStore
  seed: SeedDownloader
  logger: Logger
  insecureRegistries: readonly string[]
  now?: () => number
}

function basicAuth(username: string | undefined, password: string | undefined): string | undefined {
  if (username === undefined || username === '') return undefined
  return `Basic ${Buffer.from(`${username}:${password ?? ''}`).toString('base64')}`
}

export class PreheatRunner {
  private readonly c: RunnerComponents
  private readonly active = new Map<number, ActiveJob>()
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

  /** Bytes fetched so far for a blob in flight, if it is in flight. */
  inFlight(jobId: number, idx: number): number | undefined {
    return this.active.get(jobId)?.progress.get(idx)
  }

  start(job: JobRow): void {
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

  async close(): Promise<void> {
    this.closed = true
    await Promise.all([...this.active.keys()].map((id) => this.stop(id, 'shutdown')))
  }

  private async run(job: JobRow, entry: ActiveJob): Promise<void> {
    const { store, logger } = this.c
    const signal = entry.controller.signal
    store.update(job.id, { state: 'RUNNING', startedAt: job.startedAt ?? this.now() }, this.now())
    store.resetRunningBlobs(job.id)
    const args = job.args
    const headers: Record<string, string> = {}
    for (const [k, v] of Object.entries(args.headers)) headers[k.toLowerCase()] = v
    const basic = basicAuth(args.username, args.password)
    if (basic !== undefined && headers.authorization === undefined) headers.authorization = basic

    let authorization: string | undefined = job.authorization ?? headers.authorization
    if (!job.resolved) {
      try {
        if (args.type === 'image') {
          const ref = parseImageRef(args.url!, this.c.insecureRegistries)
          const r = await resolveImage(ref, { headers, platform: args.platform, signal })
          authorization = r.authorization
          store.addBlobs(job.id, r.blobs.map((b) => ({ kind: b.kind, url: blobUrl(ref, b.digest), digest: b.digest, size: b.size })))
        } else {
          store.addBlobs(job.id, (args.urls ?? []).map((url) => ({ kind: 'file' as const, url, digest: null, size: -1 })))
        }
        store.update(job.id, { resolved: true, authorization: authorization ?? null }, this.now())
      } catch (err) {
        if (signal.aborted) return this.finishStopped(job.id, signal.reason as StopReason)
        const e = toNaiadError(err, 'NFS_ERR_REGISTRY')
        logger.warn({ job: job.id, code: e.code, err: e.message }, 'preheat could not resolve its image')
        store.update(job.id, { state: 'FAILURE', errorCode: e.code, error: e.message, finishedAt: this.now() }, this.now())
        return
      }
    }

    const blobHeaders = { ...headers, ...(authorization === undefined ? {} : { authorization }) }
    const queue = store.blobs(job.id).filter((b) => b.state !== 'SUCCESS')
    const worker = async (): Promise<void> => {
      for (let b = queue.shift(); b !== undefined && !signal.aborted; b = queue.shift()) await this.fetchBlob(job.id, b, blobHeaders, entry)
    }
    await Promise.all(Array.from({ length: Math.max(1, Math.min(args.parallelism, queue.length)) }, worker))

    if (signal.aborted) return this.finishStopped(job.id, signal.reason as StopReason)
    const blobs = store.blobs(job.id)
    const failed = blobs.filter((b) => b.state === 'FAILURE')
    const now = this.now()
    if (failed.length === 0) {
      store.update(job.id, { state: 'SUCCESS', finishedAt: now }, now)
      logger.info({ job: job.id, blobs: blobs.length, cached: blobs.filter((b) => b.cached).length }, 'preheat job succeeded')
    } else {
      const first = failed[0]
      store.update(job.id, {
        state: 'FAILURE', errorCode: first.errorCode, finishedAt: now,
        error: `${failed.length} of ${blobs.length} blobs failed; first: ${first.url}: ${first.error ?? 'unknown error'}`
      }, now)
      logger.warn({ job: job.id, failed: failed.length, blobs: blobs.length }, 'preheat job failed')
    }
  }

  private async fetchBlob(jobId: number, b: BlobRow, headers: Record<string, string>, entry: ActiveJob): Promise<void> {
    const { store } = this.c
    const signal = entry.controller.signal
    store.updateBlob(jobId, b.idx, { state: 'RUNNING', startedAt: this.now(), errorCode: null, error: null })
    entry.progress.set(b.idx, 0)
    try {
      const r = await this.c.seed.download(
        { url: b.url, headers, digest: b.digest ?? undefined },
        { signal, onProgress: (p) => entry.progress.set(b.idx, p.completedBytes) }
      )
      store.updateBlob(jobId, b.idx, { state: 'SUCCESS', bytes: r.contentLength, size: r.contentLength, cached: r.cached, taskId: r.taskId, finishedAt: this.now() })
    } catch (err) {
      // A stopped job leaves the blob to the stop handling: PENDING again, to resume or skip.
      if (signal.aborted) {
        if (signal.reason !== 'shutdown') store.updateBlob(jobId, b.idx, { state: 'PENDING', startedAt: null })
        return
      }
      const e = toNaiadError(err, 'DFD_ERR_TASK_FAILED')
      store.updateBlob(jobId, b.idx, { state: 'FAILURE', errorCode: e.code, error: e.message, finishedAt: this.now() })
    } finally {
      entry.progress.delete(b.idx)
    }
  }

  private finishStopped(jobId: number, reason: StopReason): void {
    if (reason === 'shutdown') return
    const now = this.now()
    const { store } = this.c
    for (const b of store.blobs(jobId)) if (b.state === 'PENDING') store.updateBlob(jobId, b.idx, { state: 'SKIPPED' })
    if (reason === 'canceled') {
      store.update(jobId, { state: 'CANCELED', error: 'canceled by DELETE before all blobs were preheated', finishedAt: now }, now)
    } else {
      store.update(jobId, { state: 'FAILURE', errorCode: 'DFD_ERR_TIMEOUT', error: 'the job passed its deadline before all blobs were preheated', finishedAt: now }, now)
    }
  }
}
