import { createHash } from 'node:crypto'

import { NaiadError } from '../errors.ts'

export interface TaskKey {
  url: string
  /** Query parameters that do not change the content (signatures, expiry) and are left out of the ID. */
  filter?: string[]
  range?: string
  digest?: string
}

/** Parses and normalises a download URL; only http and https are accepted. */
export function parseDownloadUrl(raw: string): URL {
  let url: URL
  try {
    url = new URL(raw)
  } catch (err) {
    throw new NaiadError('DFD_ERR_BAD_REQUEST', `malformed URL "${raw}"`, { cause: err })
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new NaiadError('DFD_ERR_BAD_REQUEST', `unsupported URL scheme "${url.protocol}" (only http and https)`)
  }
  return url
}

/**
 * Task ID = SHA-256 over the URL with filtered query parameters removed, the range and the
 * digest. Two requests for the same content under different signed URLs share a task.
 */
export function taskIdOf(key: TaskKey): string {
  const url = parseDownloadUrl(key.url)
  const filter = new Set(key.filter ?? [])
  if (filter.size > 0 && url.search !== '') {
    // Drop the filtered pairs from the raw query; going through searchParams would re-encode
    // the rest (%20 → +), so the same URL would get another ID with a filter than without.
    const kept = url.search.slice(1).split('&').filter((pair) => !filter.has(queryName(pair)))
    url.search = kept.length === 0 ? '' : `?${kept.join('&')}`
  }
  url.hash = ''
  const h = createHash('sha256')
  h.update(url.toString())
  h.update('\0')
  h.update(key.range ?? '')
  h.update('\0')
  h.update(key.digest ?? '')
  return h.digest('hex')
}

function queryName(pair: string): string {
  const raw = pair.split('=', 1)[0].replace(/\+/g, ' ')
  try {
    return decodeURIComponent(raw)
  } catch {
    return raw
  }
}

const MiB = 1024 * 1024

/**
 * Piece size from content length: 1 MiB up to 64 MiB, aiming at no more than ~256 pieces
 * (4 MiB when the length is unknown). A piece is what a peer must hold whole, verified,
 * before it passes it on, so it is also the delay each hop of a swarm adds: 1 MiB pieces
 * below 256 MiB keep the tail of a many-host pull short (a 64 MiB blob in 4 MiB pieces took
 * four 4 MiB hops after the seed's last byte to reach sixteen hosts on 100 Mbit/s links).
 */
export function pieceSizeFor(contentLength: number): number {
  if (contentLength < 0) return 4 * MiB
  let size = 1 * MiB
  while (size < 64 * MiB && contentLength / size > 256) size *= 2
  return size
}

/** Parses `ALG:HEX`; only sha256 is supported. */
export function parseDigest(raw: string): { algorithm: 'sha256'; hex: string } {
  const m = /^sha256:([0-9a-f]{64})$/.exec(raw)
  if (m === null) {
    throw new NaiadError('DFD_ERR_BAD_REQUEST', `bad digest "${raw}": expected sha256: followed by 64 lowercase hex digits`)
  }
  return { algorithm: 'sha256', hex: m[1] }
}

/** Parses an inclusive byte range `START-END`. */
export function parseRange(raw: string): { start: number; end: number } {
  const m = /^(\d+)-(\d+)$/.exec(raw)
  if (m === null) throw new NaiadError('DFD_ERR_BAD_REQUEST', `bad range "${raw}": expected START-END in bytes`)
  const start = Number(m[1])
  const end = Number(m[2])
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || end < start) {
    throw new NaiadError('DFD_ERR_BAD_REQUEST', `bad range "${raw}": END must not be below START`)
  }
  return { start, end }
}
