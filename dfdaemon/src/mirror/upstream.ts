// Which registry a mirror request is for, how to reach it, and with which credentials.

import { isInsecure, registryHost } from '@naiad/oci'
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
  const host = registryHost(ns)
  return `${isInsecure(host, options.insecure) ? 'http' : 'https'}://${host}`
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
