// Image references: `host[:port]/repo[:tag]`, `host[:port]/repo@sha256:…`, or Docker Hub
// short forms (`alpine`, `library/alpine:3`), the way docker and containerd read them.

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

export function isDigest(s: string): boolean {
  return DIGEST.test(s)
}

/** Parses an image reference; throws NFS_ERR_BAD_REF naming what is wrong. */
export function parseRef(ref: string): ImageRef {
  const bad = (why: string): never => { throw new NaiadError('NFS_ERR_BAD_REF', `bad image reference "${ref}": ${why}`) }
  if (ref === '' || /\s/.test(ref)) bad('empty or contains whitespace')
  let rest = ref
  let digest: string | undefined
  const at = rest.indexOf('@')
  if (at >= 0) {
    digest = rest.slice(at + 1)
    rest = rest.slice(0, at)
    if (!DIGEST.test(digest)) bad('digest must be sha256: and 64 lowercase hex digits')
  }
  let tag: string | undefined
  const lastSlash = rest.lastIndexOf('/')
  const colon = rest.lastIndexOf(':')
  if (colon > lastSlash) {
    tag = rest.slice(colon + 1)
    rest = rest.slice(0, colon)
    if (!TAG.test(tag)) bad(`tag "${tag}" is not valid`)
  }
  const parts = rest.split('/')
  let registry = 'docker.io'
  // The first component is a registry host when it looks like one (docker's rule).
  if (parts.length > 1 && (parts[0].includes('.') || parts[0].includes(':') || parts[0] === 'localhost' || parts[0].startsWith('['))) {
    registry = parts.shift()!
    if (!HOST.test(registry)) bad(`registry "${registry}" is not host[:port]`)
  }
  if (parts.length === 0 || parts.some((p) => !COMPONENT.test(p))) bad('repository must be lowercase path components')
  if (registry === 'docker.io' && parts.length === 1) parts.unshift('library')
  const repository = parts.join('/')
  if (repository.length > 255) bad('repository name longer than 255 characters')
  if (tag === undefined && digest === undefined) tag = 'latest'
  return { registry, repository, ...(tag !== undefined ? { tag } : {}), ...(digest !== undefined ? { digest } : {}) }
}

/** The manifest reference to ask the registry for: the digest when there is one. */
export function refReference(ref: ImageRef): string {
  return ref.digest ?? ref.tag ?? 'latest'
}

export function formatRef(ref: ImageRef): string {
  return `${ref.registry}/${ref.repository}${ref.tag !== undefined ? `:${ref.tag}` : ''}${ref.digest !== undefined ? `@${ref.digest}` : ''}`
}
