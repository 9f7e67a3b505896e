// The snapshot labels containerd hands a remote snapshotter when it unpacks a layer, and how
// the snapshotter reads a lazy image's layer out of them.
//
// - `containerd.io/snapshot.ref`: the chain ID the layer's snapshot will be named by (set by
//   containerd's unpacker on every layer).
// - the layer descriptor's annotations under `containerd.io/snapshot/`, which containerd
//   passes on as labels: for a converted image's runtime manifest, the lazy manifest's digest
//   and the layer's place (RUNTIME_ANNOTATIONS, written by `nydus-fs convert`);
// - the image reference, which only the puller knows: `ctr-remote image rpull` sets
//   `containerd.io/snapshot/remote/stargz.reference`, the CRI plugin (with
//   `disable_snapshot_annotations = false`) `containerd.io/snapshot/cri.image-ref`.

import { RUNTIME_ANNOTATIONS } from '@naiad/proto/contracts'

import { parseRef, type ImageRef } from '@naiad/oci'

export const TARGET_LABEL = 'containerd.io/snapshot.ref'

/** Image reference labels, in the order they are trusted. */
export const REF_LABELS = [
  'containerd.io/snapshot/cri.image-ref',
  'containerd.io/snapshot/remote/stargz.reference'
] as const

/** Set on snapshots the snapshotter claimed for a lazy image (informational, like stargz's `remote` label). */
export const REMOTE_LABEL = 'containerd.io/snapshot/naiad.remote'

export interface LazyLayer {
  /** Chain ID containerd will look the committed snapshot up by. */
  target: string
  /** Digest of the lazy manifest. */
  image: string
  /** Registry and repository that hold it. */
  repository: ImageRef
  layer: number
  layers: number
}

export type LazyLabels =
  | { kind: 'none' }
  | { kind: 'lazy'; layer: LazyLayer }
  /** A lazy image's layer that cannot be served lazily (no reference label, a malformed one). */
  | { kind: 'unusable'; why: string }

export function readLazyLabels(labels: Record<string, string>): LazyLabels {
  const image = labels[RUNTIME_ANNOTATIONS.lazyImage]
  if (image === undefined) return { kind: 'none' }
  if (!/^sha256:[a-f0-9]{64}$/.test(image)) return { kind: 'unusable', why: `label ${RUNTIME_ANNOTATIONS.lazyImage} is not a sha256 digest` }
  const target = labels[TARGET_LABEL]
  if (target === undefined || target === '') return { kind: 'unusable', why: `no ${TARGET_LABEL} label (not an unpack)` }
  const m = /^(\d+)\/(\d+)$/.exec(labels[RUNTIME_ANNOTATIONS.layer] ?? '')
  if (m === null || Number(m[1]) >= Number(m[2])) return { kind: 'unusable', why: `label ${RUNTIME_ANNOTATIONS.layer} is not INDEX/COUNT` }
  const refLabel = REF_LABELS.find((k) => labels[k] !== undefined && labels[k] !== '')
  if (refLabel === undefined) {
    return { kind: 'unusable', why: `no image reference label (${REF_LABELS.join(' or ')}): pull with ctr-remote image rpull, or the CRI plugin with disable_snapshot_annotations = false` }
  }
  let ref: ImageRef
  try {
    ref = parseRef(labels[refLabel])
  } catch (err) {
    return { kind: 'unusable', why: (err as Error).message }
  }
  return {
    kind: 'lazy',
    layer: { target, image, repository: { registry: ref.registry, repository: ref.repository }, layer: Number(m[1]), layers: Number(m[2]) }
  }
}

/** `registry/repository@digest`: the lazy manifest itself, pinned. */
export function lazyRef(layer: Pick<LazyLayer, 'image' | 'repository'>): string {
  return `${layer.repository.registry}/${layer.repository.repository}@${layer.image}`
}
