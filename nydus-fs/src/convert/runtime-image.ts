// The containerd-facing side of a converted image. containerd (1.6) pulls only images whose
// layers are tar layers and whose config lists one diff_id per layer; everything else in a
// manifest it downloads whole. So next to the lazy manifest, `convert` writes a runtime
// manifest that containerd can pull, and tags an OCI index holding both:
//
//   index (TARGET_REF)
//     [0] runtime manifest  (platform of the source; containerd picks the first match)
//           config: the source config, rootfs.diff_ids = [stub, ...source diff_ids]
//           layers: stub layer, then the source's layers, each annotated with the lazy
//                   manifest's digest and its position (RUNTIME_ANNOTATIONS)
//     [1] lazy manifest     (what nydus-fs mount/check read)
//
// With the naiad snapshotter, every runtime layer is claimed as already present, so
// containerd downloads none of them and the container runs on the lazy mount. Any other
// snapshotter downloads and unpacks the source layers as for the source image: the image
// still runs, just not lazily.
//
// The stub layer is a tar holding only a PAX global header that names the lazy manifest. It
// unpacks to nothing (containerd, like GNU tar, ignores global headers), but its diff_id is
// unique to the lazy image, so every snapshot of the runtime chain is unique to it too: no
// other image's layer chain can name one of our claimed snapshots and read the merged lazy
// tree where it expected one of its own intermediate layers.

import { createHash } from 'node:crypto'
import { gzipSync } from 'node:zlib'

import {
  MEDIA_TYPES, NaiadError, OCI_INDEX_MEDIA_TYPE, RUNTIME_ANNOTATIONS, RUNTIME_STUB_MEDIA_TYPE
} from '@naiad/proto/contracts'

import { sha256Digest } from '@naiad/oci'
import type { Descriptor, OciManifest } from '@naiad/oci'

const BLOCK = 512

function field(block: Buffer, offset: number, length: number, value: string): void {
  block.write(value, offset, Math.min(length, Buffer.byteLength(value)), 'ascii')
}

function octal(n: number, width: number): string {
  return n.toString(8).padStart(width - 1, '0')
}

/** A ustar header block with its checksum. */
function tarHeader(name: string, type: string, size: number): Buffer {
  const h = Buffer.alloc(BLOCK)
  field(h, 0, 100, name)
  field(h, 100, 8, octal(0o644, 8))
  field(h, 108, 8, octal(0, 8))
  field(h, 116, 8, octal(0, 8))
  field(h, 124, 12, octal(size, 12))
  field(h, 136, 12, octal(0, 12))
  h.fill(0x20, 148, 156)
  field(h, 156, 1, type)
  field(h, 257, 6, 'ustar')
  h[262] = 0
  field(h, 263, 2, '00')
  let sum = 0
  for (const b of h) sum += b
  field(h, 148, 7, `${octal(sum, 7)}\0`)
  return h
}

/** One PAX record: "<length> <key>=<value>\n", the length counting itself. */
function paxRecord(key: string, value: string): string {
  const body = ` ${key}=${value}\n`
  let len = Buffer.byteLength(body) + 1
  while (String(len).length + Buffer.byteLength(body) !== len) len = String(len).length + Buffer.byteLength(body)
  return `${len}${body}`
}

export interface StubLayer {
  /** The gzip-compressed layer as pushed. */
  blob: Buffer
  descriptor: Descriptor
  /** sha256 of the uncompressed tar: the layer's diff_id. */
  diffId: string
}

/** The stub layer of the runtime image of `lazyDigest`: a tar of one PAX global header. */
export function stubLayer(lazyDigest: string): StubLayer {
  const records = Buffer.from(paxRecord('comment', `naiad lazy image ${lazyDigest}; mount it with nydus-fs`))
  const padded = Buffer.alloc(Math.ceil(records.length / BLOCK) * BLOCK)
  records.copy(padded)
  const tar = Buffer.concat([tarHeader('pax_global_header', 'g', records.length), padded, Buffer.alloc(2 * BLOCK)])
  const blob = gzipSync(tar, { level: 9 })
  return {
    blob,
    diffId: `sha256:${createHash('sha256').update(tar).digest('hex')}`,
    descriptor: { mediaType: RUNTIME_STUB_MEDIA_TYPE, digest: sha256Digest(blob), size: blob.length }
  }
}

interface ImageConfig {
  os?: unknown
  architecture?: unknown
  variant?: unknown
  created?: unknown
  rootfs?: { type?: unknown; diff_ids?: unknown }
  history?: unknown
}

export interface RuntimeImage {
  stub: StubLayer
  configBody: Buffer
  manifestBody: Buffer
  manifestDigest: string
  /** The index to tag: the runtime manifest first, then the lazy manifest. */
  indexBody: Buffer
  indexDigest: string
}

export interface RuntimeInput {
  /** The source image's manifest and config, as converted. */
  sourceManifest: OciManifest
  sourceConfig: Buffer
  lazyManifestBody: Buffer
  lazyManifestDigest: string
}

export function buildRuntimeImage(input: RuntimeInput): RuntimeImage {
  let config: ImageConfig
  try {
    config = JSON.parse(input.sourceConfig.toString('utf8')) as ImageConfig
  } catch (err) {
    throw new NaiadError('NFS_ERR_BAD_IMAGE', 'source image config is not valid JSON', { cause: err })
  }
  const diffIds = config.rootfs?.diff_ids
  if (!Array.isArray(diffIds) || diffIds.length !== input.sourceManifest.layers.length || !diffIds.every((d) => typeof d === 'string')) {
    throw new NaiadError('NFS_ERR_BAD_IMAGE', `source config lists ${Array.isArray(diffIds) ? diffIds.length : 'no'} diff_ids for ${input.sourceManifest.layers.length} layers`)
  }
  const stub = stubLayer(input.lazyManifestDigest)
  const runtimeConfig: ImageConfig = {
    ...config,
    rootfs: { ...config.rootfs, type: 'layers', diff_ids: [stub.diffId, ...diffIds as string[]] },
    ...(Array.isArray(config.history)
      ? { history: [{ ...(typeof config.created === 'string' ? { created: config.created } : {}), created_by: 'nydus-fs convert', comment: `naiad lazy image ${input.lazyManifestDigest}` }, ...config.history as unknown[]] }
      : {})
  }
  const configBody = Buffer.from(JSON.stringify(runtimeConfig))
  const count = 1 + input.sourceManifest.layers.length
  const annotate = (d: Descriptor, i: number): Descriptor => ({
    mediaType: d.mediaType, digest: d.digest, size: d.size,
    annotations: { ...d.annotations, [RUNTIME_ANNOTATIONS.lazyImage]: input.lazyManifestDigest, [RUNTIME_ANNOTATIONS.layer]: `${i}/${count}` }
  })
  const manifest: OciManifest = {
    schemaVersion: 2,
    mediaType: MEDIA_TYPES.manifest,
    config: { mediaType: MEDIA_TYPES.config, digest: sha256Digest(configBody), size: configBody.length },
    layers: [stub.descriptor, ...input.sourceManifest.layers].map(annotate),
    annotations: { [RUNTIME_ANNOTATIONS.lazyImage]: input.lazyManifestDigest }
  }
  const manifestBody = Buffer.from(JSON.stringify(manifest))
  const manifestDigest = sha256Digest(manifestBody)
  const platform = {
    os: typeof config.os === 'string' ? config.os : 'linux',
    architecture: typeof config.architecture === 'string' ? config.architecture : 'amd64',
    ...(typeof config.variant === 'string' && config.variant !== '' ? { variant: config.variant } : {})
  }
  const index = {
    schemaVersion: 2,
    mediaType: OCI_INDEX_MEDIA_TYPE,
    manifests: [
      { mediaType: MEDIA_TYPES.manifest, digest: manifestDigest, size: manifestBody.length, platform, annotations: { [RUNTIME_ANNOTATIONS.role]: 'runtime' } },
      { mediaType: MEDIA_TYPES.manifest, digest: input.lazyManifestDigest, size: input.lazyManifestBody.length, platform, annotations: { [RUNTIME_ANNOTATIONS.role]: 'lazy' } }
    ]
  }
  const indexBody = Buffer.from(JSON.stringify(index))
  return { stub, configBody, manifestBody, manifestDigest, indexBody, indexDigest: sha256Digest(indexBody) }
}
