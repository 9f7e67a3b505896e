// Back-to-source: reading a task's bytes from its origin over HTTP(S) with undici.
// Redirects are followed; connection failures and 5xx answers are retried with backoff
// before any byte was delivered; every wait has a timeout.

import { readFileSync } from 'node:fs'
import { getCACertificates } from 'node:tls'
import { setTimeout as sleep } from 'node:timers/promises'

import { Agent, interceptors, type Dispatcher } from 'undici'
import { NaiadError } from '@naiad/proto'

import { destinationDenied, policyConnect, type DestinationPolicy } from './destination-policy.ts'

export interface OriginOptions {
  connectTimeoutMs: number
  /** Longest wait for response headers, and longest gap between two body chunks. */
  idleTimeoutMs: number
  retries: number
  maxRedirections: number
  /** Extra PEM CA certificates trusted for HTTPS origins, besides Node's and the system's. */
  caFile?: string
  /** Which destinations may be fetched (source.allow); without one, any. */
  policy?: DestinationPolicy
}

export interface OriginRequest {
  url: string
  headers: Record<string, string>
  /** Inclusive byte range, as sent in a Range header. */
  range?: { start: number; end: number }
  signal?: AbortSignal
}

export interface OriginResponse {
  status: number
  /** Bytes the body will carry, or -1 when the origin does not say. */
  contentLength: number
  headers: Record<string, string | string[] | undefined>
  body: AsyncIterable<Buffer>
  /** Frees the connection without reading the rest. */
  cancel(): void
}

/**
 * The CA certificates HTTPS connections trust: Node's bundle, the operating system's
 * store (where internal registries' CAs are usually installed) and an optional PEM file.
 */
export function trustedCAs(caFile?: string): string[] {
  const cas = [...getCACertificates('default'), ...getCACertificates('system')]
  if (caFile !== undefined && caFile !== '') {
    try {
      cas.push(readFileSync(caFile, 'utf8'))
    } catch (err) {
      throw new NaiadError('PROTO_ERR_BAD_CONFIG', `cannot read CA file ${caFile}: ${(err as Error).message}`, { cause: err })
    }
  }
  return cas
}

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'host', 'content-length', 'range'])

export class OriginClient {
  private readonly dispatcher: Dispatcher
  private readonly agent: Agent

  private readonly options: OriginOptions

  constructor(options: OriginOptions) {
    this.options = options
    this.agent = new Agent({
      connect: policyConnect(options.policy, { timeout: options.connectTimeoutMs, ca: trustedCAs(options.caFile) }),
      headersTimeout: options.idleTimeoutMs,
      bodyTimeout: options.idleTimeoutMs
    })
    this.dispatcher = this.agent.compose(interceptors.redirect({ maxRedirections: options.maxRedirections }))
  }

  async open(req: OriginRequest): Promise<OriginResponse> {
    this.options.policy?.checkUrl(req.url)
    const headers: Record<string, string> = {}
    for (const [k, v] of Object.entries(req.headers)) {
      if (!HOP_BY_HOP.has(k.toLowerCase())) headers[k] = v
    }
    if (req.range !== undefined) headers.range = `bytes=${req.range.start}-${req.range.end}`
    let lastError: NaiadError | undefined
    for (let attempt = 0; attempt <= this.options.retries; attempt++) {
      if (attempt > 0) await sleep(Math.min(2000, 100 * 2 ** attempt), undefined, { signal: req.signal }).catch(() => {})
      req.signal?.throwIfAborted()
      let res: Dispatcher.ResponseData
      try {
        res = await this.dispatcher.request({
          origin: new URL(req.url).origin,
          path: new URL(req.url).pathname + new URL(req.url).search,
          method: 'GET',
          headers,
          signal: req.signal
        })
      } catch (err) {
        if (req.signal?.aborted === true) throw err
        const refused = destinationDenied(err)
        if (refused !== undefined) throw refused
        lastError = new NaiadError('DFD_ERR_ORIGIN_UNREACHABLE', `cannot reach origin ${new URL(req.url).host}: ${describe(err)}`, { cause: err })
        continue
      }
      const expected = req.range === undefined ? 200 : 206
      if (res.statusCode !== expected) {
        discard(res.body)
        lastError = new NaiadError('DFD_ERR_ORIGIN_STATUS', `origin answered ${res.statusCode} for ${redact(req.url)}`)
        if (res.statusCode >= 500 || res.statusCode === 429) continue
        throw lastError
      }
      const len = res.headers['content-length']
      return {
        status: res.statusCode,
        contentLength: typeof len === 'string' && /^\d+$/.test(len) ? Number(len) : -1,
        headers: res.headers,
        body: res.body as AsyncIterable<Buffer>,
        cancel: () => discard(res.body)
      }
    }
    throw lastError ?? new NaiadError('DFD_ERR_ORIGIN_UNREACHABLE', `cannot reach origin for ${redact(req.url)}`)
  }

  /**
   * May `headers` read `url`? Answers the origin's status to a HEAD (redirects followed, no
   * body bytes). A signed URL may be good for GET only, and some origins refuse HEAD: when
   * HEAD answers 403, 405 or 501 the question is asked again as a GET of the first byte.
   * Throws PROTO_ERR_DESTINATION_DENIED and DFD_ERR_ORIGIN_UNREACHABLE.
   */
  async probe(url: string, headers: Record<string, string>, signal?: AbortSignal): Promise<number> {
    this.options.policy?.checkUrl(url)
    const h: Record<string, string> = {}
    for (const [k, v] of Object.entries(headers)) if (!HOP_BY_HOP.has(k.toLowerCase())) h[k] = v
    const u = new URL(url)
    const ask = async (method: 'HEAD' | 'GET'): Promise<number> => {
      try {
        const res = await this.dispatcher.request({ origin: u.origin, path: u.pathname + u.search, method, headers: method === 'GET' ? { ...h, range: 'bytes=0-0' } : h, signal })
        discard(res.body)
        return res.statusCode
      } catch (err) {
        const refused = destinationDenied(err)
        if (refused !== undefined) throw refused
        throw new NaiadError('DFD_ERR_ORIGIN_UNREACHABLE', `cannot reach origin ${u.host}: ${describe(err)}`, { cause: err })
      }
    }
    const status = await ask('HEAD')
    return status === 403 || status === 405 || status === 501 ? ask('GET') : status
  }

  async close(): Promise<void> {
    await this.agent.close()
  }
}

/** Drops a response body without reading it; undici reports the abort as an error we expect. */
export function discard(body: { on(event: 'error', fn: () => void): unknown; destroy(): unknown }): void {
  body.on('error', () => {})
  body.destroy()
}

function describe(err: unknown): string {
  const e = err as { code?: string; message?: string; cause?: { code?: string } }
  return e.cause?.code ?? e.code ?? e.message ?? String(err)
}

/** URLs in messages lose their query, which often carries credentials or signatures. */
export function redact(url: string): string {
  try {
    const u = new URL(url)
    return `${u.origin}${u.pathname}${u.search === '' ? '' : '?…'}`
  } catch {
    return '<malformed URL>'
  }
}
