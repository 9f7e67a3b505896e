// One dfget run: ask the daemon for the task, follow its events, copy the verified content
// into a temporary file beside FILE while hashing it, check the hash against the daemon's
// and the user's digest, fsync, and rename into place. On the daemon's host the temporary
// file is a hard link to (or a kernel copy of) the daemon's verified file instead. Any
// failure removes the temporary file, so FILE exists only complete and verified.

import { daemonError, formatBytes, LocalApiClient, NaiadError, parseDigest, type DownloadEvent, type LocalApi } from '@naiad/proto/contracts'

import { DFGET_DEFAULTS, type DfgetOptions } from './config/options.ts'
import { AtomicFile } from './output/atomic-file.ts'
import { createProgressReporter, type ProgressReporter } from './progress/progress-reporter.ts'

export interface DfgetComponents {
  daemon: LocalApi
  progress: ProgressReporter
  now: () => number
}

export interface DfgetResult {
  taskId: string
  /** Absolute path of the saved file. */
  output: string
  contentLength: number
  sha256: string
  fromPeers: number
  fromOrigin: number
  /** The daemon had the whole task in its cache already. */
  cached: boolean
  elapsedMs: number
}

type DoneEvent = Extract<DownloadEvent, { event: 'done' }>

/** A completed task can be evicted between "done" and the content read; ask again this often. */
const CONTENT_ATTEMPTS = 2

export class Dfget {
  readonly options: DfgetOptions
  private readonly components: DfgetComponents

  constructor(options: DfgetOptions, components: DfgetComponents) {
    this.options = options
    this.components = components
  }

  /**
   * Downloads URL into FILE. Throws a NaiadError: the daemon's code for a failed download,
   * DFGET_ERR_VERIFY, DFGET_ERR_OUTPUT, DFGET_ERR_DAEMON_UNREACHABLE, DFD_ERR_TIMEOUT when
   * --timeout passed, PROTO_ERR_ABORTED when the caller's signal fired.
   */
  async download(options: { signal?: AbortSignal } = {}): Promise<DfgetResult> {
    const { progress, now } = this.components
    const started = now()
    const deadline = this.options.timeoutMs > 0 ? AbortSignal.timeout(this.options.timeoutMs) : undefined
    const signals = [options.signal, deadline].filter((s) => s !== undefined)
    const signal = signals.length === 0 ? new AbortController().signal : AbortSignal.any(signals)

    let file: AtomicFile | undefined
    try {
      file = await AtomicFile.create(this.options.output)
      for (let attempt = 1; ; attempt++) {
        const { done, path } = await this.runTask(signal, started)
        try {
          const written = (path !== undefined ? await this.fromDaemonFile(file, done, path) : undefined) ?? await this.save(file, done, signal)
          await file.commit()
          progress.done(`saved ${this.options.output} (${formatBytes(written)}, sha256:${done.sha256}) in ${formatElapsed(now() - started)}` +
            `${done.cached ? ', from the daemon cache' : ''}`)
          return {
            taskId: done.taskId,
            output: file.path,
            contentLength: done.contentLength,
            sha256: done.sha256,
            fromPeers: done.fromPeers,
            fromOrigin: done.fromOrigin,
            cached: done.cached,
            elapsedMs: now() - started
          }
        } catch (err) {
          if (attempt >= CONTENT_ATTEMPTS || !(err instanceof NaiadError) || err.code !== 'DFD_ERR_TASK_NOT_FOUND') throw err
          // Evicted before we read it: nothing was written yet (a 404 comes before the body).
        }
      }
    } catch (err) {
      await file?.discard()
      progress.fail()
      if (deadline?.aborted === true) {
        throw new NaiadError('DFD_ERR_TIMEOUT', `download did not finish within --timeout ${formatElapsed(this.options.timeoutMs)}`, { cause: err })
      }
      if (options.signal?.aborted === true) {
        const reason: unknown = options.signal.reason
        throw reason instanceof NaiadError ? reason : new NaiadError('PROTO_ERR_ABORTED', 'download interrupted', { cause: reason })
      }
      throw err
    }
  }

  async close(): Promise<void> {
    await this.components.daemon.close()
  }

  /**
   * POSTs the request and follows its events to `done` (and the task's data file, when the
   * daemon named one); an `error` event throws the daemon's code.
   */
  private async runTask(signal: AbortSignal, started: number): Promise<{ done: DoneEvent; path: string | undefined }> {
    let path: string | undefined
    const o = this.options
    const remaining = o.timeoutMs > 0 ? Math.max(1, o.timeoutMs - (this.components.now() - started)) : undefined
    const events = this.components.daemon.download({
      url: o.url,
      ...(Object.keys(o.headers).length > 0 ? { headers: o.headers } : {}),
      ...(o.digest !== undefined ? { digest: o.digest } : {}),
      ...(o.range !== undefined ? { range: o.range } : {}),
      ...(o.filter.length > 0 ? { filter: o.filter } : {}),
      ...(remaining !== undefined ? { timeoutMs: Math.ceil(remaining) } : {})
    }, { signal })
    for await (const e of events) {
      switch (e.event) {
        case 'progress':
          this.components.progress.update({ phase: 'download', completedBytes: e.completedBytes, totalBytes: e.totalBytes, fromPeers: e.fromPeers, fromOrigin: e.fromOrigin })
          break
        case 'started':
          path = e.path
          break
        case 'done':
          return { done: e, path }
        case 'error':
          // The daemon stopping under us (shutting down) is the daemon going away, not an interrupt.
          if (e.code === 'PROTO_ERR_ABORTED') throw new NaiadError('DFGET_ERR_DAEMON_UNREACHABLE', `the daemon stopped the download: ${e.message}`)
          throw daemonError(e.code, e.message)
        default:
          break
      }
    }
    throw new NaiadError('DFGET_ERR_DAEMON_UNREACHABLE', 'the daemon closed the event stream before the download finished')
  }

  /**
   * On the daemon's own host, the output is a hard link to the task's data file, or a copy
   * made by the kernel (copy_file_range), not bytes streamed over HTTP: the daemon verified
   * every byte before it listed the task complete, a complete task's file is never written
   * again, and the daemon drops a task whose file changed (done.file is the identity it
   * recorded). Returns undefined (the caller falls back to the HTTP copy) when the daemon
   * is not on this host or its file cannot be read here (another user's data directory).
   */
  private async fromDaemonFile(file: AtomicFile, done: DoneEvent, path: string): Promise<number | undefined> {
    if (!isLoopback(this.options.daemonUrl)) return undefined
    this.checkAnnounced(done)
    const how = await file.takeFrom(path, { length: done.contentLength, ...(done.file !== undefined ? { file: done.file } : {}) })
    if (how === undefined) return undefined
    this.components.progress.update({ phase: 'download', completedBytes: done.contentLength, totalBytes: done.contentLength, fromPeers: done.fromPeers, fromOrigin: done.fromOrigin })
    return done.contentLength
  }

  /** The daemon's digest must be well-formed and agree with the user's before a byte is copied. */
  private checkAnnounced(done: DoneEvent): string {
    const verify = (message: string): NaiadError => new NaiadError('DFGET_ERR_VERIFY', message)
    const announced = done.sha256.toLowerCase()
    if (!/^[0-9a-f]{64}$/.test(announced)) throw verify(`the daemon announced a malformed SHA-256 "${done.sha256}"`)
    const expected = this.options.digest === undefined ? undefined : parseDigest(this.options.digest).hex
    if (expected !== undefined && expected !== announced) {
      throw verify(`content has sha256:${announced}, expected ${this.options.digest}`)
    }
    return announced
  }

  /** Copies the task's content into the temporary file and verifies it; returns the byte count. */
  private async save(file: AtomicFile, done: DoneEvent, signal: AbortSignal): Promise<number> {
    const verify = (message: string): NaiadError => new NaiadError('DFGET_ERR_VERIFY', message)
    // Fail before copying a byte when the daemon's own digest already disagrees with the user's.
    const announced = this.checkAnnounced(done)
    const content = await this.components.daemon.content(done.taskId, { signal, headers: this.options.headers })
    if (content.sha256 !== '' && content.sha256 !== announced) {
      throw verify(`the daemon serves content with sha256:${content.sha256}, but announced sha256:${announced}`)
    }
    if (content.contentLength >= 0 && content.contentLength !== done.contentLength) {
      throw verify(`the daemon serves ${content.contentLength} bytes, but announced ${done.contentLength}`)
    }
    const total = done.contentLength
    const { bytes, sha256 } = await file.write(content.body, (written) => {
      this.components.progress.update({ phase: 'save', completedBytes: written, totalBytes: total })
    })
    signal.throwIfAborted()
    if (bytes !== total) throw verify(`received ${bytes} bytes, the daemon announced ${total}`)
    if (sha256 !== announced) throw verify(`received bytes have sha256:${sha256}, the daemon announced sha256:${announced}`)
    return bytes
  }
}

/** Whether a daemon URL names this host (the only case where its file paths mean anything here). */
export function isLoopback(url: string): boolean {
  let host: string
  try {
    host = new URL(url).hostname.replace(/^\[|\]$/g, '')
  } catch {
    return false
  }
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host)
}

export function formatElapsed(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)}ms`
  if (ms < 60_000) return `${(ms / 1000).toFixed(1).replace(/\.0$/, '')}s`
  const m = Math.floor(ms / 60_000)
  const s = Math.round((ms % 60_000) / 1000)
  return m >= 60 ? `${Math.floor(m / 60)}h${m % 60}m` : `${m}m${s}s`
}

/** The package's factory: real daemon client and a silent reporter unless components say otherwise. */
export function createDfget(options: DfgetOptions, components: Partial<DfgetComponents> = {}): Dfget {
  return new Dfget(options, {
    daemon: components.daemon ?? new LocalApiClient({
      url: options.daemonUrl,
      connectTimeoutMs: DFGET_DEFAULTS.connectTimeoutMs,
      headersTimeoutMs: DFGET_DEFAULTS.headersTimeoutMs,
      contentIdleTimeoutMs: DFGET_DEFAULTS.contentIdleTimeoutMs,
      unreachable: 'DFGET_ERR_DAEMON_UNREACHABLE'
    }),
    progress: components.progress ?? createProgressReporter({ write: () => true }, { mode: 'none', intervalMs: 0 }),
    now: components.now ?? Date.now
  })
}
