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
