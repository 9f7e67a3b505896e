// Chunk bytes through the local dfdaemon, so that lazy reads are P2P.
//
// The blob's address space is cut into aligned windows (1 MiB by default). For each window a
// read touches, the daemon is asked to download exactly that window
// (POST /api/v1/downloads {url, headers, range: "START-END"}); every node reading the same
// chunks therefore asks for the same ranges, which share one task ID across the swarm, so a
// window fetched once from the registry is served by peers everywhere else. The bytes the
// read needs are then taken from the daemon's verified copy
// (GET /api/v1/tasks/:id/content with a Range header).
//
// Background prefetch asks with `priority: "prefetch"`, so the daemon's QoS (when enabled)
// serves it after on-demand reads and preheat; a read that needs a window prefetch already
// asked for asks again as on-demand, and the daemon raises the running task's class.

import { LocalApiClient, NaiadError, type BlobRef, type DownloadEvent } from '@naiad/proto/contracts'

import type { RegistryClient } from '@naiad/oci'
import type { BlobSource } from './blob-source.ts'
import type { FetchPriority } from './fetch-queue.ts'

export interface DaemonSourceOptions {
  /** The daemon's local API, e.g. http://127.0.0.1:65003. */
  daemonUrl: string
  client: RegistryClient
  repository: string
  /** Window size in bytes; a power of two. */
  windowBytes: number
  /** How long to leave the daemon alone after it refused a connection. */
  restMs?: number
  /** Connect and header timeout towards the daemon. */
  timeoutMs?: number
}

export interface DaemonSourceStats {
  /** Windows the daemon was asked for (each a task in the swarm). */
  windows: number
  /** Bytes of those windows: what the swarm moved to this node. */
  windowBytes: number
  /** Times the daemon could not be reached or answered an error. */
  failures: number
}

export class DaemonSource implements BlobSource {
  readonly name = 'daemon' as const
  readonly stats: DaemonSourceStats = { windows: 0, windowBytes: 0, failures: 0 }
  private readonly daemonUrl: URL
  private readonly client: RegistryClient
  private readonly repository: string
  private readonly windowBytes: number
  private readonly restMs: number
  private readonly api: LocalApiClient
  /** Task ID of each window the daemon holds, by `digest:index`. */
  private readonly tasks = new Map<string, string>()
  /** Window downloads in flight, shared by every read that needs them. */
  private readonly pending = new Map<string, Promise<string>>()
  private restUntil = 0

  constructor(options: DaemonSourceOptions) {
    this.daemonUrl = new URL(options.daemonUrl)
    this.client = options.client
    this.repository = options.repository
    this.windowBytes = options.windowBytes
    this.restMs = options.restMs ?? 5_000
    const timeout = options.timeoutMs ?? 10_000
    this.api = new LocalApiClient({ url: this.daemonUrl.origin, connectTimeoutMs: timeout, headersTimeoutMs: timeout, contentIdleTimeoutMs: timeout })
  }

  available(): boolean {
    return Date.now() >= this.restUntil
  }

  async close(): Promise<void> {
    await this.api.close()
  }

  async read(blob: BlobRef, start: number, end: number, signal: AbortSignal, priority: FetchPriority = 'on-demand'): Promise<Buffer> {
    const first = Math.floor(start / this.windowBytes)
    const last = Math.floor(end / this.windowBytes)
    const parts: Promise<Buffer>[] = []
    for (let w = first; w <= last; w++) {
      const ws = w * this.windowBytes
      parts.push(this.readWindow(blob, w, Math.max(start, ws) - ws, Math.min(end, ws + this.windowBytes - 1) - ws, signal, priority))
    }
    const out = Buffer.concat(await Promise.all(parts))
    if (out.length !== end - start + 1) {
      throw new NaiadError('NFS_ERR_FETCH', `daemon returned ${out.length} bytes for ${blob.digest} ${start}-${end}`)
    }
    return out
  }

  /** Bytes `from`..`to` (relative to the window) of window `w`. */
  private async readWindow(blob: BlobRef, w: number, from: number, to: number, signal: AbortSignal, priority: FetchPriority): Promise<Buffer> {
    const key = `${blob.digest}:${w}`
    for (let tries = 0; ; tries++) {
      const taskId = this.tasks.get(key) ?? await this.download(blob, w, key, signal, priority)
      const got = await this.content(taskId, from, to, signal)
      if (got !== undefined) return got
      // The daemon evicted the window since: download it again, once.
      this.tasks.delete(key)
      if (tries > 0) throw new NaiadError('NFS_ERR_FETCH', `daemon lost task ${taskId} twice`)
    }
  }

  private download(blob: BlobRef, w: number, key: string, signal: AbortSignal, priority: FetchPriority): Promise<string> {
    // Pending per class: a read does not wait behind a prefetch request of the same window.
    const pendingKey = `${key}:${priority}`
    let p = this.pending.get(pendingKey)
    if (p === undefined) {
      p = this.startDownload(blob, w, signal, priority).then((taskId) => {
        this.tasks.set(key, taskId)
        return taskId
      }).finally(() => this.pending.delete(pendingKey))
      this.pending.set(pendingKey, p)
    }
    return p
  }

  private async startDownload(blob: BlobRef, w: number, signal: AbortSignal, priority: FetchPriority): Promise<string> {
    const start = w * this.windowBytes
    const end = Math.min(blob.size, start + this.windowBytes) - 1
    const headers: Record<string, string> = {}
    const auth = await this.client.authorizationFor(this.repository, signal)
    if (auth !== undefined) headers.authorization = auth
    let result: DownloadEvent | undefined
    try {
      for await (const e of this.api.download({ url: this.client.blobUrl(this.repository, blob.digest), headers, range: `${start}-${end}`, priority }, { signal })) {
        if (e.event === 'started') this.stats.windows++
        if (e.event === 'done' || e.event === 'error') result = e
      }
    } catch (err) {
      throw this.failed(err, signal, `dfdaemon download of ${blob.digest} ${start}-${end}`)
    }
    if (result?.event === 'done') {
      this.stats.windowBytes += end - start + 1
      return result.taskId
    }
    this.stats.failures++
    throw new NaiadError('NFS_ERR_FETCH', `dfdaemon could not download ${blob.digest} ${start}-${end}: ${result?.event === 'error' ? `${result.code} ${result.message}` : 'no result'}`)
  }

  /** The bytes, or undefined when the daemon no longer holds the task. */
  private async content(taskId: string, from: number, to: number, signal: AbortSignal): Promise<Buffer | undefined> {
    // The daemon serves a private blob's bytes only to a request the registry would accept.
    const auth = await this.client.authorizationFor(this.repository, signal)
    let data: Buffer
    let status: number
    try {
      const res = await this.api.content(taskId, { signal, range: { start: from, end: to }, headers: auth === undefined ? {} : { authorization: auth } })
      status = res.status
      const parts: Buffer[] = []
      for await (const chunk of res.body) parts.push(chunk)
      data = Buffer.concat(parts)
    } catch (err) {
      if (err instanceof NaiadError && err.code === 'DFD_ERR_TASK_NOT_FOUND') return undefined
      throw this.failed(err, signal, `dfdaemon content of task ${taskId}`)
    }
    // A daemon that ignored the Range header sent the whole window.
    if (status === 200 && data.length > to - from + 1) data = data.subarray(from, to + 1)
    return data
  }

  /** A failed exchange with the daemon: counted, and a daemon that cannot be reached is left alone for a while. */
  private failed(err: unknown, signal: AbortSignal, what: string): NaiadError {
    this.stats.failures++
    const e = err instanceof NaiadError ? err : new NaiadError('PROTO_ERR_DIAL', String(err), { cause: err })
    if (e.code === 'PROTO_ERR_DIAL' && !signal.aborted) this.restUntil = Date.now() + this.restMs
    return new NaiadError('NFS_ERR_FETCH', `${what}: ${e.code === 'PROTO_ERR_DIAL' ? `cannot reach dfdaemon at ${this.daemonUrl.origin}: ` : ''}${e.message}`, { cause: err })
  }
}
