// The one client of the OCI distribution API (nydus-fs, preheat): manifests and indexes,
// blobs (whole, ranged, streamed), referrers, pushes and cross-repository mounts.
// Authentication: a fixed Authorization value (Basic from `NAIAD_REGISTRY_AUTH=user:pass`
// or the `auth` option), and Bearer token challenges answered by fetching a token from the
// realm (anonymously or with the Basic credentials), cached per scope until it expires.
// Every request has a connect timeout and a header/body idle timeout; small requests also
// an overall deadline.

import { createHash } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { readFileSync } from 'node:fs'
import { Transform } from 'node:stream'
import { getCACertificates } from 'node:tls'

import { Agent, interceptors, type buildConnector, type Dispatcher } from 'undici'
import { NaiadError } from '@naiad/proto/contracts'

import { authFromEnv } from '../auth/credentials.ts'
import { parseChallenge, TokenCache, type Challenge } from '../auth/challenge.ts'
import { isIndex, MANIFEST_ACCEPT, OCI_MEDIA_TYPES, parseIndex, parseManifest, selectPlatform, type Descriptor, type OciIndex, type OciManifest } from '../manifest/manifest.ts'
import { refReference, registryBase, type ImageRef } from '../reference/reference.ts'

export interface RegistryClientOptions {
  /** Talk HTTP instead of HTTPS (loopback and insecure registries). */
  plainHttp: boolean
  /** Authorization header value (`Basic …` or `Bearer …`); null for none; by default from NAIAD_REGISTRY_AUTH=user:pass. */
  auth?: string | null
  /** Headers sent with every request besides Authorization (a preheat job's own). */
  headers?: Record<string, string>
  /** Connect timeout, header wait and longest gap between body bytes; default 30 s. */
  timeoutMs?: number
  /** Extra PEM CA certificates trusted for HTTPS, besides Node's and the system's. */
  caFile?: string
  /**
   * How connections are made (a source policy's connector); it gets the timeout and CAs
   * itself. A typed error it raises (a refused destination) reaches the caller as it is.
   */
  connect?: buildConnector.connector
}

/** A registry answered with an unexpected HTTP status. */
export class RegistryError extends NaiadError {
  readonly httpStatus: number

  constructor(httpStatus: number, message: string, options?: { cause?: unknown }) {
    super('OCI_ERR_REGISTRY', message, options)
    this.httpStatus = httpStatus
  }
}

/** Largest manifest or index accepted. */
const MAX_MANIFEST_BYTES = 4 * 1024 * 1024

const DEFAULT_TIMEOUT_MS = 30_000
const RETRIES = 2

/** The tag that stands in for the referrers API: `sha256-<hex>` (OCI distribution spec 1.1). */
export function referrersTag(digest: string): string {
  return digest.replace(':', '-')
}

export function sha256Digest(data: Uint8Array): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`
}

interface RequestSpec {
  method: 'GET' | 'HEAD' | 'POST' | 'PUT' | 'PATCH' | 'DELETE'
  /** Path and query, or an absolute URL (upload locations). */
  path: string
  headers?: Record<string, string>
  /** Made again for each attempt, so a retried upload re-reads its file. */
  body?: () => Buffer | NodeJS.ReadableStream
  /** Token scopes this request needs, e.g. `repository:foo:pull`. */
  scopes: string[]
  signal?: AbortSignal
  /** Overall deadline for requests whose body is read at once. */
  deadline?: boolean
  /** Whether it may be retried on connection failures and 5xx. */
  idempotent?: boolean
}

/** A typed error somewhere in the cause chain (a connector's refusal), if there is one. */
function typedCause(err: unknown): NaiadError | undefined {
  for (let e = err, depth = 0; e !== undefined && e !== null && depth < 5; e = (e as { cause?: unknown }).cause, depth++) {
    if (e instanceof NaiadError) return e
  }
  return undefined
}

function describe(err: unknown): string {
  const e = err as { code?: string; message?: string; cause?: { code?: string; message?: string } }
  return e.cause?.code ?? e.code ?? e.cause?.message ?? e.message ?? String(err)
}

function discard(body: Dispatcher.ResponseData['body']): void {
  body.on('error', () => {})
  body.destroy()
}

async function errorText(res: Dispatcher.ResponseData): Promise<string> {
  try {
    const text = (await res.body.text()).slice(0, 2000)
    const doc = JSON.parse(text) as { errors?: Array<{ code?: string; message?: string }> }
    const e = doc.errors?.[0]
    if (e !== undefined) return `: ${e.code ?? ''}${e.message !== undefined ? ` ${e.message}` : ''}`
    return ''
  } catch {
    return ''
  }
}

export class RegistryClient {
  readonly registry: string
  readonly baseUrl: string
  private readonly auth: string | undefined
  private readonly timeoutMs: number
  private readonly headers: Record<string, string>
  private readonly agent: Agent
  private readonly dispatcher: Dispatcher
  private readonly tokens = new TokenCache()
  /** Set once the registry asked for Bearer tokens: then every request gets one first. */
  private bearer: Challenge | undefined

  constructor(registry: string, options: RegistryClientOptions) {
    this.registry = registry
    this.baseUrl = registryBase(registry, { plainHttp: options.plainHttp })
    this.auth = options.auth === null ? undefined : options.auth ?? authFromEnv()
    this.headers = options.headers ?? {}
    this.timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS
    let connect: Agent.Options['connect'] = options.connect
    if (connect === undefined) {
      const ca = [...getCACertificates('default'), ...getCACertificates('system')]
      if (options.caFile !== undefined && options.caFile !== '') {
        try {
          ca.push(readFileSync(options.caFile, 'utf8'))
        } catch (err) {
          throw new NaiadError('PROTO_ERR_BAD_CONFIG', `cannot read CA file ${options.caFile}: ${(err as Error).message}`, { cause: err })
        }
      }
      connect = { timeout: this.timeoutMs, ca }
    }
    this.agent = new Agent({
      connect,
      headersTimeout: this.timeoutMs,
      bodyTimeout: this.timeoutMs
    })
    this.dispatcher = this.agent.compose(interceptors.redirect({ maxRedirections: 5 }))
  }

  blobUrl(repository: string, digest: string): string {
    return `${this.baseUrl}/v2/${repository}/blobs/${digest}`
  }

  /**
   * The Authorization header a third party (dfdaemon) should send for blobs of `repository`:
   * the Bearer token when the registry uses tokens, else the configured value.
   */
  async authorizationFor(repository: string, signal?: AbortSignal): Promise<string | undefined> {
    if (this.bearer === undefined) return this.auth
    return `Bearer ${await this.token([`repository:${repository}:pull`], this.bearer, signal)}`
  }

  async close(): Promise<void> {
    await this.agent.close()
  }

  async getManifest(repository: string, reference: string, accept: string[] = MANIFEST_ACCEPT, signal?: AbortSignal): Promise<{ digest: string; mediaType: string; body: Buffer }> {
    const res = await this.request({
      method: 'GET', path: `/v2/${repository}/manifests/${reference}`, headers: { accept: accept.join(', ') },
      scopes: [`repository:${repository}:pull`], signal, deadline: true, idempotent: true
    })
    if (res.statusCode !== 200) throw await this.statusError(res, `manifest ${repository}:${reference}`)
    const parts: Buffer[] = []
    let n = 0
    for await (const chunk of res.body as AsyncIterable<Buffer>) {
      n += chunk.length
      if (n > MAX_MANIFEST_BYTES) {
        discard(res.body)
        throw new NaiadError('OCI_ERR_BAD_MANIFEST', `manifest ${repository}:${reference} is larger than ${MAX_MANIFEST_BYTES / 1024 / 1024} MiB`)
      }
      parts.push(chunk)
    }
    const body = Buffer.concat(parts)
    const digest = sha256Digest(body)
    if (reference.startsWith('sha256:') && digest !== reference) {
      throw new NaiadError('OCI_ERR_DIGEST', `manifest ${repository}@${reference} does not match its digest (got ${digest})`)
    }
    const ct = res.headers['content-type']
    const headerType = (Array.isArray(ct) ? ct[0] : ct)?.split(';')[0].trim()
    let mediaType = headerType ?? ''
    try {
      const declared = (JSON.parse(body.toString('utf8')) as { mediaType?: unknown }).mediaType
      if (typeof declared === 'string' && declared !== '') mediaType = declared
    } catch { /* validated by the caller's parser */ }
    return { digest, mediaType, body }
  }

  /**
   * The image manifest `ref` names; from an index, the platform's entry (`prefer`red ones first),
   * or the only entry `prefer` accepts.
   */
  async resolveImage(ref: ImageRef, platform = 'linux/amd64', signal?: AbortSignal, prefer?: (d: Descriptor) => boolean): Promise<{ digest: string; manifest: OciManifest; body: Buffer }> {
    let got = await this.getManifest(ref.repository, refReference(ref), MANIFEST_ACCEPT, signal)
    if (isIndex(got.mediaType, got.body)) {
      const index = parseIndex(got.body)
      // One preferred entry (a converted image's index is single-platform) wins whatever the platform.
      const preferred = prefer === undefined ? [] : index.manifests.filter(prefer)
      const entry = preferred.length === 1 ? preferred[0] : selectPlatform(index, platform, prefer)
      got = await this.getManifest(ref.repository, entry.digest, MANIFEST_ACCEPT, signal)
      if (isIndex(got.mediaType, got.body)) throw new NaiadError('OCI_ERR_BAD_MANIFEST', `index entry ${entry.digest} is itself an index`)
    }
    return { digest: got.digest, manifest: parseManifest(got.body), body: got.body }
  }

  /** A whole blob (verified against `digest`), or an inclusive byte range of it (not verifiable here). */
  async getBlob(repository: string, digest: string, options: { range?: { start: number; end: number }; signal?: AbortSignal } = {}): Promise<Buffer> {
    const { range, signal } = options
    if (range !== undefined && (!Number.isSafeInteger(range.start) || !Number.isSafeInteger(range.end) || range.start < 0 || range.end < range.start)) {
      throw new NaiadError('OCI_ERR_REGISTRY', `bad byte range ${range.start}-${range.end}`)
    }
    const res = await this.request({
      method: 'GET', path: `/v2/${repository}/blobs/${digest}`,
      headers: range === undefined ? {} : { range: `bytes=${range.start}-${range.end}` },
      scopes: [`repository:${repository}:pull`], signal, idempotent: true
    })
    if (res.statusCode !== 200 && res.statusCode !== 206) throw await this.statusError(res, `blob ${repository}@${digest}`)
    if (range === undefined) {
      const data = Buffer.from(await res.body.arrayBuffer())
      const got = sha256Digest(data)
      if (got !== digest) throw new NaiadError('OCI_ERR_DIGEST', `blob ${repository}@${digest} does not match its digest (got ${got})`)
      return data
    }
    const want = range.end - range.start + 1
    const parts: Buffer[] = []
    let have = 0
    // A registry that ignores Range answers 200 with the whole blob: skip to the range.
    let skip = res.statusCode === 200 ? range.start : 0
    for await (const c of res.body as AsyncIterable<Buffer>) {
      let chunk = c
      if (skip > 0) {
        const n = Math.min(skip, chunk.length)
        skip -= n
        chunk = chunk.subarray(n)
      }
      parts.push(chunk.subarray(0, want - have))
      have += Math.min(chunk.length, want - have)
      if (have >= want) break
    }
    if (have >= want) discard(res.body)
    if (have !== want) throw new RegistryError(res.statusCode, `blob ${repository}@${digest}: range ${range.start}-${range.end} returned ${have} of ${want} bytes`)
    return Buffer.concat(parts)
  }

  /**
   * Streams a blob. The iterator throws OCI_ERR_DIGEST at the end when the bytes do not
   * match `digest`, and OCI_ERR_REGISTRY when the body is shorter than announced.
   */
  async openBlob(repository: string, digest: string, signal?: AbortSignal): Promise<{ size: number; body: AsyncIterable<Buffer> }> {
    const res = await this.request({
      method: 'GET', path: `/v2/${repository}/blobs/${digest}`, scopes: [`repository:${repository}:pull`], signal, idempotent: true
    })
    if (res.statusCode !== 200) throw await this.statusError(res, `blob ${repository}@${digest}`)
    const len = res.headers['content-length']
    const size = typeof len === 'string' && /^\d+$/.test(len) ? Number(len) : -1
    const raw = res.body as AsyncIterable<Buffer>
    async function* verified(): AsyncGenerator<Buffer> {
      const h = createHash('sha256')
      let n = 0
      let finished = false
      try {
        for await (const chunk of raw) {
          h.update(chunk)
          n += chunk.length
          yield chunk
        }
        finished = true
      } catch (err) {
        throw err instanceof NaiadError ? err : new NaiadError('OCI_ERR_REGISTRY', `blob ${repository}@${digest}: body failed after ${n} bytes: ${describe(err)}`, { cause: err })
      } finally {
        if (!finished) discard(res.body)
      }
      if (size >= 0 && n !== size) throw new NaiadError('OCI_ERR_REGISTRY', `blob ${repository}@${digest}: body ended after ${n} of ${size} bytes`)
      const got = `sha256:${h.digest('hex')}`
      if (got !== digest) throw new NaiadError('OCI_ERR_DIGEST', `blob ${repository}@${digest} does not match its digest (got ${got})`)
    }
    return { size, body: verified() }
  }

  /**
   * The OCI referrers of `digest` (an index of descriptors), from the referrers API, else from
   * the fallback tag `sha256-<hex>` that registries without the API keep (distribution 2.8).
   * `api` says which answered; an empty index when neither knows any.
   */
  async referrers(repository: string, digest: string, signal?: AbortSignal): Promise<{ api: boolean; index: OciIndex }> {
    const res = await this.request({
      method: 'GET', path: `/v2/${repository}/referrers/${digest}`, headers: { accept: OCI_MEDIA_TYPES.index },
      scopes: [`repository:${repository}:pull`], signal, deadline: true, idempotent: true
    })
    if (res.statusCode === 200) return { api: true, index: parseIndex(Buffer.from(await res.body.arrayBuffer())) }
    discard(res.body)
    try {
      const got = await this.getManifest(repository, referrersTag(digest), [OCI_MEDIA_TYPES.index], signal)
      return { api: false, index: parseIndex(got.body) }
    } catch (err) {
      if (err instanceof RegistryError && err.httpStatus === 404) return { api: false, index: { schemaVersion: 2, mediaType: OCI_MEDIA_TYPES.index, manifests: [] } }
      throw err
    }
  }

  async blobExists(repository: string, digest: string, signal?: AbortSignal): Promise<boolean> {
    const res = await this.request({
      method: 'HEAD', path: `/v2/${repository}/blobs/${digest}`, scopes: [`repository:${repository}:pull`], signal, deadline: true, idempotent: true
    })
    discard(res.body)
    if (res.statusCode === 200) return true
    if (res.statusCode === 404) return false
    throw new RegistryError(res.statusCode, `HEAD blob ${repository}@${digest}: HTTP ${res.statusCode}`)
  }

  /**
   * Makes a blob of `fromRepository` available in `repository` without moving its bytes
   * (cross-repository mount). Returns false when the registry declined; the caller then copies.
   */
  async mountBlob(repository: string, digest: string, fromRepository: string, signal?: AbortSignal): Promise<boolean> {
    if (await this.blobExists(repository, digest, signal)) return true
    const res = await this.request({
      method: 'POST', path: `/v2/${repository}/blobs/uploads/?mount=${encodeURIComponent(digest)}&from=${encodeURIComponent(fromRepository)}`,
      scopes: [`repository:${repository}:pull,push`, `repository:${fromRepository}:pull`], signal, deadline: true
    })
    discard(res.body)
    if (res.statusCode === 201) return true
    if (res.statusCode === 202) {
      // The registry opened an ordinary upload instead; cancel it.
      const loc = res.headers.location
      if (typeof loc === 'string') {
        await this.request({ method: 'DELETE', path: loc, scopes: [`repository:${repository}:pull,push`], signal, deadline: true })
          .then((r) => discard(r.body), () => {})
      }
      return false
    }
    throw new RegistryError(res.statusCode, `mount blob ${digest} from ${fromRepository} into ${repository}: HTTP ${res.statusCode}`)
  }

  async pushBlobFromFile(repository: string, path: string, digest: string, size: number, onProgress?: (sent: number) => void, signal?: AbortSignal): Promise<void> {
    if (await this.blobExists(repository, digest, signal)) {
      onProgress?.(size)
      return
    }
    await this.upload(repository, digest, size, () => {
      let sent = 0
      const counter = new Transform({
        transform(chunk: Buffer, _enc, cb) {
          sent += chunk.length
          onProgress?.(sent)
          cb(null, chunk)
        }
      })
      return createReadStream(path, { highWaterMark: 1024 * 1024 }).on('error', (err) => counter.destroy(err)).pipe(counter)
    }, signal)
  }

  async pushBlob(repository: string, data: Buffer, signal?: AbortSignal): Promise<string> {
    const digest = sha256Digest(data)
    if (!(await this.blobExists(repository, digest, signal))) await this.upload(repository, digest, data.length, () => data, signal)
    return digest
  }

  async pushManifest(repository: string, reference: string, mediaType: string, body: Buffer, signal?: AbortSignal): Promise<string> {
    const res = await this.request({
      method: 'PUT', path: `/v2/${repository}/manifests/${reference}`, headers: { 'content-type': mediaType }, body: () => body,
      scopes: [`repository:${repository}:pull,push`], signal, deadline: true
    })
    if (res.statusCode !== 201 && res.statusCode !== 200) throw await this.statusError(res, `push manifest ${repository}:${reference}`)
    discard(res.body)
    return sha256Digest(body)
  }

  private async upload(repository: string, digest: string, size: number, body: () => Buffer | NodeJS.ReadableStream, signal?: AbortSignal): Promise<void> {
    const scopes = [`repository:${repository}:pull,push`]
    const start = await this.request({ method: 'POST', path: `/v2/${repository}/blobs/uploads/`, scopes, signal, deadline: true })
    if (start.statusCode !== 202) throw await this.statusError(start, `start upload to ${repository}`)
    discard(start.body)
    const loc = start.headers.location
    if (typeof loc !== 'string') throw new RegistryError(start.statusCode, `upload to ${repository}: the registry sent no Location`)
    const url = new URL(loc, this.baseUrl)
    url.searchParams.set('digest', digest)
    const put = await this.request({
      method: 'PUT', path: url.toString(), scopes, signal,
      headers: { 'content-type': 'application/octet-stream', 'content-length': String(size) }, body
    })
    if (put.statusCode !== 201) throw await this.statusError(put, `upload ${digest} to ${repository}`)
    discard(put.body)
  }

  private async statusError(res: Dispatcher.ResponseData, what: string): Promise<RegistryError> {
    const detail = await errorText(res)
    return new RegistryError(res.statusCode, `${what}: registry ${this.registry} answered HTTP ${res.statusCode}${detail}`)
  }

  private async token(scopes: string[], challenge: Challenge, signal?: AbortSignal): Promise<string> {
    const cached = this.tokens.get(scopes)
    if (cached !== undefined) return cached
    const realm = challenge.params.realm
    if (realm === undefined) throw new NaiadError('OCI_ERR_REGISTRY', `registry ${this.registry} asked for a Bearer token without a realm`)
    const url = new URL(realm)
    if (challenge.params.service !== undefined) url.searchParams.set('service', challenge.params.service)
    for (const s of TokenCache.key(scopes).split(' ').filter((x) => x !== '')) url.searchParams.append('scope', s)
    const headers: Record<string, string> = {}
    if (this.auth?.startsWith('Basic ') === true) headers.authorization = this.auth
    let res: Dispatcher.ResponseData
    try {
      res = await this.dispatcher.request({
        origin: url.origin, path: url.pathname + url.search, method: 'GET', headers, signal: this.deadlineSignal(signal)
      })
    } catch (err) {
      throw typedCause(err) ?? new NaiadError('OCI_ERR_REGISTRY', `cannot reach token service ${url.origin}: ${describe(err)}`, { cause: err })
    }
    if (res.statusCode !== 200) throw new RegistryError(res.statusCode, `token service ${url.origin} answered HTTP ${res.statusCode}${await errorText(res)}`)
    let token: string | undefined
    let expiresIn: number | undefined
    try {
      const doc = await res.body.json() as { token?: string; access_token?: string; expires_in?: unknown }
      token = doc.token ?? doc.access_token
      if (typeof doc.expires_in === 'number' && doc.expires_in > 0) expiresIn = doc.expires_in
    } catch (err) {
      throw new NaiadError('OCI_ERR_REGISTRY', `token service ${url.origin} sent a malformed answer`, { cause: err })
    }
    if (typeof token !== 'string' || token === '') throw new NaiadError('OCI_ERR_REGISTRY', `token service ${url.origin} sent no token`)
    this.tokens.set(scopes, token, expiresIn)
    return token
  }

  private deadlineSignal(signal?: AbortSignal): AbortSignal {
    const t = AbortSignal.timeout(this.timeoutMs)
    return signal === undefined ? t : AbortSignal.any([signal, t])
  }

  private async request(spec: RequestSpec): Promise<Dispatcher.ResponseData> {
    const url = new URL(spec.path, this.baseUrl)
    let lastError: unknown
    let authRetried = false
    let scopes = spec.scopes
    for (let attempt = 0; attempt <= RETRIES; attempt++) {
      spec.signal?.throwIfAborted()
      if (attempt > 0) await new Promise((r) => setTimeout(r, 200 * 2 ** attempt))
      const headers: Record<string, string> = { ...this.headers, ...spec.headers }
      if (this.bearer !== undefined) headers.authorization = `Bearer ${await this.token(scopes, this.bearer, spec.signal)}`
      else if (this.auth !== undefined) headers.authorization = this.auth
      let res: Dispatcher.ResponseData
      try {
        res = await this.dispatcher.request({
          origin: url.origin, path: url.pathname + url.search, method: spec.method, headers,
          body: spec.body?.() as Dispatcher.DispatchOptions['body'],
          signal: spec.deadline === true ? this.deadlineSignal(spec.signal) : spec.signal
        })
      } catch (err) {
        if (spec.signal?.aborted === true) throw err
        const typed = typedCause(err)
        if (typed !== undefined) throw typed
        lastError = new NaiadError('OCI_ERR_REGISTRY', `${spec.method} ${url.pathname}: cannot reach registry ${this.registry}: ${describe(err)}`, { cause: err })
        if (spec.idempotent === true) continue
        throw lastError
      }
      if (res.statusCode === 401 && !authRetried) {
        const challenge = parseChallenge(res.headers['www-authenticate'])
        discard(res.body)
        if (challenge?.scheme === 'bearer') {
          authRetried = true
          // A token that was refused (expired, or for too few scopes) is dropped and fetched anew.
          if (this.bearer !== undefined) this.tokens.clear()
          // Realm and service hold for the registry; the scope only for this request.
          this.bearer = { scheme: 'bearer', params: { realm: challenge.params.realm, service: challenge.params.service } }
          if (challenge.params.scope !== undefined) scopes = [...scopes, ...challenge.params.scope.split(' ')]
          attempt--
          continue
        }
        throw new RegistryError(401, `${spec.method} ${url.pathname}: registry ${this.registry} requires authentication${this.auth === undefined ? ' (set NAIAD_REGISTRY_AUTH=user:pass)' : ' and refused the credentials'}`)
      }
      if (spec.idempotent === true && (res.statusCode >= 500 || res.statusCode === 429) && attempt < RETRIES) {
        discard(res.body)
        lastError = new RegistryError(res.statusCode, `${spec.method} ${url.pathname}: registry ${this.registry} answered HTTP ${res.statusCode}`)
        continue
      }
      return res
    }
    throw lastError
  }
}
