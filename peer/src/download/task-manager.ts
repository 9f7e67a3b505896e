// Runs downloads, one PeerTask per task ID however many callers ask for it at once.

import { NaiadError, parseDigest, parseDownloadUrl, parseRange, taskIdOf } from '@naiad/proto'

import { PeerTask, type DownloadProgress, type DownloadRequest, type DownloadResult, type PeerTaskComponents, type PeerTaskOptions } from './peer-task.ts'

export class TaskManager {
  private readonly running = new Map<string, { task: PeerTask; done: Promise<DownloadResult> }>()
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
   * Downloads (or joins the running download of) a task. The caller's signal stops the
   * caller's wait, not the download, which others may share and which fills the cache.
   */
  async download(req: DownloadRequest, options: { signal?: AbortSignal; onProgress?: (p: DownloadProgress) => void } = {}): Promise<DownloadResult> {
    const id = TaskManager.validate(req)
    let entry = this.running.get(id)
    if (entry === undefined) {
      const task = new PeerTask(id, req, this.components, this.options)
      const done = task.run(this.shutdown.signal).finally(() => this.running.delete(id))
      entry = { task, done }
      this.running.set(id, entry)
    } else if (req.priority !== undefined) {
      entry.task.raisePriority(req.priority)
    }
    const off = options.onProgress === undefined ? () => {} : entry.task.onProgress(options.onProgress)
    try {
      if (options.signal === undefined) return await entry.done
      const signal = options.signal
      return await new Promise<DownloadResult>((resolve, reject) => {
        const onAbort = (): void => reject(signal.reason?.name === 'TimeoutError'
          ? new NaiadError('DFD_ERR_TIMEOUT', 'download did not finish within its timeout')
          : new NaiadError('PROTO_ERR_ABORTED', 'download wait was aborted'))
        if (signal.aborted) return onAbort()
        signal.addEventListener('abort', onAbort, { once: true })
        entry.done.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort))
      })
    } finally {
      off()
    }
  }

  get active(): number {
    return this.running.size
  }

  progressOf(id: string): DownloadProgress | undefined {
    return this.running.get(id)?.task.progress()
  }

  async close(): Promise<void> {
    this.shutdown.abort(new NaiadError('PROTO_ERR_ABORTED', 'daemon is shutting down'))
    await Promise.allSettled([...this.running.values()].map((e) => e.done))
  }
}
