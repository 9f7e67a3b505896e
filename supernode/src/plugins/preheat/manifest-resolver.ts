// Resolves an image reference to the blobs a pull will fetch: the manifest (through an index
// to the wanted platform), then its config and layers. Speaks just enough of the registry
// auth dance (Basic, and a Bearer token from a `WWW-Authenticate` challenge) to read
// manifests; the same Authorization goes with every blob download.

import { request, type Dispatcher } from 'undici'
import { NaiadError } from '@naiad/proto'
import { destinationDenied } from '@naiad/peer'

import type { ImageRef } from './image-ref.ts'

const INDEX_TYPES = ['application/vnd.oci.image.index.v1+json', 'application/vnd.docker.distribution.manifest.list.v2+json']
const MANIFEST_TYPES = ['application/vnd.oci.image.manifest.v1+json', 'application/vnd.docker.distribution.manifest.v2+json']
const ACCEPT = [...INDEX_TYPES, ...MANIFEST_TYPES].join(', ')
const TIMEOUT_MS = 30_000
const MAX_MANIFEST = 4 * 1024 * 1024

export interface ResolvedBlob {
  kind: 'config' | 'layer'
  digest: string
  size: number
}

export interface Resolution {
  blobs: ResolvedBlob[]
  /** The Authorization header the manifest was read with (Basic or Bearer), if any. */
  authorization: string | undefined
}

interface Descriptor { mediaType?: string; digest?: string; size?: number; platform?: { os?: string; architecture?: string; variant?: string } }
interface ManifestDoc { mediaType?: string; manifests?: Descriptor[]; config?: Descriptor; layers?: Descriptor[] }

export interface ResolveOptions {
  headers: Record<string, string>
  platform: string
  signal?: AbortSignal
  /** Where requests go (the supernode's source policy); undici's global dispatcher without one. */
  dispatcher?: Dispatcher
}

function registryError(ref: ImageRef, what: string, err?: unknown): NaiadError {
  return new NaiadError('NFS_ERR_REGISTRY', `${ref.host}/${ref.repo}: ${what}`, err === undefined ? undefined : { cause: err })
}

async function get(url: string, headers: Record<string, string>, ref: ImageRef, signal?: AbortSignal, dispatcher?: Dispatcher): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: Buffer }> {
  const timeout = AbortSignal.timeout(TIMEOUT_MS)
  const both = signal === undefined ? timeout : AbortSignal.any([signal, timeout])
  try {
    const res = await request(url, { method: 'GET', headers, signal: both, dispatcher })
    const chunks: Buffer[] = []
    let n = 0
    for await (const c of res.body as AsyncIterable<Buffer>) {
      n += c.length
      if (n > MAX_MANIFEST) {
        res.body.destroy()
        throw registryError(ref, `answer from ${url} exceeds ${MAX_MANIFEST} bytes`)
      }
      chunks.push(c)
    }
    return { status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) }
  } catch (err) {
    if (err instanceof NaiadError) throw err
    const refused = destinationDenied(err)
    if (refused !== undefined) throw refused
    throw registryError(ref, `cannot reach ${url}: ${(err as { code?: string }).code ?? (err as Error).message}`, err)
  }
}

/** Parses `Bearer realm="…",service="…",scope="…"`. */
function parseChallenge(header: string): Record<string, string> | undefined {
  const m = /^Bearer\s+(.*)$/i.exec(header.trim())
  if (m === null) return undefined
  const out: Record<string, string> = {}
  for (const p of m[1].matchAll(/(\w+)="([^"]*)"/g)) out[p[1].toLowerCase()] = p[2]
  return out
}

async function bearerToken(challenge: Record<string, string>, ref: ImageRef, basic: string | undefined, signal?: AbortSignal, dispatcher?: Dispatcher): Promise<string> {
  if (challenge.realm === undefined) throw registryError(ref, 'the registry asked for a Bearer token without naming its realm')
  const u = new URL(challenge.realm)
  if (challenge.service !== undefined) u.searchParams.set('service', challenge.service)
  u.searchParams.set('scope', challenge.scope ?? `repository:${ref.repo}:pull`)
  const res = await get(u.toString(), basic === undefined ? {} : { authorization: basic }, ref, signal, dispatcher)
  if (res.status !== 200) throw registryError(ref, `token service ${u.origin} answered ${res.status}`)
  let doc: { token?: string; access_token?: string }
  try {
    doc = JSON.parse(res.body.toString('utf8')) as typeof doc
  } catch (err) {
    throw registryError(ref, 'token service answered with malformed JSON', err)
  }
  const token = doc.token ?? doc.access_token
  if (token === undefined) throw registryError(ref, 'token service answered without a token')
  return `Bearer ${token}`
}

function parsePlatform(p: string): { os: string; architecture: string; variant?: string } {
  const [os, architecture, variant] = p.split('/')
  if (os === undefined || os === '' || architecture === undefined || architecture === '') {
    throw new NaiadError('SN_ERR_BAD_REQUEST', `bad platform "${p}": expected OS/ARCH[/VARIANT], e.g. linux/amd64`)
  }
  return { os, architecture, variant }
}

export function checkPlatform(p: string): void {
  parsePlatform(p)
}

export async function resolveImage(ref: ImageRef, options: ResolveOptions): Promise<Resolution> {
  const platform = parsePlatform(options.platform)
  const headers: Record<string, string> = {}
  for (const [k, v] of Object.entries(options.headers)) headers[k.toLowerCase()] = v
  let authorization = headers.authorization
  const basic = authorization?.startsWith('Basic ') === true ? authorization : undefined

  const fetchManifest = async (reference: string): Promise<ManifestDoc> => {
    const url = `${ref.base}/v2/${ref.repo}/manifests/${reference}`
    const send = (): Record<string, string> => ({ ...headers, accept: ACCEPT, ...(authorization === undefined ? {} : { authorization }) })
    let res = await get(url, send(), ref, options.signal, options.dispatcher)
    const challengeHeader = res.headers['www-authenticate']
    if (res.status === 401 && typeof challengeHeader === 'string') {
      const challenge = parseChallenge(challengeHeader)
      if (challenge !== undefined) {
        authorization = await bearerToken(challenge, ref, basic, options.signal, options.dispatcher)
        res = await get(url, send(), ref, options.signal, options.dispatcher)
      }
    }
    if (res.status !== 200) throw registryError(ref, `registry answered ${res.status} for manifest ${reference}`)
    try {
      return JSON.parse(res.body.toString('utf8')) as ManifestDoc
    } catch (err) {
      throw new NaiadError('NFS_ERR_BAD_IMAGE', `${ref.host}/${ref.repo}: manifest ${reference} is not JSON`, { cause: err })
    }
  }

  let doc = await fetchManifest(ref.reference)
  if (doc.manifests !== undefined) {
    const match = doc.manifests.find((m) => m.platform?.os === platform.os && m.platform.architecture === platform.architecture &&
      (platform.variant === undefined || m.platform.variant === platform.variant))
    if (match?.digest === undefined) {
      const have = doc.manifests.map((m) => [m.platform?.os, m.platform?.architecture, m.platform?.variant].filter((x) => x !== undefined).join('/')).join(', ')
      throw new NaiadError('NFS_ERR_BAD_IMAGE', `${ref.host}/${ref.repo}:${ref.reference} has no manifest for ${options.platform} (it has: ${have})`)
    }
    doc = await fetchManifest(match.digest)
  }
  if (doc.config?.digest === undefined || !Array.isArray(doc.layers)) {
    throw new NaiadError('NFS_ERR_BAD_IMAGE', `${ref.host}/${ref.repo}:${ref.reference}: manifest has no config or layers (media type ${doc.mediaType ?? 'unknown'})`)
  }
  const blobs: ResolvedBlob[] = [{ kind: 'config', digest: doc.config.digest, size: doc.config.size ?? -1 }]
  for (const l of doc.layers) {
    if (l.digest === undefined) throw new NaiadError('NFS_ERR_BAD_IMAGE', `${ref.host}/${ref.repo}: a layer has no digest`)
    if (blobs.some((b) => b.digest === l.digest)) continue
    blobs.push({ kind: 'layer', digest: l.digest, size: l.size ?? -1 })
  }
  for (const b of blobs) {
    if (!/^sha256:[0-9a-f]{64}$/.test(b.digest)) throw new NaiadError('NFS_ERR_BAD_IMAGE', `${ref.host}/${ref.repo}: unsupported blob digest ${b.digest}`)
  }
  return { blobs, authorization }
}
