// The OCI / Docker v2 manifest and index shapes, their media types, their validation, and
// the choice of a platform's manifest from an index.

import { NaiadError } from '@naiad/proto/contracts'

export const OCI_MEDIA_TYPES = {
  manifest: 'application/vnd.oci.image.manifest.v1+json',
  index: 'application/vnd.oci.image.index.v1+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json'
} as const

export const MANIFEST_ACCEPT = [OCI_MEDIA_TYPES.manifest, OCI_MEDIA_TYPES.index, OCI_MEDIA_TYPES.dockerManifest, OCI_MEDIA_TYPES.dockerList]

export interface Descriptor {
  mediaType: string
  digest: string
  size: number
  annotations?: Record<string, string>
  platform?: { os: string; architecture: string; variant?: string }
  /** Referrers (OCI 1.1): what kind of artifact the manifest is. */
  artifactType?: string
}

export interface OciManifest {
  schemaVersion: number
  mediaType?: string
  config: Descriptor
  layers: Descriptor[]
  annotations?: Record<string, string>
}

export interface OciIndex {
  schemaVersion: number
  mediaType?: string
  manifests: Descriptor[]
}

const DIGEST = /^sha256:[a-f0-9]{64}$/

function checkDescriptor(d: unknown, where: string): Descriptor {
  const x = d as Partial<Descriptor> | null
  if (x === null || typeof x !== 'object' || typeof x.mediaType !== 'string' || typeof x.digest !== 'string' ||
      !DIGEST.test(x.digest) || typeof x.size !== 'number' || !Number.isSafeInteger(x.size) || x.size < 0) {
    throw new NaiadError('OCI_ERR_BAD_MANIFEST', `${where}: malformed descriptor (mediaType, sha256 digest and size are required)`)
  }
  return x as Descriptor
}

function parseJson(body: Buffer, what: string): Record<string, unknown> {
  let doc: unknown
  try {
    doc = JSON.parse(body.toString('utf8'))
  } catch (err) {
    throw new NaiadError('OCI_ERR_BAD_MANIFEST', `${what} is not valid JSON`, { cause: err })
  }
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) throw new NaiadError('OCI_ERR_BAD_MANIFEST', `${what} is not a JSON object`)
  return doc as Record<string, unknown>
}

export function isIndex(mediaType: string, body: Buffer): boolean {
  if (mediaType === OCI_MEDIA_TYPES.index || mediaType === OCI_MEDIA_TYPES.dockerList) return true
  if (mediaType === OCI_MEDIA_TYPES.manifest || mediaType === OCI_MEDIA_TYPES.dockerManifest) return false
  try {
    return Array.isArray((JSON.parse(body.toString('utf8')) as { manifests?: unknown }).manifests)
  } catch {
    return false
  }
}

export function parseManifest(body: Buffer): OciManifest {
  const doc = parseJson(body, 'image manifest')
  if (doc.schemaVersion !== 2) throw new NaiadError('OCI_ERR_BAD_MANIFEST', `image manifest: unsupported schemaVersion ${String(doc.schemaVersion)}`)
  if (!Array.isArray(doc.layers)) throw new NaiadError('OCI_ERR_BAD_MANIFEST', 'image manifest has no layers array')
  const config = checkDescriptor(doc.config, 'image manifest config')
  const layers = doc.layers.map((l, i) => checkDescriptor(l, `image manifest layer ${i}`))
  if (doc.annotations !== undefined && (doc.annotations === null || typeof doc.annotations !== 'object')) {
    throw new NaiadError('OCI_ERR_BAD_MANIFEST', 'image manifest annotations must be an object')
  }
  return { ...(doc as unknown as OciManifest), config, layers }
}

export function parseIndex(body: Buffer): OciIndex {
  const doc = parseJson(body, 'image index')
  if (!Array.isArray(doc.manifests)) throw new NaiadError('OCI_ERR_BAD_MANIFEST', 'image index has no manifests array')
  return { ...(doc as unknown as OciIndex), manifests: doc.manifests.map((m, i) => checkDescriptor(m, `image index entry ${i}`)) }
}

/**
 * Picks the manifest for `os/arch[/variant]` from an index (arm64 without variant matches v8).
 * With `prefer`, entries it accepts go before the others of the same platform (a converted
 * image's index holds a runtime and a lazy manifest for one platform).
 */
/** `os/arch[/variant]` checked; OCI_ERR_BAD_REF when it is not one. */
export function parsePlatform(platform: string): { os: string; architecture: string; variant?: string } {
  const [os, architecture, variant, extra] = platform.split('/')
  if (os === undefined || architecture === undefined || os === '' || architecture === '' || variant === '' || extra !== undefined) {
    throw new NaiadError('OCI_ERR_BAD_REF', `bad platform "${platform}", expected OS/ARCH[/VARIANT], e.g. linux/amd64`)
  }
  return { os, architecture, ...(variant === undefined ? {} : { variant }) }
}

export function selectPlatform(index: OciIndex, platform: string, prefer?: (d: Descriptor) => boolean): Descriptor {
  const [os, arch, variant] = platform.split('/')
  if (os === undefined || arch === undefined || os === '' || arch === '') {
    throw new NaiadError('OCI_ERR_BAD_REF', `bad platform "${platform}", expected OS/ARCH[/VARIANT]`)
  }
  const matching = index.manifests.filter((m) => m.platform?.os === os && m.platform.architecture === arch)
  const candidates = prefer === undefined ? matching : [...matching.filter(prefer), ...matching.filter((m) => !prefer(m))]
  const match = variant === undefined
    ? candidates.find((m) => m.platform?.variant === undefined || (arch === 'arm64' && m.platform.variant === 'v8')) ?? candidates[0]
    : candidates.find((m) => m.platform?.variant === variant)
  if (match === undefined) {
    const have = index.manifests.map((m) => m.platform === undefined ? '?' : [m.platform.os, m.platform.architecture, m.platform.variant].filter(Boolean).join('/'))
    throw new NaiadError('OCI_ERR_BAD_MANIFEST', `image index has no manifest for ${platform} (it has ${have.join(', ') || 'none'})`)
  }
  return match
}
