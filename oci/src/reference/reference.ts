// Image references: `host[:port]/repo[:tag]`, `host[:port]/repo@sha256:…`, Docker Hub short
// forms (`alpine`, `library/alpine:3`) the way docker and containerd read them, and the
// manifest URLs Harbor and Dragonfly send (`https://host/v2/<repo>/manifests/<ref>`).

import { NaiadError } from '@naiad/proto/contracts'

export interface ImageRef {
  /** host[:port]; `docker.io` for Docker Hub */
  registry: string
  repository: string
  tag?: string
  digest?: string
}

const COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/
const TAG = /^[\w][\w.-]{0,127}$/
const DIGEST = /^sha256:[a-f0-9]{64}$/
const HOST = /^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*|\[[0-9a-fA-F:]+\])(?::\d{1,5})?$/

/** Docker Hub's API host, which every client talks to for `docker.io`. */
export const DOCKER_HUB = 'registry-1.docker.io'

export function isDigest(s: string): boolean {
  return DIGEST.test(s)
}

/** The host a registry's API answers on: Docker Hub's names become its API host. */
export function registryHost(registry: string): string {
  return registry === 'docker.io' || registry === 'index.docker.io' ? DOCKER_HUB : registry
}

/** Whether `host` (`host[:port]`) is listed in `insecure`, with or without its port. */
export function isInsecure(host: string, insecure: readonly string[]): boolean {
  return insecure.includes(host) || insecure.includes(host.replace(/:\d+$/, ''))
}

/** `http://host` for registries reached over plain HTTP, else `https://host`; Docker Hub as its API host. */
export function registryBase(registry: string, options: { plainHttp?: boolean; insecure?: readonly string[] } = {}): string {
  const host = registryHost(registry)
  const plain = options.plainHttp === true || isInsecure(host, options.insecure ?? [])
  return `${plain ? 'http' : 'https'}://${host}`
}

function bad(ref: string, why: string): never {
  throw new NaiadError('OCI_ERR_BAD_REF', `bad image reference "${ref}": ${why}`)
}

/** Parses an image reference; throws OCI_ERR_BAD_REF naming what is wrong. */
export function parseRef(ref: string): ImageRef {
  if (ref === '' || /\s/.test(ref)) bad(ref, 'empty or contains whitespace')
  let rest = ref
  let digest: string | undefined
  const at = rest.indexOf('@')
  if (at >= 0) {
    digest = rest.slice(at + 1)
    rest = rest.slice(0, at)
    if (!DIGEST.test(digest)) bad(ref, 'digest must be sha256: and 64 lowercase hex digits')
  }
  let tag: string | undefined
  const lastSlash = rest.lastIndexOf('/')
  const colon = rest.lastIndexOf(':')
  if (colon > lastSlash) {
    tag = rest.slice(colon + 1)
    rest = rest.slice(0, colon)
    if (!TAG.test(tag)) bad(ref, `tag "${tag}" is not valid`)
  }
  const parts = rest.split('/')
  let registry = 'docker.io'
  // The first component is a registry host when it looks like one (docker's rule).
  if (parts.length > 1 && (parts[0].includes('.') || parts[0].includes(':') || parts[0] === 'localhost' || parts[0].startsWith('['))) {
    registry = parts.shift()!
    if (!HOST.test(registry)) bad(ref, `registry "${registry}" is not host[:port]`)
  }
  if (parts.length === 0 || parts.some((p) => !COMPONENT.test(p))) bad(ref, 'repository must be lowercase path components')
  if ((registry === 'docker.io' || registry === 'index.docker.io' || registry === DOCKER_HUB) && parts.length === 1) parts.unshift('library')
  const repository = parts.join('/')
  if (repository.length > 255) bad(ref, 'repository name longer than 255 characters')
  if (tag === undefined && digest === undefined) tag = 'latest'
  return { registry, repository, ...(tag !== undefined ? { tag } : {}), ...(digest !== undefined ? { digest } : {}) }
}

/**
 * A reference or a manifest URL (`https://host/v2/<repo>/manifests/<tag or digest>`, what
 * Harbor and Dragonfly send); `plainHttp` when the URL is `http://`.
 */
export function parseRefOrUrl(raw: string): { ref: ImageRef; plainHttp: boolean } {
  if (!/^https?:\/\//.test(raw)) return { ref: parseRef(raw), plainHttp: false }
  let u: URL
  try {
    u = new URL(raw)
  } catch (err) {
    throw new NaiadError('OCI_ERR_BAD_REF', `bad image reference "${raw}": not a URL`, { cause: err })
  }
  const m = /^\/v2\/(.+)\/manifests\/([^/]+)$/.exec(u.pathname)
  if (m === null) bad(raw, 'expected a URL of the form https://HOST/v2/REPO/manifests/TAG')
  const reference = decodeURIComponent(m[2])
  const parsed = parseRef(`${u.host}/${m[1]}${DIGEST.test(reference) ? '@' : ':'}${reference}`)
  return { ref: parsed, plainHttp: u.protocol === 'http:' }
}

/** The manifest reference to ask the registry for: the digest when there is one. */
export function refReference(ref: ImageRef): string {
  return ref.digest ?? ref.tag ?? 'latest'
}

export function formatRef(ref: ImageRef): string {
  return `${ref.registry}/${ref.repository}${ref.tag !== undefined ? `:${ref.tag}` : ''}${ref.digest !== undefined ? `@${ref.digest}` : ''}`
}
