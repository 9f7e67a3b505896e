// Validates a job request body: Naiad's own shape and the Dragonfly open API shape that
// Harbor sends ({type: "preheat", args: {type, url, headers, scope, timeout, ...}}).

import { NaiadError } from '@naiad/proto'

import { parseImageRef } from './image-ref.ts'
import type { JobArgs } from './job-store.ts'
import { checkPlatform } from './manifest-resolver.ts'

/** Scopes served by the seed alone. Dragonfly names it single_seed_peer; Harbor single_peer. */
const SEED_SCOPES = new Set(['', 'seed', 'single_seed_peer', 'all_seed_peers', 'single_peer'])
const DURATION_UNITS: Record<string, number> = { ns: 1e-6, us: 1e-3, ms: 1, s: 1000, m: 60_000, h: 3_600_000 }

function badRequest(message: string): NaiadError {
  return new NaiadError('SN_ERR_BAD_REQUEST', message)
}

/** `30s`, `5m`, `1h30m` (Go's `30m0s` too) → ms; a bare number is `numberUnitMs` each. */
export function parseDurationMs(raw: unknown, what: string, numberUnitMs: number): number {
  if (raw === undefined || raw === null || raw === '' || raw === 0) return 0
  if (typeof raw === 'number' && Number.isFinite(raw) && raw > 0) return raw * numberUnitMs
  if (typeof raw === 'string') {
    const re = /(\d+(?:\.\d+)?)(ns|us|ms|s|m|h)/gy
    let total = 0
    let end = 0
    for (let m = re.exec(raw); m !== null; m = re.exec(raw)) {
      total += Number(m[1]) * DURATION_UNITS[m[2]]
      end = re.lastIndex
    }
    if (end === raw.length && end > 0) return total
  }
  throw badRequest(`bad ${what} ${JSON.stringify(raw)}: expected a duration such as 30s, 10m or 2h`)
}

function stringField(args: Record<string, unknown>, key: string): string | undefined {
  const v = args[key]
  if (v === undefined || v === null) return undefined
  if (typeof v !== 'string') throw badRequest(`args.${key} must be a string`)
  return v
}

function checkUrl(raw: string): void {
  let u: URL
  try {
    u = new URL(raw)
  } catch {
    throw badRequest(`malformed URL "${raw}"`)
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw badRequest(`unsupported URL scheme "${u.protocol}" in "${raw}" (only http and https)`)
}

/** Label keys and values as host.labels allows them. */
const LABEL_KEY = /^[A-Za-z0-9]([A-Za-z0-9._/-]{0,62}[A-Za-z0-9])?$/

/**
 * `"seed"` and its Dragonfly/Harbor spellings → the seed; `"all_peers"` → every live daemon;
 * `{labels: {zone: "a"}}` → the live daemons carrying all those labels.
 */
export function parseScope(raw: unknown): { scope: string; labels?: Record<string, string> } {
  if (typeof raw === 'string') {
    if (SEED_SCOPES.has(raw)) return { scope: raw === '' ? 'seed' : raw }
    if (raw === 'all_peers') return { scope: 'all_peers' }
    throw new NaiadError('SN_ERR_SCOPE_UNSUPPORTED', `unknown scope "${raw}": use "seed", "all_peers" or {"labels": {"KEY": "VALUE"}}`)
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw badRequest('args.scope must be a string or {"labels": {...}}')
  const keys = Object.keys(raw)
  const selector = (raw as { labels?: unknown }).labels
  if (keys.some((k) => k !== 'labels') || typeof selector !== 'object' || selector === null || Array.isArray(selector)) {
    throw badRequest('a label-selector scope is {"labels": {"KEY": "VALUE", ...}}')
  }
  const labels: Record<string, string> = {}
  for (const [k, v] of Object.entries(selector as Record<string, unknown>)) {
    if (!LABEL_KEY.test(k)) throw badRequest(`args.scope.labels: bad label "${k}"`)
    if (typeof v !== 'string') throw badRequest(`args.scope.labels.${k} must be a string`)
    labels[k] = v
  }
  if (Object.keys(labels).length === 0) throw badRequest('args.scope.labels must name at least one label (use scope "all_peers" for every daemon)')
  return { scope: 'labels', labels }
}

/** Scopes that preheat daemons (after the seed), through the control service. */
export function isPeerScope(scope: string): boolean {
  return scope === 'all_peers' || scope === 'labels'
}

export function parseJobRequest(body: unknown, options: { insecureRegistries: readonly string[]; defaultParallelism: number; defaultTtlMs: number; peerScopes?: boolean }): JobArgs {
  if (typeof body !== 'object' || body === null) throw badRequest('the body must be a JSON object {type: "preheat", args: {...}}')
  const b = body as { type?: unknown; args?: unknown }
  if (b.type !== 'preheat') throw badRequest(`unsupported job type ${JSON.stringify(b.type)}: only "preheat" jobs exist`)
  if (typeof b.args !== 'object' || b.args === null) throw badRequest('args must be an object')
  const a = b.args as Record<string, unknown>

  const type = a.type ?? 'image'
  if (type !== 'image' && type !== 'file') throw badRequest(`args.type must be "image" or "file", not ${JSON.stringify(type)}`)

  const { scope, labels } = parseScope(a.scope ?? '')
  if (isPeerScope(scope) && options.peerScopes !== true) {
    throw new NaiadError('SN_ERR_SCOPE_UNSUPPORTED', `scope ${JSON.stringify(a.scope)} needs the supernode's control service, which this supernode does not offer; use scope "seed"`)
  }

  const headers: Record<string, string> = {}
  if (a.headers !== undefined && a.headers !== null) {
    if (typeof a.headers !== 'object' || Array.isArray(a.headers)) throw badRequest('args.headers must be an object of header name → value')
    for (const [k, v] of Object.entries(a.headers as Record<string, unknown>)) {
      if (typeof v !== 'string') throw badRequest(`args.headers.${k} must be a string`)
      headers[k] = v
    }
  }

  const url = stringField(a, 'url')
  let urls: string[] | undefined
  if (a.urls !== undefined && a.urls !== null) {
    if (!Array.isArray(a.urls) || a.urls.some((u) => typeof u !== 'string')) throw badRequest('args.urls must be a list of strings')
    urls = a.urls as string[]
  }
  if (type === 'image') {
    if (url === undefined || url === '') throw badRequest('args.url is required for an image preheat (https://HOST/v2/REPO/manifests/TAG or HOST/REPO:TAG)')
    try {
      parseImageRef(url, options.insecureRegistries)
    } catch (err) {
      throw badRequest((err as Error).message)
    }
  } else {
    urls = [...(urls ?? []), ...(url === undefined || url === '' ? [] : [url])]
    if (urls.length === 0) throw badRequest('args.url or args.urls is required for a file preheat')
    for (const u of urls) checkUrl(u)
  }

  const platform = stringField(a, 'platform') || 'linux/amd64'
  checkPlatform(platform)

  let parallelism = options.defaultParallelism
  if (a.parallelism !== undefined && a.parallelism !== null && a.parallelism !== 0) {
    if (typeof a.parallelism !== 'number' || !Number.isInteger(a.parallelism) || a.parallelism < 1 || a.parallelism > 64) {
      throw badRequest('args.parallelism must be an integer from 1 to 64')
    }
    parallelism = a.parallelism
  }

  // Dragonfly's `timeout` is a Go duration: nanoseconds as a number.
  const deadlineMs = a.deadline !== undefined ? parseDurationMs(a.deadline, 'args.deadline', 1000) : parseDurationMs(a.timeout, 'args.timeout', 1e-6)
  const ttlRaw = a.ttlAfterFinished ?? a.ttl_after_finished
  const ttlMs = ttlRaw === undefined ? options.defaultTtlMs : parseDurationMs(ttlRaw, 'args.ttlAfterFinished', 1000)

  return {
    type, url: type === 'image' ? url : undefined, urls: type === 'file' ? urls : undefined, platform, scope, ...(labels === undefined ? {} : { labels }), headers,
    username: stringField(a, 'username'), password: stringField(a, 'password'), parallelism, deadlineMs, ttlMs
  }
}
