// Headers a proxy must not pass on (RFC 9110 §7.6.1 hop-by-hop fields, plus the client's
// Host and proxy credentials), in both directions.

import type { IncomingHttpHeaders } from 'node:http'

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'proxy-authorization', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'host'])

/** A client's request headers as the upstream should see them. */
export function requestHeaders(headers: IncomingHttpHeaders): Record<string, string> {
  const out: Record<string, string> = {}
  for (const [k, v] of Object.entries(headers)) {
    if (v === undefined || HOP_BY_HOP.has(k)) continue
    out[k] = Array.isArray(v) ? v.join(', ') : v
  }
  return out
}

/** An upstream's response headers as the client should see them, without those in `omit`. */
export function responseHeaders(headers: Record<string, string | string[] | undefined>, omit: string[] = []): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {}
  for (const [k, v] of Object.entries(headers)) if (v !== undefined && !HOP_BY_HOP.has(k) && !omit.includes(k)) out[k] = v
  return out
}

/** How a client named the registry to the mirror: a `naiad-ns/HOST[_PORT]` path prefix, containerd's `ns`, or neither (the default registry). */
export interface UpstreamRoute {
  /** e.g. `/v2/naiad-ns/registry.internal_5000` */
  prefix?: string
  ns?: string
}

/**
 * A registry's `Link` header (tags and catalog pagination, RFC 8288) as the mirror's client
 * should follow it: a link to the registry itself (path-absolute, or its own origin) becomes
 * a path on the mirror that names the same registry again; links elsewhere stay as they are.
 */
export function mirrorLink(link: string, registryOrigin: string, route: UpstreamRoute): string {
  return link.replace(/<([^>]*)>/g, (whole, target: string) => {
    let u: URL
    try {
      u = new URL(target, registryOrigin)
    } catch {
      return whole
    }
    if (u.origin !== registryOrigin || !u.pathname.startsWith('/v2/')) return whole
    let path = u.pathname
    if (route.prefix !== undefined) path = `${route.prefix}${path.slice('/v2'.length)}`
    else if (route.ns !== undefined) u.searchParams.set('ns', route.ns)
    return `<${path}${u.search}>`
  })
}
