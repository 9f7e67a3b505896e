// The end-of-download verifier on its own, against a real piece store in a temporary
// directory: which way it finds the whole content's digest (the origin stream, the source's
// piece digests, or reading the content back), and what the digest must then match.

import { createHash } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { makeBlob } from '@naiad/testkit'

import { checkContent, checkUserDigest, wholeDigest, type WholeDigestInput } from '../src/download/verifier.ts'
import { DiskPieceStore } from '../src/storage/piece-store.ts'

const PIECE = 64 * 1024
const BLOB = makeBlob(3 * PIECE + 100, 'verifier')
const COUNT = 4
const sha = (b: Uint8Array): Buffer => createHash('sha256').update(b).digest()
const pieceOf = (n: number): Buffer => BLOB.subarray(n * PIECE, Math.min(BLOB.length, (n + 1) * PIECE))
const WHOLE = sha(BLOB)

describe('whole-content digest', () => {
  let dir: string
  let store: DiskPieceStore

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'naiad-verifier-'))
    store = new DiskPieceStore({ dir, quota: 1e9 })
    store.ensureTask('t', 'http://origin/blob', PIECE)
    for (let num = 0; num < COUNT; num++) {
      const data = pieceOf(num)
      await store.writePiece('t', { num, offset: num * PIECE, length: data.length, sha256: sha(data) }, data)
    }
  })

  afterAll(async () => {
    await store.close()
    await rm(dir, { recursive: true, force: true })
  })

  const input = (over: Partial<WholeDigestInput>): WholeDigestInput => ({
    store, taskId: 't', contentLength: BLOB.length, pieceCount: COUNT, originSha256: undefined, source: undefined, userDigest: undefined, ...over
  })
  const source = (over: { sha256?: Uint8Array; isSeed?: boolean; digest?: (n: number) => Uint8Array | undefined } = {}): WholeDigestInput['source'] =>
    ({ sha256: over.sha256 ?? WHOLE, isSeed: over.isSeed ?? false, digest: over.digest ?? ((n) => sha(pieceOf(n))) })

  it('takes the digest hashed while streaming from the origin as it is', async () => {
    const streamed = Buffer.alloc(32, 1)
    expect(await wholeDigest(input({ originSha256: streamed, source: source() }))).toEqual({ sha256: streamed, by: 'origin-stream' })
  })

  it('takes the source\'s digest when every stored piece has the digest the source published', async () => {
    expect(await wholeDigest(input({ source: source() }))).toEqual({ sha256: WHOLE, by: 'source-digests' })
  })

  it('reads the content back when a piece\'s digest is missing or differs, or no whole digest was published', async () => {
    expect(await wholeDigest(input({ source: source({ digest: (n) => n === 2 ? undefined : sha(pieceOf(n)) }) }))).toEqual({ sha256: WHOLE, by: 'read-back' })
    expect(await wholeDigest(input({ source: source({ digest: (n) => n === 1 ? Buffer.alloc(32) : sha(pieceOf(n)) }) }))).toEqual({ sha256: WHOLE, by: 'read-back' })
    expect(await wholeDigest(input({ source: source({ sha256: new Uint8Array(0) }) }))).toEqual({ sha256: WHOLE, by: 'read-back' })
    // No source digests at all.
    expect(await wholeDigest(input({}))).toEqual({ sha256: WHOLE, by: 'read-back' })
  })

  it('trusts the source\'s digest against a user digest only when the source is the supernode\'s seed', async () => {
    const userDigest = `sha256:${WHOLE.toString('hex')}`
    expect((await wholeDigest(input({ source: source(), userDigest }))).by).toBe('read-back')
    expect((await wholeDigest(input({ source: source({ isSeed: true }), userDigest }))).by).toBe('source-digests')
  })
})

describe('content checks', () => {
  it('passes a digest that matches what it must', () => {
    expect(() => checkContent(WHOLE, { source: WHOLE, user: `sha256:${WHOLE.toString('hex')}` })).not.toThrow()
    expect(() => checkContent(WHOLE, { source: undefined, user: undefined })).not.toThrow()
    expect(() => checkUserDigest(WHOLE, '')).not.toThrow()
  })

  it('fails a digest that differs from the source\'s or the user\'s, with DFD_ERR_DIGEST_MISMATCH', () => {
    expect(() => checkContent(WHOLE, { source: Buffer.alloc(32), user: undefined })).toThrow(expect.objectContaining({ code: 'DFD_ERR_DIGEST_MISMATCH', message: expect.stringContaining('differs from the source') }))
    expect(() => checkContent(WHOLE, { source: undefined, user: `sha256:${'0'.repeat(64)}` })).toThrow(expect.objectContaining({ code: 'DFD_ERR_DIGEST_MISMATCH', message: expect.stringContaining('expected sha256:000') }))
  })
})
