// Stored chunk bytes → verified content, off the event loop where it can be: zstd runs on
// libuv's thread pool (bounded to the chunk's declared size), then SHA-256 against the
// chunk digest. Nothing else turns network bytes into bytes a mount serves.

import { createHash } from 'node:crypto'
import { zstdDecompress } from 'node:zlib'

import { NaiadError, type Chunk } from '@naiad/proto/contracts'

function decompress(stored: Uint8Array, maxOutputLength: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    zstdDecompress(stored, { maxOutputLength }, (err, out) => err === null ? resolve(out) : reject(err))
  })
}

/** Throws NFS_ERR_DIGEST unless the stored bytes are exactly this chunk. */
export async function verifyChunk(stored: Buffer, chunk: Chunk, compressor: 'zstd' | 'none'): Promise<Buffer> {
  const want = Buffer.from(chunk.digest).toString('hex')
  if (stored.length !== chunk.storedSize) {
    throw new NaiadError('NFS_ERR_DIGEST', `chunk ${want}: got ${stored.length} stored bytes, expected ${chunk.storedSize}`)
  }
  let data: Buffer
  if (compressor === 'none') {
    // A copy, so the cache does not keep the whole merged range alive.
    data = Buffer.from(stored)
  } else {
    try {
      data = await decompress(stored, chunk.size)
    } catch (err) {
      throw new NaiadError('NFS_ERR_DIGEST', `chunk ${want} does not decompress to ${chunk.size} bytes: ${(err as Error).message}`, { cause: err })
    }
  }
  if (data.length !== chunk.size) throw new NaiadError('NFS_ERR_DIGEST', `chunk ${want} decompresses to ${data.length} bytes, expected ${chunk.size}`)
  const got = createHash('sha256').update(data).digest('hex')
  if (got !== want) throw new NaiadError('NFS_ERR_DIGEST', `chunk sha256:${got} does not match its digest sha256:${want}`)
  return data
}
