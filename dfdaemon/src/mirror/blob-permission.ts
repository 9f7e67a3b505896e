// The registry's permission check for every path that can hand out a registry blob's
// bytes from this node's cache or its peers, besides the mirror (which does its own): the
// local API's downloads and content routes (dfget, nydus-fs) and the forward proxy. A blob
// URL (`…/v2/<repo>/blobs/sha256:…`) is served only after the registry answered a HEAD with
// this request's own credentials (or the node's configured ones, exactly as the mirror
// uses them) with 200: nobody gets a private blob through the daemon that they could not
// have pulled from the registry themselves. Other URLs are not registry blobs and pass.

import { createHash } from 'node:crypto'

import { Agent, interceptors, type Dispatcher } from 'undici'
import { NaiadError } from '@naiad/proto'

import { destinationDenied, discard, policyConnect, trustedCAs, type DestinationPolicy, type PieceStore } from '@naiad/peer'

const BLOB_PATH = /\/v2\/.+\/blobs\/sha256:[0-9a-f]{64}$/

/** Is `url` a registry blob (the OCI distribution API's blob path)? */
export function isRegistryBlobUrl(url: string): boolean {
  try {
    return BLOB_PATH.test(new URL(url).pathname)
  } catch {
    return false
  }
}

export interface BlobPermissionOptions {
  /** Docker config.json credentials by registry host (registry.auth-file), used when a request carries none. */
  credentials: Map<string, string>
  caFile?: string
  policy?: DestinationPolicy
  timeoutMs: number
  /** How long a registry's yes is remembered for the same URL and credentials (lazy reads ask per chunk). */
  cacheMs?: number
}

/** Answers remembered at most. */
const MAX_CACHED = 10_000

function header(headers: Record<string, string | string[] | undefined>, name: string): string | undefined {
  for (const [k, v] of Object.entries(headers)) if (k.toLowerCase() === name) return Array.isArray(v) ? v[0] : v
  return undefined
}

export class BlobPermission {
  private readonly agent: Agent
  private readonly dispatcher: Dispatcher
  private readonly options: BlobPermissionOptions
  /** hash(URL, credentials) → until when the registry's 200 counts. */
  private readonly granted = new Map<string, number>()

  constructor(options: BlobPermissionOptions) {
    this.options = options
    this.agent = new Agent({
      connect: policyConnect(options.policy, { timeout: options.timeoutMs, ca: trustedCAs(options.caFile) }),
      headersTimeout: options.timeoutMs,
      bodyTimeout: options.timeoutMs
    })
    this.dispatcher = this.agent.compose(interceptors.redirect({ maxRedirections: 5 }))
  }

  /**
   * Before a download of `url` with `headers` is started or joined: throws DFD_ERR_BLOB_DENIED
   * when `url` is a registry blob the registry does not let these credentials read.
   */
  async check(url: string, headers: Record<string, string | string[] | undefined>, signal?: AbortSignal): Promise<void> {
    if (!isRegistryBlobUrl(url)) return
    const u = new URL(url)
    const auth = header(headers, 'authorization') ?? this.options.credentials.get(u.host)
    const key = createHash('sha256').update(`${url}\0${auth ?? ''}`).digest('hex')
    if ((this.granted.get(key) ?? 0) > Date.now()) return
    let status: number
    try {
      const res = await this.dispatcher.request({
        origin: u.origin, path: u.pathname + u.search, method: 'HEAD',
        headers: { accept: '*/*', ...(auth === undefined ? {} : { authorization: auth }) },
        signal: signal === undefined ? AbortSignal.timeout(this.options.timeoutMs) : AbortSignal.any([signal, AbortSignal.timeout(this.options.timeoutMs)])
      })
      discard(res.body)
      status = res.statusCode
    } catch (err) {
      const refused = destinationDenied(err)
      if (refused !== undefined) throw refused
      throw new NaiadError('DFD_ERR_ORIGIN_UNREACHABLE', `cannot ask registry ${u.host} whether this client may read the blob: ${(err as Error).message}`, { cause: err })
    }
    if (status !== 200) {
      throw new NaiadError('DFD_ERR_BLOB_DENIED', `registry ${u.host} answered ${status} for ${u.pathname} with ${auth === undefined ? 'no credentials' : 'these credentials'}: the daemon does not serve it`)
    }
    this.granted.delete(key)
    if (this.granted.size >= MAX_CACHED) this.granted.delete(this.granted.keys().next().value!)
    this.granted.set(key, Date.now() + (this.options.cacheMs ?? 60_000))
  }

  /** The content route: checks the stored task's URL with the request's headers. */
  async checkTask(store: PieceStore, taskId: string, headers: Record<string, string | string[] | undefined>, signal?: AbortSignal): Promise<void> {
    const task = store.getTask(taskId)
    if (task === undefined) return // the route answers 404 itself
    await this.check(task.url, headers, signal)
  }

  async close(): Promise<void> {
    await this.agent.close()
  }
}
