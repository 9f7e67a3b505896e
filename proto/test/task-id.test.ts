// Task identity (what makes two downloads the same task), the request parsers that feed
// it, the piece size rule and piece bitmaps.

import { createHash } from 'node:crypto'

import { describe, expect, it } from 'vitest'

import { Bitmap, NaiadError, parseDigest, parseDownloadUrl, parseRange, pieceSizeFor, taskIdOf, type ErrorCode } from '../src/index.ts'

const MiB = 1024 * 1024
const GiB = 1024 * MiB
const DIGEST = `sha256:${'ab'.repeat(32)}`

function expectError(fn: () => unknown, code: ErrorCode, mention?: string): void {
  try {
    fn()
  } catch (err) {
    expect(err).toBeInstanceOf(NaiadError)
    expect((err as NaiadError).code).toBe(code)
    if (mention !== undefined) expect((err as NaiadError).message).toContain(mention)
    return
  }
  expect.unreachable('expected a NaiadError')
}

describe('taskIdOf', () => {
  const url = 'https://cdn.example/blobs/layer.tar?x=1'

  it('is the SHA-256 of the URL, range and digest, as 64 hex digits', () => {
    const id = taskIdOf({ url, range: '0-9', digest: DIGEST })
    expect(id).toMatch(/^[0-9a-f]{64}$/)
    const expected = createHash('sha256').update(`${url}\0` + `0-9\0${DIGEST}`).digest('hex')
    expect(id).toBe(expected)
    expect(taskIdOf({ url, range: '0-9', digest: DIGEST })).toBe(id)
  })

  it('ignores filtered query parameters, wherever they are and whatever their value', () => {
    const base = taskIdOf({ url: 'https://cdn.example/f?x=1', filter: ['sig', 'expires'] })
    expect(taskIdOf({ url: 'https://cdn.example/f?x=1&sig=aaa&expires=1', filter: ['sig', 'expires'] })).toBe(base)
    expect(taskIdOf({ url: 'https://cdn.example/f?sig=bbb&x=1&expires=2&sig=ccc', filter: ['sig', 'expires'] })).toBe(base)
    // Without the filter the signature is part of the identity.
    expect(taskIdOf({ url: 'https://cdn.example/f?x=1&sig=aaa' })).not.toBe(taskIdOf({ url: 'https://cdn.example/f?x=1&sig=bbb' }))
  })

  it('drops the "?" when every parameter was filtered out', () => {
    expect(taskIdOf({ url: 'https://cdn.example/f?sig=1', filter: ['sig'] })).toBe(taskIdOf({ url: 'https://cdn.example/f' }))
  })

  it('a filter naming absent parameters does not change the ID', () => {
    // One client configured with a filter and one without must still share the task.
    for (const u of ['https://cdn.example/f', 'https://cdn.example/f?x=1', 'https://cdn.example/f?name=a%20b', 'https://cdn.example/f?p=%2Fx']) {
      expect(taskIdOf({ url: u, filter: ['sig'] }), u).toBe(taskIdOf({ url: u }))
    }
  })

  it('keeps parameters that are not filtered', () => {
    expect(taskIdOf({ url: 'https://cdn.example/f?x=1', filter: ['sig'] })).not.toBe(taskIdOf({ url: 'https://cdn.example/f?x=2', filter: ['sig'] }))
  })

  it('ignores the fragment and normalises the URL', () => {
    expect(taskIdOf({ url: `${url}#part` })).toBe(taskIdOf({ url }))
    expect(taskIdOf({ url: 'HTTPS://CDN.example:443/blobs/layer.tar?x=1' })).toBe(taskIdOf({ url }))
  })

  it('differs by URL, range and digest', () => {
    const ids = new Set([
      taskIdOf({ url }),
      taskIdOf({ url: 'https://cdn.example/blobs/other.tar?x=1' }),
      taskIdOf({ url: 'http://cdn.example/blobs/layer.tar?x=1' }),
      taskIdOf({ url, range: '0-99' }),
      taskIdOf({ url, range: '0-100' }),
      taskIdOf({ url, digest: DIGEST }),
      taskIdOf({ url, digest: `sha256:${'cd'.repeat(32)}` }),
      taskIdOf({ url, range: '0-99', digest: DIGEST })
    ])
    expect(ids.size).toBe(8)
  })

  it('keeps range and digest apart (no ambiguity from concatenation)', () => {
    expect(taskIdOf({ url, range: 'a' })).not.toBe(taskIdOf({ url, digest: 'a' }))
    expect(taskIdOf({ url, range: '' })).toBe(taskIdOf({ url }))
  })

  it('rejects malformed URLs and non-HTTP schemes with DFD_ERR_BAD_REQUEST', () => {
    expectError(() => taskIdOf({ url: 'not a url' }), 'DFD_ERR_BAD_REQUEST', 'not a url')
    expectError(() => taskIdOf({ url: 'ftp://host/file' }), 'DFD_ERR_BAD_REQUEST', 'ftp:')
    expectError(() => parseDownloadUrl('file:///etc/passwd'), 'DFD_ERR_BAD_REQUEST', 'file:')
    expect(parseDownloadUrl('http://h:8080/a b').pathname).toBe('/a%20b')
  })
})

describe('parseDigest', () => {
  it('accepts sha256 with 64 lowercase hex digits', () => {
    expect(parseDigest(DIGEST)).toEqual({ algorithm: 'sha256', hex: 'ab'.repeat(32) })
  })

  it.each([
    '',
    'ab'.repeat(32),
    `sha256:${'AB'.repeat(32)}`,
    `sha256:${'ab'.repeat(31)}`,
    `sha256:${'ab'.repeat(32)}00`,
    `sha256:${'zz'.repeat(32)}`,
    `sha512:${'ab'.repeat(64)}`,
    `SHA256:${'ab'.repeat(32)}`,
    ` ${DIGEST}`,
    `${DIGEST}\n`
  ])('rejects %j with DFD_ERR_BAD_REQUEST', (raw) => {
    expectError(() => parseDigest(raw), 'DFD_ERR_BAD_REQUEST')
  })
})

describe('parseRange', () => {
  it('parses inclusive START-END', () => {
    expect(parseRange('0-99')).toEqual({ start: 0, end: 99 })
    expect(parseRange('5-5')).toEqual({ start: 5, end: 5 })
    expect(parseRange(`0-${Number.MAX_SAFE_INTEGER}`)).toEqual({ start: 0, end: Number.MAX_SAFE_INTEGER })
  })

  it.each(['', '10-5', '-5', '5-', '5', 'a-b', '0x1-0x2', ' 1-2', '1 - 2', 'bytes=0-1', '1-2-3', '0-99999999999999999999'])(
    'rejects %j with DFD_ERR_BAD_REQUEST',
    (raw) => {
      expectError(() => parseRange(raw), 'DFD_ERR_BAD_REQUEST', `"${raw}"`)
    }
  )
})

describe('pieceSizeFor', () => {
  it('uses 4 MiB when the length is unknown, 1 MiB when it is small', () => {
    expect(pieceSizeFor(-1)).toBe(4 * MiB)
    expect(pieceSizeFor(0)).toBe(1 * MiB)
    expect(pieceSizeFor(1)).toBe(1 * MiB)
    expect(pieceSizeFor(64 * MiB)).toBe(1 * MiB)
    expect(pieceSizeFor(256 * MiB)).toBe(1 * MiB) // exactly 256 pieces
    expect(pieceSizeFor(256 * MiB + 1)).toBe(2 * MiB)
    expect(pieceSizeFor(1 * GiB)).toBe(4 * MiB) // exactly 256 pieces
  })

  it('doubles to stay at or below 256 pieces', () => {
    expect(pieceSizeFor(1 * GiB + 1)).toBe(8 * MiB)
    expect(pieceSizeFor(2 * GiB)).toBe(8 * MiB)
    expect(pieceSizeFor(2 * GiB + 1)).toBe(16 * MiB)
    expect(pieceSizeFor(8 * GiB)).toBe(32 * MiB)
    expect(pieceSizeFor(16 * GiB)).toBe(64 * MiB)
  })

  it('never goes above 64 MiB', () => {
    expect(pieceSizeFor(16 * GiB + 1)).toBe(64 * MiB)
    expect(pieceSizeFor(1024 * GiB)).toBe(64 * MiB)
    expect(pieceSizeFor(Number.MAX_SAFE_INTEGER)).toBe(64 * MiB)
  })

  it('always returns a power of two between 1 MiB and 64 MiB with at most 256 pieces below the cap', () => {
    for (let len = 0; len < 40 * GiB; len += 97 * MiB + 12_345) {
      const size = pieceSizeFor(len)
      expect(size).toBeGreaterThanOrEqual(1 * MiB)
      expect(size).toBeLessThanOrEqual(64 * MiB)
      expect(Math.log2(size) % 1).toBe(0)
      if (size < 64 * MiB) expect(Math.ceil(len / size)).toBeLessThanOrEqual(256)
      if (size > 1 * MiB) expect(Math.ceil(len / (size / 2))).toBeGreaterThan(256)
    }
  })
})

describe('Bitmap', () => {
  it('starts empty', () => {
    const bm = new Bitmap()
    expect(bm.count()).toBe(0)
    expect([...bm.pieces()]).toEqual([])
    expect(bm.toBytes()).toEqual(new Uint8Array(0))
    expect(bm.has(0)).toBe(false)
  })

  it('sets bits LSB first within each byte, growing as needed', () => {
    const bm = new Bitmap()
    bm.set(0)
    expect([...bm.toBytes()]).toEqual([0x01])
    bm.set(9)
    expect([...bm.toBytes()]).toEqual([0x01, 0x02])
    bm.set(7)
    expect([...bm.toBytes()]).toEqual([0x81, 0x02])
    bm.set(100)
    expect(bm.toBytes().length).toBe(13)
    expect(bm.toBytes()[12]).toBe(1 << 4)
  })

  it('answers has, count and pieces consistently', () => {
    const bm = new Bitmap()
    const nums = [3, 0, 64, 8, 7, 1000, 9]
    for (const n of nums) bm.set(n)
    bm.set(8) // setting twice counts once
    expect(bm.count()).toBe(nums.length)
    expect([...bm.pieces()]).toEqual([...nums].sort((a, b) => a - b))
    for (let n = 0; n < 1100; n++) expect(bm.has(n), String(n)).toBe(nums.includes(n))
    expect(bm.has(1_000_000)).toBe(false)
  })

  it('view shows the same bits as toBytes without copying them', () => {
    const bm = new Bitmap()
    for (const n of [1, 9, 30]) bm.set(n)
    const view = bm.view()
    expect([...view.subarray(0, bm.toBytes().length)]).toEqual([...bm.toBytes()])
    expect(view.subarray(bm.toBytes().length).every((b) => b === 0)).toBe(true)
    expect(bm.view()).toBe(view)
  })

  it('trims trailing zero bytes from its wire form', () => {
    const bm = new Bitmap(new Uint8Array([0x05, 0x00, 0x00, 0x00]))
    expect([...bm.toBytes()]).toEqual([0x05])
    expect(bm.count()).toBe(2)
    expect([...bm.pieces()]).toEqual([0, 2])
  })

  it('from() copies its input, and toBytes() returns a copy', () => {
    const src = new Uint8Array([0x01])
    const bm = Bitmap.from(src)
    src[0] = 0xff
    expect(bm.count()).toBe(1)
    const out = bm.toBytes()
    out[0] = 0xff
    expect(bm.count()).toBe(1)
  })

  it('round-trips through its bytes', () => {
    const bm = new Bitmap()
    for (const n of [1, 2, 3, 17, 255, 256]) bm.set(n)
    const again = Bitmap.from(bm.toBytes())
    expect([...again.pieces()]).toEqual([1, 2, 3, 17, 255, 256])
  })
})
