// Reading one chunk: where its stored bytes are, and turning them into verified content.
// Nothing leaves decodeChunk() unless its SHA-256 equals the chunk's digest.

import { createHash } from 'node:crypto'
import { zstdDecompressSync } from 'node:zlib'

import { NaiadError, type BlobRef, type Bootstrap, type Chunk } from '@naiad/proto/contracts'

import type { RegistryClient } from '@naiad/oci'

/** The blob and inclusive byte range holding chunk `index`'s stored bytes. */
export function chunkRange(b: Bootstrap, index: number): { blob: BlobRef; start: number; end: number } {
  const c = b.chunks[index]
  return { blob: b.blobs[c.blob], start: c.offset, end: c.offset + c.storedSize - 1 }
}

/**
 * Decompresses (when `compressor` is zstd) and verifies a chunk's stored bytes. Throws
 * NFS_ERR_DIGEST when the bytes are not the chunk's (corrupt, truncated, or not a frame).
 */
export function decodeChunk(stored: Uint8Array, chunk: Chunk, compressor: string): Buffer {
  if (stored.length !== chunk.storedSize) {
    throw new NaiadError('NFS_ERR_DIGEST', `chunk has ${stored.length} stored bytes, expected ${chunk.storedSize}`)
  }
  let data: Buffer
  if (compressor === 'none') {
    data = Buffer.from(stored.buffer, stored.byteOffset, stored.length)
  } else {
    try {
      data = zstdDecompressSync(stored, { maxOutputLength: chunk.size })
    } catch (err) {
      throw new NaiadError('NFS_ERR_DIGEST', `chunk does not decompress to ${chunk.size} bytes: ${(err as Error).message}`, { cause: err })
    }
  }
  if (data.length !== chunk.size) throw new NaiadError('NFS_ERR_DIGEST', `chunk decompresses to ${data.length} bytes, expected ${chunk.size}`)
  const got = createHash('sha256').update(data).digest()
  if (!got.equals(chunk.digest)) throw new NaiadError('NFS_ERR_DIGEST', `chunk sha256:${got.toString('hex')} does not match its digest sha256:${Buffer.from(chunk.digest).toString('hex')}`)
  return data
}

/** Fetches one chunk straight from the registry by range, verified. */
export async function readChunk(client: RegistryClient, repository: string, b: Bootstrap, index: number, signal?: AbortSignal): Promise<Buffer> {
  const { blob, start, end } = chunkRange(b, index)
  const stored = await client.getBlob(repository, blob.digest, { range: { start, end }, signal })
  return decodeChunk(stored, b.chunks[index], b.superblock!.compressor)
}
