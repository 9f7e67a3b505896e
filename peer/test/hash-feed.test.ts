// The hashing thread gives each piece's digest and the whole content's for bytes pushed in
// chunks of any size, keeps feeds apart, and fails a dropped feed's waiters.

import { createHash, randomBytes } from 'node:crypto'

import { describe, expect, it } from 'vitest'

import { HashFeed } from '../src/download/hash-feed.ts'

const sha = (b: Uint8Array): Buffer => createHash('sha256').update(b).digest()

describe('hash feed', () => {
  it('digests pieces and the whole content across batch and chunk boundaries, feeds side by side', async () => {
    const a = randomBytes(5 * 1024 * 1024 + 123)
    const b = randomBytes(300_000)
    const fa = new HashFeed()
    const fb = new HashFeed()
    const cuts = [0, 1000, 1024 * 1024 + 7, 3 * 1024 * 1024, a.length]
    const pieces: Array<Promise<Buffer>> = []
    for (let i = 1; i < cuts.length; i++) {
      // Chunks of 64 KiB, as an HTTP body gives them, with a feed for another read between them.
      for (let pos = cuts[i - 1]; pos < cuts[i]; pos += 65_536) {
        fa.push(a.subarray(pos, Math.min(cuts[i], pos + 65_536)))
        fb.push(b.subarray(0, 10))
      }
      pieces.push(fa.pieceDigest())
      while (fa.full) await fa.room()
    }
    const digests = await Promise.all(pieces)
    for (let i = 1; i < cuts.length; i++) expect(digests[i - 1].equals(sha(a.subarray(cuts[i - 1], cuts[i])))).toBe(true)
    expect((await fa.wholeDigest()).equals(sha(a))).toBe(true)
    fb.drop()
    await expect(fb.wholeDigest()).rejects.toMatchObject({ code: 'PROTO_ERR_ABORTED' })
  })
})
