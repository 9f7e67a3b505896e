// The registry mirror: the OCI distribution pull API, and the listings (tags, referrers,
// catalog) read-only. Blobs come through the swarm, one task per blob; everything else is
// passed to the upstream registry unchanged, so auth challenges, content negotiation and
// errors reach the client as the registry sent them.

import { createHash } from 'node:crypto'
import { once } from 'node:events'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { pipeline } from 'node:stream/promises'

import { Agent, interceptors, type Dispatcher } from 'undici'
import type { Logger } from 'pino'
import { contentRange, NaiadError, parseRangeHeader, toNaiadError } from '@naiad/proto'

import { destinationDenied, discard, policyConnect, sendServable, TaskManager, waitServable, trustedCAs, type DownloadRequest, type PieceStore, type QosHooks } from '@naiad/peer'
import { mirrorLink, requestHeaders, responseHeaders, type UpstreamRoute } from './headers.ts'
import { upstreamBase, upstreamError, UpstreamProblems, type UpstreamOptions } from './upstream.ts'

export interface RegistryMirrorComponents {
  tasks: TaskManager
  store: PieceStore
  logger: Logger
  /** False while the scheduler is unreachable: then blobs are relayed, not swarmed. */
  swarmAvailable: () => boolean
  /** Tenant request limits (a no-op unless a QoS plugin installed one). */
  qos?: QosHooks
}

const BLOB = /^\/v2\/(.+)\/blobs\/(sha256:[0-9a-f]{64})$/
const MANIFEST = /^\/v2\/(.+)\/manifests\/([^/]+)$/
/** Tags, referrers and the catalog: read-only listings, passed through with their query (n, last, artifactType). */
const LISTING = [/^\/v2\/.+\/tags\/list$/, /^\/v2\/.+\/referrers\/[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/, /^\/v2\/_catalog$/]

/** The registry's own headers a blob answer keeps (from its HEAD); length, range and digest are ours. */
const REGISTRY_BLOB_HEADERS = ['content-type', 'etag', 'cache-control', 'last-modified', 'docker-distribution-api-version']

function blobHeaders(digest: string, registry: Record<string, string | string[] | undefined>): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = { 'content-type': 'application/octet-stream', etag: `"${digest}"` }
  for (const k of REGISTRY_BLOB_HEADERS) {
    const v = registry[k]
    if (v !== undefined) out[k] = v
  }
  // The digest the bytes were verified against, whatever the registry's header says.
  return { ...out, 'docker-content-digest': digest, 'accept-ranges': 'bytes' }
}

/** Writes an error in the registry's own JSON shape, with our code alongside. */
export function sendRegistryError(res: ServerResponse, err: unknown): void {
  const e = toNaiadError(err, 'DFD_ERR_TASK_FAILED')
  if (res.headersSent) {
    res.destroy(e)
    return
  }
  const status = e.code === 'DFD_ERR_BAD_REQUEST' ? 400 : e.code === 'DFD_ERR_TIMEOUT' ? 504 : 502
  const body = JSON.stringify({ errors: [{ code: status === 400 ? 'UNSUPPORTED' : 'UNKNOWN', message: e.message, detail: { naiad: e.code } }] })
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }).end(body)
}

/** 429 in the registry's error shape (what registries send when rate-limited), with Retry-After. */
export function sendTooManyRequests(res: ServerResponse, retryAfterSec: number, reason: string): void {
  const e = new NaiadError('DFD_ERR_TOO_MANY_REQUESTS', reason)
  const body = JSON.stringify({ errors: [{ code: 'TOOMANYREQUESTS', message: e.message, detail: { naiad: e.code } }] })
  res.writeHead(429, { 'content-type': 'application/json', 'retry-after': String(retryAfterSec), 'content-length': Buffer.byteLength(body) }).end(body)
}

export class RegistryMirror {
  private readonly components: RegistryMirrorComponents
  private readonly options: UpstreamOptions
  private readonly agent: Agent
  private readonly dispatcher: Dispatcher
  /** Registries that could not be reached, for `dfdaemon doctor`. */
  readonly problems = new UpstreamProblems()

  constructor(components: RegistryMirrorComponents, options: UpstreamOptions) {
    this.components = components
    this.options = options
    // The registry is reached under the same destination policy as every origin (source.allow).
    this.agent = new Agent({ connect: policyConnect(options.policy, { timeout: 10_000, ca: trustedCAs(options.caFile) }), headersTimeout: 30_000, bodyTimeout: 30_000 })
    this.dispatcher = this.agent.compose(interceptors.redirect({ maxRedirections: 5 }))
  }

  async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://mirror')
    let release: (() => void) | undefined
    try {
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'application/json' })
        res.end(JSON.stringify({ errors: [{ code: 'UNSUPPORTED', message: 'the mirror is read-only: push to the registry itself' }] }))
        return
      }
      // Clients that cannot send containerd's `ns` parameter (podman, skopeo, buildah) name the
      // upstream in a path prefix instead: /v2/naiad-ns/HOST[_PORT]/<repo>/... (a reference
      // may not hold a colon there, so the port follows an underscore).
      const prefixed = /^\/v2\/naiad-ns\/([a-z0-9.-]+?)(?:_(\d{1,5}))?(\/.*)$/.exec(url.pathname)
      if (prefixed !== null) url.pathname = `/v2${prefixed[3]}`
      const ns = prefixed === null ? url.searchParams.get('ns') : `${prefixed[1]}${prefixed[2] === undefined ? '' : `:${prefixed[2]}`}`
      const route: UpstreamRoute = prefixed !== null ? { prefix: `/v2/naiad-ns/${prefixed[1]}${prefixed[2] === undefined ? '' : `_${prefixed[2]}`}` } : ns !== null ? { ns } : {}
      const base = upstreamBase(ns, this.options)
      const qos = this.components.qos
      if (qos?.active === true) {
        // The mirror serves pulls that a container start waits for: always on-demand.
        const admission = qos.admit({ tenantKey: `${base}${url.pathname}`, priority: 'on-demand' })
        if (!admission.admitted) {
          sendTooManyRequests(res, admission.retryAfterSec, admission.reason)
          return
        }
        release = admission.release
      }
      const blob = BLOB.exec(url.pathname)
      if (blob !== null && req.method === 'GET') {
        await this.blob(req, res, base, blob[1], blob[2])
        return
      }
      if ((url.pathname === '/v2/' || url.pathname === '/v2') && ns === null) {
        await this.ping(req, res, base)
        return
      }
      if (url.pathname === '/v2/' || url.pathname === '/v2' || MANIFEST.test(url.pathname) || blob !== null) {
        await this.passThrough(req, res, `${base}${url.pathname}`)
        return
      }
      if (LISTING.some((r) => r.test(url.pathname))) {
        // The query goes on (pagination, the referrers filter), without the mirror's own `ns`.
        url.searchParams.delete('ns')
        await this.passThrough(req, res, `${base}${url.pathname}${url.search}`, route)
        return
      }
      res.writeHead(404, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ errors: [{ code: 'NAME_UNKNOWN', message: `the mirror serves the pull API, tags, referrers and the catalog, not ${url.pathname}` }] }))
    } catch (err) {
      this.components.logger.warn({ path: url.pathname, code: (err as { code?: unknown }).code, err: (err as Error).message }, 'mirror request failed')
      sendRegistryError(res, err)
    } finally {
      release?.()
    }
  }

  /**
   * The version check of clients that name no upstream (podman and skopeo ping the mirror's
   * root before sending the `naiad-ns/` path). The default registry's answer carries its
   * auth challenge; when it cannot be reached the mirror still speaks v2 itself.
   */
  private async ping(req: IncomingMessage, res: ServerResponse, base: string): Promise<void> {
    try {
      await this.passThrough(req, res, `${base}/v2/`)
    } catch (err) {
      if (res.headersSent) throw err
      res.writeHead(200, { 'content-type': 'application/json', 'docker-distribution-api-version': 'registry/2.0', 'content-length': 2 }).end('{}')
    }
  }

  private authorization(req: IncomingMessage, base: string): string | undefined {
    return req.headers.authorization ?? this.options.credentials.get(new URL(base).host)
  }

  private async upstream(method: 'GET' | 'HEAD', target: string, headers: Record<string, string>, signal?: AbortSignal): Promise<Dispatcher.ResponseData> {
    const u = new URL(target)
    try {
      const res = await this.dispatcher.request({ origin: u.origin, path: u.pathname + u.search, method, headers, signal })
      this.problems.clear(u.host)
      return res
    } catch (err) {
      const denied = destinationDenied(err)
      if (denied !== undefined) throw denied
      const e = upstreamError(u, err)
      this.problems.record(u.host, e)
      throw e
    }
  }

  /**
   * Relays a request to the registry and its answer to the client, headers and all. With
   * `route`, a pagination Link the registry sends is pointed back through the mirror at the
   * same registry (the client follows it against the mirror).
   */
  private async passThrough(req: IncomingMessage, res: ServerResponse, target: string, route?: UpstreamRoute): Promise<void> {
    const headers = requestHeaders(req.headers)
    const auth = this.authorization(req, target)
    if (auth !== undefined) headers.authorization = auth
    const up = await this.upstream(req.method as 'GET' | 'HEAD', target, headers)
    const out = responseHeaders(up.headers)
    if (route !== undefined && typeof out.link === 'string') out.link = mirrorLink(out.link, new URL(target).origin, route)
    res.writeHead(up.statusCode, out)
    if (req.method === 'HEAD') {
      discard(up.body)
      res.end()
      return
    }
    await pipeline(up.body, res)
  }

  /**
   * A blob through the swarm. The registry is asked first (HEAD, with the client's own
   * credentials) whether this client may read the blob: only then does the node join the
   * task, so no node gets a private blob's bytes from its peers that it could not have
   * pulled itself. The bytes go to the client as they become servable: each piece once it
   * is verified against the seed's digest, the last one only once the whole blob matched
   * its registry digest — a failed download cuts the connection before the last byte, so no
   * client ever gets a complete wrong blob. The status line waits for the first servable
   * byte, so a download that fails before any gets a clean registry error.
   */
  private async blob(req: IncomingMessage, res: ServerResponse, base: string, repo: string, digest: string): Promise<void> {
    const target = `${base}/v2/${repo}/blobs/${digest}`
    const headers: Record<string, string> = {}
    const auth = this.authorization(req, base)
    if (auth !== undefined) headers.authorization = auth
    // Without a scheduler there is no swarm to join, but a blob already in the cache is
    // still served from it (after the same permission check): relaying it again would cost
    // the registry the bytes the cache exists to save.
    if (!this.components.swarmAvailable() && req.headers.range === undefined && !this.cached(target, digest)) {
      await this.relayVerified(res, target, headers, digest)
      return
    }
    const check = await this.upstream('HEAD', target, { ...headers, accept: '*/*' })
    discard(check.body)
    if (check.statusCode !== 200) {
      await this.refusal(res, target, headers, check)
      return
    }
    const request: DownloadRequest = { url: target, headers, digest, priority: 'on-demand' }
    const { store, tasks } = this.components
    // The download runs to the end whatever the client does: it fills the cache for the next pull.
    const handle = tasks.open(request, { keepRunning: true })
    const closed = new AbortController()
    const onClose = (): void => closed.abort(new NaiadError('PROTO_ERR_ABORTED', 'the client closed the connection'))
    res.once('close', onClose)
    try {
      let size = Number(check.headers['content-length'])
      if (!Number.isSafeInteger(size) || size < 0) size = (await handle.done).contentLength
      const range = parseRangeHeader(req.headers.range, size)
      if (range.kind === 'unsatisfiable') {
        res.writeHead(416, { 'content-range': contentRange(range, size) }).end()
        return
      }
      const [start, end] = range.kind === 'partial' ? [range.start, range.end] : [0, size - 1]
      // The status line goes out with the first byte that may be sent (or at the end).
      await waitServable(handle, start, closed.signal)
      const length = handle.progress().totalBytes
      if (length >= 0 && length !== size) throw new NaiadError('DFD_ERR_ORIGIN_CHANGED', `registry announced ${size} bytes for ${digest}, the swarm has ${length}`)
      if (range.kind === 'partial') {
        res.writeHead(206, { ...blobHeaders(digest, check.headers), 'content-length': end - start + 1, 'content-range': contentRange(range, size) })
      } else {
        res.writeHead(200, { ...blobHeaders(digest, check.headers), 'content-length': size })
      }
      if (end >= start) await sendServable(store, handle, start, end, res, closed.signal)
      res.end()
    } catch (err) {
      if (res.headersSent) res.destroy()
      throw err
    } finally {
      res.off('close', onClose)
      handle.release()
    }
  }

  /**
   * The registry said no to the blob (401 with its challenge, 403, 404, …): the client gets
   * the registry's own answer, status, headers and error body. A HEAD has no body, so the
   * mirror asks once more with GET; should that one succeed after all (the blob appeared),
   * its bytes are not relayed unverified: the client gets the HEAD's status in the
   * registry's error shape.
   */
  private async refusal(res: ServerResponse, target: string, headers: Record<string, string>, check: Dispatcher.ResponseData): Promise<void> {
    const again = await this.upstream('GET', target, headers).catch(() => undefined)
    if (again !== undefined && again.statusCode >= 300) {
      res.writeHead(again.statusCode, responseHeaders(again.headers))
      await pipeline(again.body, res)
      return
    }
    if (again !== undefined) discard(again.body)
    const body = JSON.stringify({ errors: [{ code: check.statusCode === 401 ? 'UNAUTHORIZED' : 'BLOB_UNKNOWN', message: `registry answered ${check.statusCode}` }] })
    res.writeHead(check.statusCode, { ...responseHeaders(check.headers, ['content-length']), 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }).end(body)
  }

  private cached(url: string, digest: string): boolean {
    const task = this.components.store.getTask(TaskManager.validate({ url, headers: {}, digest }))
    return task?.complete === true
  }

  /**
   * With the scheduler unreachable there is no swarm to join: the blob goes straight from
   * the registry to the client, hashed on the way, and the body ends only when the hash
   * matches the digest (otherwise the connection is cut before the last bytes). Whatever
   * the registry answers instead (401 with its challenge, 404) reaches the client as is.
   */
  private async relayVerified(res: ServerResponse, target: string, headers: Record<string, string>, digest: string): Promise<void> {
    const up = await this.upstream('GET', target, headers)
    const out = responseHeaders(up.headers)
    if (up.statusCode !== 200) {
      res.writeHead(up.statusCode, out)
      await pipeline(up.body, res)
      return
    }
    res.writeHead(200, { ...out, 'docker-content-digest': digest })
    const hash = createHash('sha256')
    let held: Buffer | undefined
    try {
      for await (const chunk of up.body as AsyncIterable<Buffer>) {
        hash.update(chunk)
        if (held !== undefined && !res.write(held)) await once(res, 'drain')
        held = chunk
      }
    } catch (err) {
      res.destroy()
      throw new NaiadError('DFD_ERR_ORIGIN_TRUNCATED', `registry body for ${digest} broke off: ${(err as Error).message}`, { cause: err })
    }
    const got = `sha256:${hash.digest('hex')}`
    if (got !== digest) {
      res.destroy()
      throw new NaiadError('DFD_ERR_DIGEST_MISMATCH', `registry sent ${got} for ${digest}`)
    }
    res.end(held)
  }

  async close(): Promise<void> {
    await this.agent.close()
  }
}
