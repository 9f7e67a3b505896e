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

/** TLS errors that mean the server answered a ClientHello with plain HTTP. */
const PLAIN_HTTP_CODES = new Set(['ERR_SSL_WRONG_VERSION_NUMBER', 'ERR_SSL_PACKET_LENGTH_TOO_LONG', 'ERR_SSL_HTTP_REQUEST'])

function errorCode(err: unknown): string | undefined {
  for (let e = err as { code?: unknown; cause?: unknown } | undefined, depth = 0; e !== undefined && e !== null && depth < 4; e = e.cause as typeof e, depth++) {
    if (typeof e.code === 'string' && e.code !== 'UND_ERR_SOCKET') return e.code
  }
  return undefined
}

/**
 * The mirror's error for a registry it could not talk to. A registry that answers HTTPS with
 * plain HTTP gets an error naming the flag that fixes it, since the TLS code alone
 * (ERR_SSL_WRONG_VERSION_NUMBER) tells an operator nothing about the daemon's configuration.
 */
export function upstreamError(target: URL, err: unknown): NaiadError {
  const code = errorCode(err)
  if (target.protocol === 'https:' && code !== undefined && PLAIN_HTTP_CODES.has(code)) {
    return new NaiadError('DFD_ERR_REGISTRY_PLAIN_HTTP',
      `registry ${target.host} answers in plain HTTP, not HTTPS (${code}): start dfdaemon with --insecure-registry ${target.host} (config insecure-registry) to reach it over HTTP`, { cause: err })
  }
  return new NaiadError('DFD_ERR_ORIGIN_UNREACHABLE', `cannot reach registry ${target.host}: ${code ?? (err as Error).message}`, { cause: err })
}

export interface UpstreamProblem {
  registry: string
  code: string
  message: string
  count: number
  firstAt: string
  lastAt: string
}

/**
 * Registries the mirror could not talk to since it started, the latest error of each, so that
 * `dfdaemon doctor` can report them (the local API serves them at /api/v1/mirror/problems).
 * A registry drops out once it answers again. Bounded: a client naming endless hosts cannot
 * grow it.
 */
export class UpstreamProblems {
  private readonly problems = new Map<string, UpstreamProblem>()
  private readonly max: number

  constructor(max = 64) {
    this.max = max
  }

  record(registry: string, err: NaiadError, now = Date.now()): void {
    const at = new Date(now).toISOString()
    const prev = this.problems.get(registry)
    this.problems.delete(registry)
    if (this.problems.size >= this.max) this.problems.delete(this.problems.keys().next().value!)
    this.problems.set(registry, { registry, code: err.code, message: err.message, count: (prev?.count ?? 0) + 1, firstAt: prev?.firstAt ?? at, lastAt: at })
  }

  clear(registry: string): void {
    this.problems.delete(registry)
  }

  list(): UpstreamProblem[] {
    return [...this.problems.values()]
  }
}
