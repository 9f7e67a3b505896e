// HTTP Range requests (RFC 9110 §14): the one parser every Naiad server answers Range with
// (the registry mirror, the daemon's local API).

export type RangeAnswer =
  /** No usable Range: send the whole representation (200). */
  | { kind: 'whole' }
  /** One satisfiable range: send bytes [start, end] (206 with Content-Range). */
  | { kind: 'partial'; start: number; end: number }
  /** A valid range that selects nothing of `size` bytes: 416 with `bytes *\/size`. */
  | { kind: 'unsatisfiable' }

/**
 * Reads a Range header against a representation of `size` bytes. Forms: `bytes=A-B`,
 * `bytes=A-` and the suffix `bytes=-N` (the last N bytes). A header that is not a single
 * byte range (another unit, several ranges, bad syntax) is ignored, as the RFC allows.
 */
export function parseRangeHeader(header: string | undefined, size: number): RangeAnswer {
  if (header === undefined) return { kind: 'whole' }
  const m = /^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$/i.exec(header)
  if (m === null || (m[1] === '' && m[2] === '')) return { kind: 'whole' }
  if (m[1] === '') {
    const suffix = Number(m[2])
    if (suffix === 0 || size === 0) return { kind: 'unsatisfiable' }
    return { kind: 'partial', start: Math.max(0, size - suffix), end: size - 1 }
  }
  const start = Number(m[1])
  const end = m[2] === '' ? size - 1 : Math.min(size - 1, Number(m[2]))
  if (m[2] !== '' && Number(m[2]) < start) return { kind: 'whole' }
  if (start >= size) return { kind: 'unsatisfiable' }
  return { kind: 'partial', start, end }
}

/** `Content-Range` for an answer to a satisfiable range, or for 416 (`bytes *\/size`). */
export function contentRange(answer: RangeAnswer, size: number): string {
  return answer.kind === 'partial' ? `bytes ${answer.start}-${answer.end}/${size}` : `bytes */${size}`
}
