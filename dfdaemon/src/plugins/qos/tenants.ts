// Tenants: who the bytes and requests belong to, found by the longest configured prefix
// that matches the task's URL, and each tenant's limiters.

import type { Clock } from './clock.ts'
import type { TenantSettings } from './settings.ts'
import { TokenBucket } from './token-bucket.ts'
import { WeightedShaper } from './weighted-shaper.ts'

export class Tenant {
  readonly settings: TenantSettings
  readonly requests: TokenBucket | undefined
  readonly download: WeightedShaper | undefined
  readonly upload: WeightedShaper | undefined
  active = 0
  admitted = 0
  rejected = 0

  constructor(settings: TenantSettings, clock: Clock) {
    this.settings = settings
    this.requests = settings.rate > 0 ? new TokenBucket(settings.rate, settings.burst, clock) : undefined
    this.download = settings.downloadRate > 0 ? new WeightedShaper({ rate: settings.downloadRate, weights: { all: 1 } }, clock) : undefined
    this.upload = settings.uploadRate > 0 ? new WeightedShaper({ rate: settings.uploadRate, weights: { all: 1 } }, clock) : undefined
  }
}

/**
 * The names a URL goes by for matching: itself, and `host[:port]/path` without the scheme,
 * where a registry path also loses its `/v2/` (so `registry.example:5000/team-a/` matches
 * `https://registry.example:5000/v2/team-a/app/blobs/sha256:…`).
 */
export function namesOf(url: string): string[] {
  let u: URL
  try {
    u = new URL(url)
  } catch {
    return [url]
  }
  const path = u.pathname.startsWith('/v2/') ? u.pathname.slice(3) : u.pathname
  return [url, `${u.host}${path}`]
}

export class Tenants {
  readonly all: Tenant[]
  private readonly cache = new Map<string, Tenant | null>()

  constructor(settings: TenantSettings[], clock: Clock) {
    this.all = settings.map((s) => new Tenant(s, clock))
  }

  /** The tenant with the longest matching prefix, if any. */
  of(tenantKey: string): Tenant | undefined {
    const hit = this.cache.get(tenantKey)
    if (hit !== undefined) return hit ?? undefined
    const names = namesOf(tenantKey)
    let best: Tenant | undefined
    for (const t of this.all) {
      if (!names.some((n) => n.startsWith(t.settings.match))) continue
      if (best === undefined || t.settings.match.length > best.settings.match.length) best = t
    }
    if (this.cache.size > 10_000) this.cache.clear()
    this.cache.set(tenantKey, best ?? null)
    return best
  }
}
