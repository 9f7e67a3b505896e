// A lazy image's access order, kept next to the image in its registry so that every node
// prefetches what the first container read, not only the node that recorded it.
//
// It is an OCI artifact that refers to the lazy manifest (`subject`): an image manifest of
// artifactType ACCESS_ORDER_TYPE, the empty config, and one layer holding the access log
// exactly as `nydus-fs mount` writes it ({ image, recordedAt, files: [path, …] }).
// Found through the referrers API, or on registries without it (distribution 2.8) through the
// fallback tag `sha256-<hex of the lazy manifest>`, an index the publisher keeps up to date.

import { NaiadError } from '@naiad/proto/contracts'

import { referrersTag, sha256Digest, type RegistryClient } from '@naiad/oci'
import { OCI_MEDIA_TYPES, type Descriptor, type OciIndex } from '@naiad/oci'

export const ACCESS_ORDER_TYPE = 'application/vnd.naiad.lazy.access-order.v1+json'
const EMPTY_CONFIG = { mediaType: 'application/vnd.oci.empty.v1+json', body: Buffer.from('{}') }
/** A start-up reads a few thousand files; a record beyond this is not an access order. */
const MAX_BYTES = 4 * 1024 * 1024

function validOrder(body: Buffer, image: string): boolean {
  try {
    const doc = JSON.parse(body.toString('utf8')) as { image?: unknown; files?: unknown }
    return doc.image === image && Array.isArray(doc.files) && doc.files.every((f) => typeof f === 'string')
  } catch {
    return false
  }
}

/** The newest access order published for the lazy image `image`, or undefined. */
export async function fetchAccessOrder(client: RegistryClient, repository: string, image: string, signal?: AbortSignal): Promise<Buffer | undefined> {
  const { index } = await client.referrers(repository, image, signal)
  const entries = index.manifests.filter((d) => d.artifactType === ACCESS_ORDER_TYPE).reverse()
  for (const entry of entries) {
    const got = await client.getManifest(repository, entry.digest, [OCI_MEDIA_TYPES.manifest], signal)
    const manifest = JSON.parse(got.body.toString('utf8')) as { subject?: Descriptor; layers?: Descriptor[] }
    const layer = manifest.layers?.[0]
    if (manifest.subject?.digest !== image || layer === undefined || layer.size > MAX_BYTES) continue
    // getBlob checks the bytes against the digest the (digest-addressed) manifest names.
    const body = await client.getBlob(repository, layer.digest, { signal })
    if (validOrder(body, image)) return body
  }
  return undefined
}

/**
 * Publishes `body` (an access log of `subject`) as a referrer of the lazy manifest. Returns
 * false when one is there already: the first node's record stands.
 */
export async function publishAccessOrder(client: RegistryClient, repository: string, subject: Descriptor, body: Buffer, signal?: AbortSignal): Promise<boolean> {
  if (body.length > MAX_BYTES || !validOrder(body, subject.digest)) throw new NaiadError('NFS_ERR_BAD_IMAGE', `access log of ${subject.digest} is not an access order`)
  const existing = await client.referrers(repository, subject.digest, signal)
  if (existing.index.manifests.some((d) => d.artifactType === ACCESS_ORDER_TYPE)) return false
  const layerDigest = await client.pushBlob(repository, body, signal)
  const configDigest = await client.pushBlob(repository, EMPTY_CONFIG.body, signal)
  const created = new Date().toISOString()
  const manifest = {
    schemaVersion: 2,
    mediaType: OCI_MEDIA_TYPES.manifest,
    artifactType: ACCESS_ORDER_TYPE,
    config: { mediaType: EMPTY_CONFIG.mediaType, digest: configDigest, size: EMPTY_CONFIG.body.length },
    layers: [{ mediaType: ACCESS_ORDER_TYPE, digest: layerDigest, size: body.length }],
    subject: { mediaType: subject.mediaType, digest: subject.digest, size: subject.size },
    annotations: { 'org.opencontainers.image.created': created }
  }
  const manifestBody = Buffer.from(JSON.stringify(manifest))
  const digest = sha256Digest(manifestBody)
  await client.pushManifest(repository, digest, OCI_MEDIA_TYPES.manifest, manifestBody, signal)
  if (!existing.api) {
    // No referrers API: keep the fallback tag's index, as the distribution spec asks of clients.
    const index: OciIndex = {
      schemaVersion: 2,
      mediaType: OCI_MEDIA_TYPES.index,
      manifests: [...existing.index.manifests, { mediaType: OCI_MEDIA_TYPES.manifest, digest, size: manifestBody.length, artifactType: ACCESS_ORDER_TYPE, annotations: manifest.annotations }]
    }
    await client.pushManifest(repository, referrersTag(subject.digest), OCI_MEDIA_TYPES.index, Buffer.from(JSON.stringify(index)), signal)
  }
  return true
}
