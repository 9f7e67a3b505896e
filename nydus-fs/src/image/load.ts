// Opening a lazy image: resolve the manifest, check it is one of ours, fetch the bootstrap
// verified against both its layer digest and the bootstrap-digest annotation, decode it,
// and recompute the Merkle tree against the root-digest annotation. Every byte a mount or
// `check` later trusts hangs off this root.

import {
  ANNOTATIONS, LAZY_FORMAT_VERSION, MEDIA_TYPES, NaiadError, RUNTIME_ANNOTATIONS,
  type BlobRef, type Bootstrap
} from '@naiad/proto/contracts'

import type { RegistryClient } from '@naiad/oci'
import type { OciManifest } from '@naiad/oci'
import type { ImageRef } from '@naiad/oci'
import { BOOTSTRAP_MAX_BYTES, decodeBootstrap } from './bootstrap.ts'
import { computeDigests } from './merkle.ts'

export interface LazyImage {
  ref: ImageRef
  /** Digest of the lazy image's manifest. */
  digest: string
  manifest: OciManifest
  /** The image config (the source image's, unchanged), parsed. */
  config: Record<string, unknown>
  bootstrap: Bootstrap
  /** `sha256:<hex>`, recomputed and equal to the manifest annotation. */
  rootDigest: string
  /** Digest of the bootstrap layer. */
  bootstrapDigest: string
  /** Data blobs, as the bootstrap's chunk table indexes them. */
  blobs: BlobRef[]
  chunkSize: number
  compressor: 'zstd' | 'none'
  /** Per-inode Merkle digests (by inode number), recomputed. */
  digests: Buffer[]
}

/** Checks that a manifest is a lazy image and returns its annotations (NFS_ERR_NOT_LAZY otherwise). */
export function lazyAnnotations(manifest: OciManifest): { rootDigest: string; bootstrapDigest: string; chunkSize: number; compressor: string; version: number } {
  const a = manifest.annotations ?? {}
  const missing = [ANNOTATIONS.version, ANNOTATIONS.rootDigest, ANNOTATIONS.bootstrapDigest, ANNOTATIONS.chunkSize, ANNOTATIONS.compressor].filter((k) => typeof a[k] !== 'string')
  if (missing.length > 0) throw new NaiadError('NFS_ERR_NOT_LAZY', `the image is not a Naiad lazy image: its manifest lacks ${missing.join(', ')}`)
  const version = Number(a[ANNOTATIONS.version])
  if (version !== LAZY_FORMAT_VERSION) throw new NaiadError('NFS_ERR_NOT_LAZY', `lazy image format version ${a[ANNOTATIONS.version]} is not supported (this reader knows ${LAZY_FORMAT_VERSION})`)
  for (const k of [ANNOTATIONS.rootDigest, ANNOTATIONS.bootstrapDigest]) {
    if (!/^sha256:[a-f0-9]{64}$/.test(a[k])) throw new NaiadError('NFS_ERR_NOT_LAZY', `annotation ${k} is not a sha256 digest`)
  }
  return {
    rootDigest: a[ANNOTATIONS.rootDigest],
    bootstrapDigest: a[ANNOTATIONS.bootstrapDigest],
    chunkSize: Number(a[ANNOTATIONS.chunkSize]),
    compressor: a[ANNOTATIONS.compressor],
    version
  }
}

export interface LoadOptions {
  /** For an index: OS/ARCH[/VARIANT], default linux/amd64. */
  platform?: string
  signal?: AbortSignal
}

export async function loadLazyImage(client: RegistryClient, ref: ImageRef, options: LoadOptions = {}): Promise<LazyImage> {
  // TARGET_REF of a conversion is an index of the runtime and the lazy manifest: take the lazy one.
  const { digest, manifest } = await client.resolveImage(ref, options.platform, options.signal, (d) => d.annotations?.[RUNTIME_ANNOTATIONS.role] === 'lazy')
  const ann = lazyAnnotations(manifest)
  const layers = manifest.layers.filter((l) => l.mediaType === MEDIA_TYPES.bootstrap)
  if (layers.length !== 1) throw new NaiadError('NFS_ERR_NOT_LAZY', `a lazy image has exactly one bootstrap layer, this one has ${layers.length}`)
  const layer = layers[0]
  if (layer.digest !== ann.bootstrapDigest) {
    throw new NaiadError('NFS_ERR_DIGEST', `bootstrap layer ${layer.digest} is not the one the manifest annotation names (${ann.bootstrapDigest})`)
  }
  if (layer.size > BOOTSTRAP_MAX_BYTES) throw new NaiadError('NFS_ERR_BAD_IMAGE', `bootstrap layer is ${layer.size} bytes, more than ${BOOTSTRAP_MAX_BYTES}`)
  // getBlob verifies the bytes against the layer digest, which equals the annotation.
  const stored = await client.getBlob(ref.repository, layer.digest, { signal: options.signal })
  const bootstrap = decodeBootstrap(stored)
  const sb = bootstrap.superblock!
  if (sb.chunkSize !== ann.chunkSize || sb.compressor !== ann.compressor) {
    throw new NaiadError('NFS_ERR_BAD_IMAGE', `bootstrap (chunk size ${sb.chunkSize}, ${sb.compressor}) disagrees with the manifest annotations (${ann.chunkSize}, ${ann.compressor})`)
  }
  const dataLayers = new Map(manifest.layers.filter((l) => l.mediaType === MEDIA_TYPES.blob).map((l) => [l.digest, l.size]))
  for (const blob of bootstrap.blobs) {
    const size = dataLayers.get(blob.digest)
    if (size === undefined) throw new NaiadError('NFS_ERR_BAD_IMAGE', `data blob ${blob.digest} is not a layer of the manifest`)
    if (size !== blob.size) throw new NaiadError('NFS_ERR_BAD_IMAGE', `data blob ${blob.digest} is ${size} bytes in the manifest, ${blob.size} in the bootstrap`)
  }
  const digests = computeDigests(bootstrap, { verify: true })
  const rootDigest = `sha256:${digests[sb.rootIno].toString('hex')}`
  if (rootDigest !== ann.rootDigest) {
    throw new NaiadError('NFS_ERR_DIGEST', `Merkle root ${rootDigest} of the bootstrap does not match the manifest's ${ann.rootDigest}`)
  }
  const configBody = await client.getBlob(ref.repository, manifest.config.digest, { signal: options.signal })
  let config: Record<string, unknown>
  try {
    config = JSON.parse(configBody.toString('utf8')) as Record<string, unknown>
  } catch (err) {
    throw new NaiadError('NFS_ERR_BAD_IMAGE', 'image config is not valid JSON', { cause: err })
  }
  return {
    ref, digest, manifest, config, bootstrap, rootDigest, bootstrapDigest: layer.digest, blobs: bootstrap.blobs,
    chunkSize: sb.chunkSize, compressor: sb.compressor as 'zstd' | 'none', digests
  }
}
