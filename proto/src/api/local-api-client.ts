// The one client of the dfdaemon local API (dfdaemon/src/api/local-api.ts), used by dfget
// and nydus-fs:
//   POST /api/v1/downloads          → NDJSON events: started, progress…, done | error
//   GET  /api/v1/tasks/:id/content  → the verified bytes (or a Range of them), with x-naiad-sha256
// A daemon that cannot be reached or that breaks off fails with the client's `unreachable`
// code (each tool names its own: dfget exits 3 on it); an answer that is not what the
// contract says is PROTO_ERR_DECODE; errors the daemon reports keep the daemon's own code.
//
// Built on node:http, not undici: the daemon is on this host and one connection does, and
// loading undici's 1.4 MB took dfget ~60 ms at every start — a warm dfget is mostly start-up.
// node:http is taken with getBuiltinModule, not an import: the ES module facade of node:http
// reads every export, and its WebSocket getter loads Node's own copy of undici.

import type { IncomingMessage } from 'node:http'

import { isErrorCode, NaiadError, type ErrorCode } from '../errors.ts'
import type { DownloadEvent, DownloadRequestBody } from './local-api.ts'

export interface TaskContent {
  /** 200 for the whole content, 206 for a range. */
  status: number
  /** Bytes the body carries, from content-length; -1 when the daemon does not say. */
  contentLength: number
  /** The daemon's x-naiad-sha256 header (of the whole content), lowercase hex, or '' when missing. */
  sha256: string
  body: AsyncIterable<Buffer>
}

export interface ContentOptions {
  signal: AbortSignal
  /** The download's own headers: the daemon checks the registry's permission for a blob with them. */
  headers?: Record<string, string>
  /** Inclusive byte range; a daemon that ignores it answers 200 with everything. */
  range?: { start: number; end: number }
}

/** What a caller needs of a daemon; tests can hand in a stub. */
export interface LocalApi {
  download(req: DownloadRequestBody, options: { signal: AbortSignal }): AsyncIterable<DownloadEvent>
  /** A complete task's bytes; DFD_ERR_TASK_NOT_FOUND when the daemon no longer holds it. */
  content(taskId: string, options: ContentOptions): Promise<TaskContent>
  close(): Promise<void>
}

export interface LocalApiClientOptions {
  /** Base URL of the local API, e.g. http://127.0.0.1:65003. */
  url: string
  connectTimeoutMs: number
  /** Wait for response headers (the daemon answers a download before it starts fetching). */
  headersTimeoutMs: number
  /** Longest gap between two chunks of a content body. */
  contentIdleTimeoutMs: number
  /** The code of "the daemon cannot be reached or broke off"; PROTO_ERR_DIAL by default. */
  unreachable?: ErrorCode
}

/** NDJSON lines longer than this are not events (the longest real one is ~300 bytes). */
const MAX_LINE = 64 * 1024

interface RequestSpec {
  path: string
  method: 'GET' | 'POST'
  headers: Record<string, string>
  body?: string
  /** Longest gap between two chunks of the response body; 0: none. */
  bodyTimeout: number
}

const { Agent, request: httpRequest } = process.getBuiltinModule('node:http')

/** A stage of the request that took too long, with the code undici gave the same case. */
function timeoutError(code: string, message: string): Error {
  return Object.assign(new Error(message), { code })
}

export class LocalApiClient implements LocalApi {
  private readonly agent: InstanceType<typeof Agent>
  private readonly options: LocalApiClientOptions
  private readonly unreachable: ErrorCode

  constructor(options: LocalApiClientOptions) {
    this.options = options
    this.unreachable = options.unreachable ?? 'PROTO_ERR_DIAL'
    this.agent = new Agent({ keepAlive: true, maxSockets: 16 })
  }

  get url(): string {
    return this.options.url
  }

  async *download(req: DownloadRequestBody, options: { signal: AbortSignal }): AsyncGenerator<DownloadEvent> {
    const res = await this.request({
      path: '/api/v1/downloads',
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/x-ndjson' },
      body: JSON.stringify(req),
      // The event stream is quiet while the daemon waits on a slow origin; the caller's
      // deadline bounds it instead.
      bodyTimeout: 0
    }, options.signal)
    if (res.statusCode !== 200) throw await this.failure(res, 'POST /api/v1/downloads')

    let buffered = ''
    let finished = false
    try {
      for await (const chunk of res) {
        buffered += (chunk as Buffer).toString('utf8')
        let nl = buffered.indexOf('\n')
        while (nl >= 0) {
          const line = buffered.slice(0, nl).trim()
          buffered = buffered.slice(nl + 1)
          if (line !== '') {
            const event = parseEvent(line)
            if (event !== undefined) {
              yield event
              if (event.event === 'done' || event.event === 'error') {
                finished = true
                return
              }
            }
          }
          nl = buffered.indexOf('\n')
        }
        if (buffered.length > MAX_LINE) throw new NaiadError('PROTO_ERR_DECODE', `the daemon sent an event line longer than ${MAX_LINE} bytes`)
      }
    } catch (err) {
      throw this.transportError(err, options.signal, 'the connection to the daemon broke during the download')
    } finally {
      if (!finished) res.on('error', () => {}).destroy()
      else res.resume()
    }
    throw new NaiadError(this.unreachable, 'the daemon closed the event stream before the download finished')
  }

  async content(taskId: string, options: ContentOptions): Promise<TaskContent> {
    const headers: Record<string, string> = { ...options.headers }
    if (options.range !== undefined) headers.range = `bytes=${options.range.start}-${options.range.end}`
    const res = await this.request({
      path: `/api/v1/tasks/${encodeURIComponent(taskId)}/content`,
      method: 'GET',
      headers,
      bodyTimeout: this.options.contentIdleTimeoutMs
    }, options.signal)
    const status = res.statusCode ?? 0
    if (status !== 200 && status !== 206) throw await this.failure(res, 'GET task content')
    const len = res.headers['content-length']
    const sha = res.headers['x-naiad-sha256']
    const signal = options.signal
    const transportError = this.transportError.bind(this)
    return {
      status,
      contentLength: typeof len === 'string' && /^\d+$/.test(len) ? Number(len) : -1,
      sha256: typeof sha === 'string' ? sha.toLowerCase() : '',
      body: (async function* () {
        try {
          for await (const chunk of res) yield chunk as Buffer
        } catch (err) {
          throw transportError(err, signal, 'the connection to the daemon broke while reading the content')
        } finally {
          if (!res.readableEnded) res.on('error', () => {}).destroy()
        }
      })()
    }
  }

  async close(): Promise<void> {
    // destroy, not close: an abandoned stream must not hold the process open.
    this.agent.destroy()
  }

  /**
   * Sends one request; resolves with the response once its headers are in. The connection
   * must be made within connectTimeoutMs and the headers must follow within headersTimeoutMs;
   * after that the body may pause at most `bodyTimeout` between chunks.
   */
  private request(spec: RequestSpec, signal: AbortSignal): Promise<IncomingMessage> {
    const { connectTimeoutMs, headersTimeoutMs } = this.options
    return new Promise((resolve, reject) => {
      let settled = false
      const headers = spec.body === undefined ? spec.headers : { ...spec.headers, 'content-length': String(Buffer.byteLength(spec.body)) }
      const req = httpRequest(new URL(spec.path, this.options.url), { method: spec.method, headers, agent: this.agent, signal })
      let timer = setTimeout(() => {
        req.destroy(timeoutError('UND_ERR_CONNECT_TIMEOUT', `no connection within ${connectTimeoutMs} ms`))
      }, connectTimeoutMs)
      const waitHeaders = (): void => {
        clearTimeout(timer)
        timer = setTimeout(() => {
          req.destroy(timeoutError('UND_ERR_HEADERS_TIMEOUT', `no answer within ${headersTimeoutMs} ms`))
        }, headersTimeoutMs)
      }
      req.once('socket', (socket) => {
        if (socket.connecting) socket.once('connect', waitHeaders)
        else waitHeaders()
      })
      req.once('response', (res) => {
        clearTimeout(timer)
        settled = true
        if (spec.bodyTimeout > 0) {
          res.setTimeout(spec.bodyTimeout, () => {
            res.destroy(timeoutError('UND_ERR_BODY_TIMEOUT', `no data for ${spec.bodyTimeout} ms`))
          })
        }
        resolve(res)
      })
      req.once('error', (err) => {
        clearTimeout(timer)
        if (settled) return
        settled = true
        reject(this.transportError(err, signal, `cannot reach the daemon at ${this.options.url}`))
      })
      req.end(spec.body)
    })
  }

  /** A non-2xx answer: the daemon's own `{code, message}` when it sent one. */
  private async failure(res: IncomingMessage, what: string): Promise<NaiadError> {
    let text = ''
    try {
      const chunks: Buffer[] = []
      for await (const chunk of res) chunks.push(chunk as Buffer)
      text = Buffer.concat(chunks).toString('utf8')
    } catch { /* the status alone will do */ }
    let parsed: { code?: unknown; message?: unknown } | undefined
    try { parsed = JSON.parse(text) as { code?: unknown; message?: unknown } } catch { parsed = undefined }
    if (parsed !== undefined && typeof parsed.code === 'string' && typeof parsed.message === 'string') {
      return daemonError(parsed.code, parsed.message)
    }
    return new NaiadError(this.unreachable, `${this.options.url} answered HTTP ${res.statusCode ?? 0} to ${what}; is it a dfdaemon local API?`)
  }

  private transportError(err: unknown, signal: AbortSignal, context: string): unknown {
    // Aborts are the caller's to name (timeout or interrupt); typed errors pass through.
    if (signal.aborted || err instanceof NaiadError) return err
    const e = err as { code?: string; message?: string; cause?: { code?: string } }
    const why = e.cause?.code ?? e.code ?? e.message ?? String(err)
    return new NaiadError(this.unreachable, `${context}: ${why}`, { cause: err })
  }
}

/** An error the daemon reported, under its own code when it is one of Naiad's. */
export function daemonError(code: string, message: string): NaiadError {
  if (isErrorCode(code)) return new NaiadError(code, message)
  return new NaiadError('DFD_ERR_TASK_FAILED', `${message} (daemon code ${code})`)
}

function parseEvent(line: string): DownloadEvent | undefined {
  let v: unknown
  try { v = JSON.parse(line) } catch (err) {
    throw new NaiadError('PROTO_ERR_DECODE', `the daemon sent a line that is not JSON: ${line.slice(0, 80)}`, { cause: err })
  }
  const e = v as Record<string, unknown>
  const bad = (): never => { throw new NaiadError('PROTO_ERR_DECODE', `the daemon sent a malformed ${String(e.event)} event: ${line.slice(0, 200)}`) }
  if (e === null || typeof e !== 'object') return bad()
  const num = (k: string): boolean => typeof e[k] === 'number' && Number.isFinite(e[k])
  switch (e.event) {
    case 'started':
      if (typeof e.taskId !== 'string') bad()
      break
    case 'progress':
      if (typeof e.taskId !== 'string' || !num('completedBytes') || !num('totalBytes')) bad()
      break
    case 'done':
      if (typeof e.taskId !== 'string' || !num('contentLength') || typeof e.sha256 !== 'string' || (e.file !== undefined && typeof e.file !== 'string')) bad()
      break
    case 'error':
      if (typeof e.code !== 'string' || typeof e.message !== 'string') bad()
      break
    default:
      // Events added by a newer daemon are not ours to fail on.
      return undefined
  }
  return e as DownloadEvent
}
