// Deterministic pseudo-random blobs of any size: the same seed gives the same bytes, so a
// test can state an expected SHA-256 without keeping the blob around. And seeded numbers, so
// that a randomised test or simulation can be rebuilt from its seed.

import { createCipheriv, createHash } from 'node:crypto'
import { createWriteStream } from 'node:fs'
import { once } from 'node:events'

/** Streams `size` bytes of AES-CTR keystream derived from `seed` (about 1 GB/s). */
export function* blobChunks(size: number, seed: string, chunk = 1024 * 1024): Generator<Buffer> {
  const key = createHash('sha256').update(seed).digest()
  const cipher = createCipheriv('aes-256-ctr', key, Buffer.alloc(16))
  const zeros = Buffer.alloc(chunk)
  for (let done = 0; done < size; done += chunk) {
    yield cipher.update(zeros.subarray(0, Math.min(chunk, size - done)))
  }
}

export function makeBlob(size: number, seed: string): Buffer {
  return Buffer.concat([...blobChunks(size, seed)])
}

/** Writes a blob to a file and returns its SHA-256 hex. */
export async function writeBlob(path: string, size: number, seed: string): Promise<string> {
  const h = createHash('sha256')
  const out = createWriteStream(path)
  for (const c of blobChunks(size, seed)) {
    h.update(c)
    if (!out.write(c)) await once(out, 'drain')
  }
  out.end()
  await once(out, 'finish')
  return h.digest('hex')
}

export function sha256Hex(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex')
}

/** A seeded generator of numbers in [0, 1) (mulberry32): the same seed gives the same sequence. */
export function prng(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}
