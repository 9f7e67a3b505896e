// docs/errors.md and the ERROR_CODES registry must agree: every code documented, no
// documented code that does not exist, and the same HTTP status in both.

import { readFileSync } from 'node:fs'

import { describe, expect, it } from 'vitest'

import { ERROR_CODES, NaiadError, isErrorCode } from '../src/errors.ts'

const DOC = new URL('../../docs/errors.md', import.meta.url)

/** Table rows of the doc whose first cell is a code: `| \`CODE\` | STATUS | … |`. */
function documentedCodes(markdown: string): Map<string, { status: string; line: number }> {
  const out = new Map<string, { status: string; line: number }>()
  markdown.split('\n').forEach((text, i) => {
    const m = /^\|\s*`([A-Z][A-Z0-9]*_ERR_[A-Z0-9_]+)`\s*\|\s*([^|]*?)\s*\|/.exec(text)
    if (m === null) return
    if (out.has(m[1])) throw new Error(`docs/errors.md:${i + 1}: ${m[1]} is documented twice (first at line ${out.get(m[1])!.line})`)
    out.set(m[1], { status: m[2], line: i + 1 })
  })
  return out
}

describe('error codes', () => {
  const text = readFileSync(DOC, 'utf8')
  const doc = documentedCodes(text)
  const codes = Object.keys(ERROR_CODES)

  it('parses a table row per code out of docs/errors.md', () => {
    expect(doc.size).toBeGreaterThan(0)
  })

  it('documents every code in ERROR_CODES', () => {
    const missing = codes.filter((c) => !doc.has(c))
    expect(missing, 'codes in proto/src/errors.ts without a row in docs/errors.md').toEqual([])
  })

  it('documents no code that ERROR_CODES lacks', () => {
    const unknown = [...doc.keys()].filter((c) => !isErrorCode(c))
    expect(unknown, 'rows in docs/errors.md for codes not in proto/src/errors.ts').toEqual([])
    // Prose too: a code named anywhere in the doc must exist.
    const named = new Set(text.match(/\b[A-Z][A-Z0-9]*_ERR_[A-Z0-9_]+\b/g) ?? [])
    expect([...named].filter((c) => !isErrorCode(c)), 'codes named in docs/errors.md that do not exist').toEqual([])
  })

  it('gives each code the HTTP status of the registry', () => {
    const wrong = codes
      .filter((c) => doc.has(c) && doc.get(c)!.status !== String(ERROR_CODES[c as keyof typeof ERROR_CODES].status))
      .map((c) => `${c}: docs/errors.md:${doc.get(c)!.line} says ${doc.get(c)!.status}, the registry ${ERROR_CODES[c as keyof typeof ERROR_CODES].status}`)
    expect(wrong).toEqual([])
  })

  it('uses the owner prefixes the conventions name', () => {
    const bad = codes.filter((c) => !/^(PROTO|DFD|SN|DFGET|NFS|OCI)_ERR_[A-Z0-9_]+$/.test(c))
    expect(bad).toEqual([])
  })

  it('maps a code to its status on NaiadError', () => {
    const e = new NaiadError('DFD_ERR_CACHE_FULL', 'full')
    expect(e.status).toBe(ERROR_CODES.DFD_ERR_CACHE_FULL.status)
    expect(e.toJSON()).toEqual({ code: 'DFD_ERR_CACHE_FULL', message: 'full' })
  })
})
