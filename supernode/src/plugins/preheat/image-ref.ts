// Image references as preheat callers write them, and the blob URLs the registry mirror will
// ask for. The mirror downloads a blob as the task `${base}/v2/${repo}/blobs/${digest}` with
// that digest, so a preheat only helps when it builds exactly the same URL: same scheme,
// same host spelling, same repository path. Parsing is the OCI client's.

import { parseRefOrUrl, refReference, registryBase, registryHost, type ImageRef } from '@naiad/oci'

export interface PreheatImage {
  ref: ImageRef
  /** host[:port] as the mirror spells it (docker.io → registry-1.docker.io). */
  host: string
  /** `http://host` for plain-HTTP registries, else `https://host`. */
  base: string
  repo: string
  /** A tag or a `sha256:` digest. */
  reference: string
  /** Whether the registry is reached over plain HTTP. */
  plainHttp: boolean
}

/**
 * Accepts `https://host/v2/<repo>/manifests/<ref>` (what Harbor and Dragonfly send) and
 * `host[:port]/repo:tag` or `repo@sha256:…` (Docker Hub when no host is named).
 * `http://` URLs and hosts in `insecure` are reached over plain HTTP. OCI_ERR_BAD_REF when malformed.
 */
export function parseImageRef(raw: string, insecure: readonly string[]): PreheatImage {
  const { ref, plainHttp } = parseRefOrUrl(raw)
  const base = registryBase(ref.registry, { plainHttp, insecure })
  return { ref, host: registryHost(ref.registry), base, repo: ref.repository, reference: refReference(ref), plainHttp: base.startsWith('http:') }
}

/** The URL under which the registry mirror downloads this blob (see dfdaemon upstreamBase). */
export function blobUrl(image: PreheatImage, digest: string): string {
  return `${image.base}/v2/${image.repo}/blobs/${digest}`
}
