// Which registry a mirror request is for, how to reach it, and with which credentials.

import { readFileSync } from 'node:fs'

import { NaiadError } from '@naiad/proto'
import type { DestinationPolicy } from '@naiad/peer'

export interface UpstreamOptions {
  /** Used when a request carries no `ns` parameter, e.g. https://registry-1.docker.io */
  defaultRegistry: string
  /** HOST[:PORT] entries reached over plain HTTP. */
  insecure: string[]
  /** Docker `config.json` credentials by registry host. */
  credentials: Map<string, string>
  /** Extra PEM CA certificates for HTTPS registries. */
  caFile?: string
  /** Where upstream requests may go (source.allow plus the configured registries); without one, anywhere. */
  policy?: DestinationPolicy
}

/** containerd names the upstream as `?ns=host[:port]`; docker.io means Docker Hub's API host. */
export function upstreamBase(ns: string | null, options: UpstreamOptions): string {
  if (ns === null || ns === '') return options.defaultRegistry
  if (!/^[a-zA-Z0-9.-]+(:\d{1,5})?$/.test(ns) && !/^\[[0-9a-fA-F:]+\](:\d{1,5})?$/.test(ns)) {
    throw new NaiadError('DFD_ERR_BAD_REQUEST', `bad ns parameter "${ns}"`)
  }
  const host = ns === 'docker.io' ? 'registry-1.docker.io' : ns
  const insecure = options.insecure.includes(host) || options.insecure.includes(host.replace(/:\d+$/, ''))
  return `${insecure ? 'http' : 'https'}://${host}`
}

/**
 * Reads credentials in Docker's `config.json` format: `{"auths": {"host": {"auth": base64(user:pass)}}}`
 * (or `username`/`password`). Returns an Authorization header value per host.
 */
export function loadDockerCredentials(file: string): Map<string, string> {
  let doc: { auths?: Record<string, { auth?: string; username?: string; password?: string }> }
  try {
    doc = JSON.parse(readFileSync(file, 'utf8')) as typeof doc
  } catch (err) {
    throw new NaiadError('PROTO_ERR_BAD_CONFIG', `registry credentials file ${file}: ${(err as Error).message}`, { cause: err })
  }
  const out = new Map<string, string>()
  for (const [key, entry] of Object.entries(doc.auths ?? {})) {
    const host = key.replace(/^https?:\/\//, '').replace(/\/.*$/, '')
    const basic = entry.auth ?? (entry.username !== undefined ? Buffer.from(`${entry.username}:${entry.password ?? ''}`).toString('base64') : undefined)
    if (basic !== undefined) out.set(host, `Basic ${basic}`)
  }
  return out
}
