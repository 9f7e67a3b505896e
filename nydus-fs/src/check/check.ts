// `nydus-fs check`: proves a lazy image whole. The bootstrap is verified against the
// manifest and its Merkle tree recomputed (loadLazyImage); then every data blob is streamed
// once and every chunk in it decompressed and hashed, and the blob itself checked against
// its digest. The first mismatch is reported with the file it belongs to.

import { NaiadError, type Bootstrap } from '@naiad/proto/contracts'

import { decodeChunk } from '../image/chunks.ts'
import { loadLazyImage } from '../image/load.ts'
import { walk } from '../image/tree.ts'
import { RegistryClient } from '@naiad/oci'
import { parseRef, formatRef } from '@naiad/oci'

export interface CheckOptions {
  ref: string
  plainHttp: boolean
  auth?: string
  timeoutMs?: number
  caFile?: string
  platform?: string
  log?: (line: string) => void
  signal?: AbortSignal
}

export interface CheckResult {
  manifestDigest: string
  rootDigest: string
  inodes: number
  files: number
  directories: number
  chunks: number
  /** Uncompressed bytes of all chunks. */
  bytes: number
  blobs: number
}

/** For each chunk, the first file (in path order) that uses it and its position there. */
export function chunkOwners(b: Bootstrap): Array<{ path: string; index: number } | undefined> {
  const owners: Array<{ path: string; index: number } | undefined> = new Array(b.chunks.length)
  for (const { path, inode } of walk(b)) {
    if (inode.type !== 'file') continue
    inode.chunks.forEach((c, index) => { owners[c] ??= { path, index } })
  }
  return owners
}

export async function checkImage(options: CheckOptions): Promise<CheckResult> {
  const log = options.log ?? ((): void => {})
  const ref = parseRef(options.ref)
  const client = new RegistryClient(ref.registry, { plainHttp: options.plainHttp, auth: options.auth, timeoutMs: options.timeoutMs, caFile: options.caFile })
  try {
    const image = await loadLazyImage(client, ref, { platform: options.platform, signal: options.signal })
    const b = image.bootstrap
    let files = 0
    let directories = 0
    for (const inode of b.inodes) {
      if (inode.type === 'file') files++
      else if (inode.type === 'dir') directories++
    }
    log(`${formatRef(ref)} (${image.digest}): bootstrap and Merkle root ${image.rootDigest} verified: ${b.inodes.length} inodes, ${files} files, ${directories} directories`)
    const owners = chunkOwners(b)
    const describe = (i: number): string => {
      const o = owners[i]
      return o === undefined ? `chunk #${i} (used by no file)` : `chunk ${o.index} of ${o.path}`
    }
    let bytes = 0
    let checked = 0
    for (const [blobIndex, blob] of b.blobs.entries()) {
      const members = b.chunks.map((c, i) => ({ c, i })).filter((x) => x.c.blob === blobIndex).sort((x, y) => x.c.offset - y.c.offset)
      const { body } = await client.openBlob(ref.repository, blob.digest, options.signal)
      let pos = 0
      let next = 0
      let pending: Buffer[] = []
      let pendingLen = 0
      let lastReport = Date.now()
      let chunkError: NaiadError | undefined
      try {
        for await (const data of body) {
          let off = 0
          while (off < data.length && next < members.length) {
            const { c, i } = members[next]
            if (pos < c.offset) {
              // Bytes between chunks (none in what convert writes): skip them.
              const skip = Math.min(c.offset - pos, data.length - off)
              off += skip
              pos += skip
              continue
            }
            const take = Math.min(c.storedSize - pendingLen, data.length - off)
            pending.push(data.subarray(off, off + take))
            pendingLen += take
            off += take
            pos += take
            if (pendingLen < c.storedSize) break
            const stored = pending.length === 1 ? pending[0] : Buffer.concat(pending)
            pending = []
            pendingLen = 0
            try {
              decodeChunk(stored, c, image.compressor)
            } catch (err) {
              chunkError = new NaiadError('NFS_ERR_DIGEST', `${describe(i)} does not match its digest`, { cause: err })
              throw chunkError
            }
            bytes += c.size
            checked++
            next++
            if (Date.now() - lastReport > 5000) {
              lastReport = Date.now()
              log(`${checked} of ${b.chunks.length} chunks verified`)
            }
          }
          pos += data.length - off
        }
      } catch (err) {
        if (err !== chunkError && err instanceof NaiadError && err.code === 'OCI_ERR_DIGEST' && next < members.length) {
          // The blob (streamed by the registry client) failed its digest before all chunks
          // were seen: name the chunk that did not verify, as the lazy image's own mismatch.
          throw new NaiadError('NFS_ERR_DIGEST', `${describe(members[next].i)} does not match its digest (data blob ${blob.digest}: ${err.message})`, { cause: err })
        }
        throw err
      }
      if (next < members.length) {
        throw new NaiadError('NFS_ERR_DIGEST', `${describe(members[next].i)} lies past the end of data blob ${blob.digest}`)
      }
      log(`blob ${blobIndex + 1}/${b.blobs.length} ${blob.digest}: ${members.length} chunks verified`)
    }
    return {
      manifestDigest: image.digest, rootDigest: image.rootDigest, inodes: b.inodes.length, files, directories,
      chunks: checked, bytes, blobs: b.blobs.length
    }
  } finally {
    await client.close()
  }
}
