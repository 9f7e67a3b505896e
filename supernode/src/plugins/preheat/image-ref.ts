// Image references as preheat callers write them, and the blob URLs the registry mirror will
// ask for. The mirror downloads a blob as the task `${base}/v2/${repo}/blobs/${digest}` with
// that digest, so a preheat only helps when it builds exactly the same URL: same scheme,
// same host spelling, same repository path.

import { NaiadError } from '@naiad/proto'

export interface ImageRef {
  /** host[:port] as the mirror spells it (docker.io → registry-1.docker.io). */
  host: string
  /** `http://host` for plain-HTTP registries, else `https://host`. */
  base: string
  repo: string
  /** A tag or a `sha256:` digest. */
  reference: string
}

const DOCKER_HUB = 'registry-1.docker.io'
const HOST = /^(?:[a-zA-Z0-9.-]+|\[[0-9a-fA-F:]+\])(?::\d{1,5})?$/
const REPO = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$/
const TAG = /^[\w][\w.-]{0,127}$/
const DIGEST = /^sha256:[0-9a-f]{64}$/

function canonicalHost(host: string): string {
  return host === 'docker.io' || host === 'index.docker.io' ? DOCKER_HUB : host
}

function isInsecure(host: string, insecure: readonly string[]): boolean {
  return insecure.includes(host) || insecure.includes(host.replace(/:\d+$/, ''))
}

function bad(raw: string, why: string): NaiadError {
  return new NaiadError('NFS_ERR_BAD_REF', `bad image reference "${raw}": ${why}`)
}

/**
 * Accepts `https://host/v2/<repo>/manifests/<ref>` (what Harbor and Dragonfly send) and
 * `host[:port]/repo:tag` or `repo@sha256:…` (Docker Hub when no host is named).
 * `http://` URLs and hosts in `insecure` are reached over plain HTTP.
 */
export function parseImageRef(raw: string, insecure: readonly string[]): ImageRef {
  let host: string
  let repo: string
  let reference: string
  let plainHttp = false
  if (/^https?:\/\//.test(raw)) {
    let u: URL
    try {
      u = new URL(raw)
    } catch (err) {
      throw new NaiadError('NFS_ERR_BAD_REF', `bad image reference "${raw}": not a URL`, { cause: err })
    }
    const m = /^\/v2\/(.+)\/manifests\/([^/]+)$/.exec(u.pathname)
    if (m === null) throw bad(raw, 'expected a URL of the form https://HOST/v2/REPO/manifests/TAG')
    host = u.host
    repo = m[1]
    reference = decodeURIComponent(m[2])
    plainHttp = u.protocol === 'http:'
  } else {
    const at = raw.indexOf('@')
    let rest = raw
    if (at >= 0) {
      reference = raw.slice(at + 1)
      rest = raw.slice(0, at)
    } else {
      const colon = raw.lastIndexOf(':')
      const tagged = colon > raw.lastIndexOf('/')
      reference = tagged ? raw.slice(colon + 1) : 'latest'
      rest = tagged ? raw.slice(0, colon) : raw
    }
    const slash = rest.indexOf('/')
    const first = slash < 0 ? '' : rest.slice(0, slash)
    if (first !== '' && (first.includes('.') || first.includes(':') || first === 'localhost')) {
      host = first
      repo = rest.slice(slash + 1)
    } else {
      host = DOCKER_HUB
      repo = rest.includes('/') ? rest : `library/${rest}`
    }
  }
  if (!HOST.test(host)) throw bad(raw, `bad registry host "${host}"`)
  if (!REPO.test(repo)) throw bad(raw, `bad repository "${repo}"`)
  if (!TAG.test(reference) && !DIGEST.test(reference)) throw bad(raw, `bad tag or digest "${reference}"`)
  host = canonicalHost(host)
  const scheme = plainHttp || isInsecure(host, insecure) ? 'http' : 'https'
  return { host, base: `${scheme}://${host}`, repo, reference }
}

/** The URL under which the registry mirror downloads this blob (see dfdaemon upstreamBase). */
export function blobUrl(ref: ImageRef, digest: string): string {
  return `${ref.base}/v2/${ref.repo}/blobs/${digest}`
}
