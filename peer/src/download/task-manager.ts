// Runs downloads: one PeerTask per task ID however many callers ask for it at once. Each
// caller gets a TaskHandle — the task's ID, its progress, the bytes that may be served so
// far, its completion — and lets go of it when done. A download nobody waits for any more
// stops, unless one of its callers asked to keep it running (the mirror fills the cache for
// the next pull whatever its client does).

import { NaiadError, parseDigest, parseDownloadUrl, parseRange, taskIdOf, type Priority } from '@naiad/proto'

import { PeerTask, type PeerTaskComponents } from './peer-task.ts'
import type { DownloadProgress, DownloadRequest, DownloadResult, PeerTaskOptions } from './types.ts'

interface Running {
  task: PeerTask
  done: Promise<DownloadResult>
  abort: AbortController
  holders: number
  keepRunning: boolean
}

/** One caller's view of a download. */
export class TaskHandle {
  readonly id: string
  readonly done: Promise<DownloadResult>
  private readonly task: PeerTask
  private readonly onRelease: (cancel: boolean) => void
  private released = false

  constructor(id: string, task: PeerTask, done: Promise<DownloadResult>, onRelease: (cancel: boolean) => void) {
    this.id = id
    this.task = task
    this.done = done
    this.onRelease = onRelease
  }

  progress(): DownloadProgress {
    return this.task.progress()
  }

  onProgress(listener: (p: DownloadProgress) => void): () => void {
    return this.task.onProgress(listener)
  }

  /** Bytes from the start that are verified and may be served now (see PeerTask.servable). */
  servable(): number {
    return this.task.servable()
  }

  /** Resolves at the task's next change (a piece stored, the end), or when `signal` fires. */
  changed(signal?: AbortSignal): Promise<void> {
    return this.task.changed(signal)
  }

  /**
   * This caller is done with the download. With `cancel`, a download that nobody else waits
   * for (and that no caller asked to keep) stops.
   */
  release(options: { cancel?: boolean } = {}): void {
    if (this.released) return
    this.released = true
    this.onRelease(options.cancel === true)
  }
}

export class TaskManager {
  private readonly running = new Map<string, Running>()
  private readonly shutdown = new AbortController()
  private readonly components: PeerTaskComponents
  private readonly options: PeerTaskOptions

  constructor(components: PeerTaskComponents, options: PeerTaskOptions) {
    this.components = components
    this.options = options
  }

  /** Validates a request and returns its task ID; throws DFD_ERR_BAD_REQUEST. */
  static validate(req: DownloadRequest): string {
    parseDownloadUrl(req.url)
    if (req.digest !== undefined && req.digest !== '') parseDigest(req.digest)
    if (req.range !== undefined && req.range !== '') parseRange(req.range)
    for (const [k, v] of Object.entries(req.headers)) {
      if (!/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(k) || /[\r\n]/.test(v)) {
        throw new NaiadError('DFD_ERR_BAD_REQUEST', `bad header "${k}"`)
      }
    }
    return taskIdOf({ url: req.url, filter: req.filter, range: req.range, digest: req.digest })
  }

  /**
   * Starts (or joins) the download of a task. `keepRunning`: the download goes on to the end
   * even when every caller lets go (it fills the cache).
   */
  open(req: DownloadRequest, options: { keepRunning?: boolean } = {}): TaskHandle {
    const id = TaskManager.validate(req)
    if (this.shutdown.signal.aborted) throw new NaiadError('PROTO_ERR_ABORTED', 'the node is shutting down')
    let entry = this.running.get(id)
    if (entry === undefined) {
      const abort = new AbortController()
      const task = new PeerTask(id, req, this.components, this.options)
      const done = task.run(AbortSignal.any([this.shutdown.signal, abort.signal]))
      done.catch(() => {})
      const e: Running = { task, done, abort, holders: 0, keepRunning: false }
      done.finally(() => { if (this.running.get(id) === e) this.running.delete(id) }).catch(() => {})
      this.running.set(id, e)
      entry = e
    } else if (req.priority !== undefined) {
      entry.task.raisePriority(req.priority as Priority)
    }
    const running = entry
    running.holders++
    if (options.keepRunning === true) running.keepRunning = true
    return new TaskHandle(id, running.task, running.done, (cancel) => {
      running.holders--
      if (cancel && running.holders === 0 && !running.keepRunning && this.running.get(id) === running) {
        running.abort.abort(new NaiadError('PROTO_ERR_ABORTED', 'every client of the download went away'))
      }
    })
  }

  /**
   * Downloads (or joins the download of) a task and waits for it. The caller's signal stops
   * the caller's wait, not the download, which others may share and which fills the cache.
   */
  async download(req: DownloadRequest, options: { signal?: AbortSignal; onProgress?: (p: DownloadProgress) => void } = {}): Promise<DownloadResult> {
    const handle = this.open(req, { keepRunning: true })
    const off = options.onProgress === undefined ? () => {} : handle.onProgress(options.onProgress)
    try {
      if (options.signal === undefined) return await handle.done
      const signal = options.signal
      return await new Promise<DownloadResult>((resolve, reject) => {
        const onAbort = (): void => reject(signal.reason?.name === 'TimeoutError'
          ? new NaiadError('DFD_ERR_TIMEOUT', 'download did not finish within its timeout')
          : new NaiadError('PROTO_ERR_ABORTED', 'download wait was aborted'))
        if (signal.aborted) return onAbort()
        signal.addEventListener('abort', onAbort, { once: true })
        handle.done.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort))
      })
    } finally {
      off()
      handle.release()
    }
  }

  get active(): number {
    return this.running.size
  }

  progressOf(id: string): DownloadProgress | undefined {
    return this.running.get(id)?.task.progress()
  }

  /** Callers that hold a running task now (dfget, the mirror, …); undefined when it is not running. */
  clientsOf(id: string): number | undefined {
    return this.running.get(id)?.holders
  }

  async close(): Promise<void> {
    this.shutdown.abort(new NaiadError('PROTO_ERR_ABORTED', 'daemon is shutting down'))
    await Promise.allSettled([...this.running.values()].map((e) => e.done))
  }
}
