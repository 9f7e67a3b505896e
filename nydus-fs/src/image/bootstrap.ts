// Bootstrap blobs: encode (protobuf, one zstd frame), decode with a bounded output, and the
// structural checks a reader relies on before it trusts any index in the bootstrap.

import { zstdDecompressSync } from 'node:zlib'

import { compress } from 'zstd-napi'
import {
  Bootstrap, CHUNK_SIZE, INODE_TYPES, LAZY_FORMAT_VERSION, NaiadError,
  type Bootstrap as BootstrapT
} from '@naiad/proto/contracts'

/** Largest decompressed bootstrap a reader accepts. */
export const BOOTSTRAP_MAX_BYTES = 256 * 1024 * 1024
/** Longest entry name in bytes (Linux NAME_MAX). */
export const NAME_MAX = 255

export function encodeBootstrap(bootstrap: BootstrapT): Buffer {
  return compress(Bootstrap.encode(bootstrap), { compressionLevel: 9 })
}

/** Decompresses, decodes and validates a bootstrap blob (NFS_ERR_BAD_IMAGE when malformed). */
export function decodeBootstrap(stored: Uint8Array): BootstrapT {
  let raw: Buffer
  try {
    raw = zstdDecompressSync(stored, { maxOutputLength: BOOTSTRAP_MAX_BYTES })
  } catch (err) {
    throw new NaiadError('NFS_ERR_BAD_IMAGE', `bootstrap is not a zstd frame of at most ${BOOTSTRAP_MAX_BYTES} bytes: ${(err as Error).message}`, { cause: err })
  }
  let b: BootstrapT
  try {
    b = Bootstrap.decode(raw)
  } catch (err) {
    throw new NaiadError('NFS_ERR_BAD_IMAGE', `bootstrap does not decode: ${(err as Error).message}`, { cause: err })
  }
  validateBootstrap(b)
  return b
}

export function isValidName(name: string): boolean {
  return name !== '' && name !== '.' && name !== '..' && !name.includes('/') && !name.includes('\0') && Buffer.byteLength(name) <= NAME_MAX
}

/** Byte-order comparison of names, the order of Inode.entries. */
export function compareNames(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b))
}

/**
 * Checks every index and invariant a reader depends on: inode numbers, types, chunk and blob
 * indexes, file sizes against chunk sizes, sorted unique entry names, and that the
 * directories form a tree under the root (no directory reachable twice, so no cycles).
 */
export function validateBootstrap(b: BootstrapT): void {
  const bad = (why: string): never => { throw new NaiadError('NFS_ERR_BAD_IMAGE', `bootstrap: ${why}`) }
  const sb = b.superblock
  if (sb === undefined) return bad('no superblock')
  if (sb.version !== LAZY_FORMAT_VERSION) {
    throw new NaiadError('NFS_ERR_NOT_LAZY', `bootstrap format version ${sb.version} is not supported (this reader knows ${LAZY_FORMAT_VERSION})`)
  }
  if (!isValidChunkSize(sb.chunkSize)) bad(`chunk size ${sb.chunkSize} is not a power of two between ${CHUNK_SIZE.min} and ${CHUNK_SIZE.max}`)
  if (sb.compressor !== 'zstd' && sb.compressor !== 'none') bad(`unknown compressor "${sb.compressor}"`)
  if (sb.inodeCount !== b.inodes.length) bad(`superblock counts ${sb.inodeCount} inodes, the table has ${b.inodes.length}`)
  if (sb.rootIno >= b.inodes.length) bad('root inode is out of range')
  for (const [i, blob] of b.blobs.entries()) {
    if (!/^sha256:[a-f0-9]{64}$/.test(blob.digest)) bad(`blob ${i} has a malformed digest`)
  }
  for (const [i, c] of b.chunks.entries()) {
    if (c.digest.length !== 32) bad(`chunk ${i} digest is not 32 bytes`)
    if (c.blob >= b.blobs.length) bad(`chunk ${i} names blob ${c.blob} of ${b.blobs.length}`)
    if (c.size === 0 || c.size > CHUNK_SIZE.max) bad(`chunk ${i} has size ${c.size}`)
    if (c.storedSize === 0 || c.offset + c.storedSize > b.blobs[c.blob].size) bad(`chunk ${i} lies outside its blob`)
    if (sb.compressor === 'none' && c.storedSize !== c.size) bad(`chunk ${i} is stored raw but its sizes differ`)
  }
  for (const [i, node] of b.inodes.entries()) {
    if (node.ino !== i) bad(`inode at index ${i} says it is ${node.ino}`)
    if (!(INODE_TYPES as readonly string[]).includes(node.type)) bad(`inode ${i} has unknown type "${node.type}"`)
    if (node.mode > 0o7777) bad(`inode ${i} mode ${node.mode.toString(8)} has file-type bits`)
    if (node.digest.length !== 32) bad(`inode ${i} digest is not 32 bytes`)
    if (node.type === 'file') {
      let total = 0
      for (const c of node.chunks) {
        if (c >= b.chunks.length) bad(`inode ${i} names chunk ${c} of ${b.chunks.length}`)
        total += b.chunks[c].size
      }
      if (total !== node.size) bad(`inode ${i} size ${node.size} differs from its chunks' ${total}`)
    } else if (node.chunks.length > 0) bad(`inode ${i} is a ${node.type} with chunks`)
    if (node.type === 'symlink' && Buffer.byteLength(node.symlink) !== node.size) bad(`symlink inode ${i} size differs from its target length`)
    if (node.type !== 'dir' && node.entries.length > 0) bad(`inode ${i} is a ${node.type} with entries`)
    let prev: string | undefined
    for (const e of node.entries) {
      if (!isValidName(e.name)) bad(`inode ${i} has an invalid entry name ${JSON.stringify(e.name)}`)
      if (prev !== undefined && compareNames(prev, e.name) >= 0) bad(`inode ${i} entries are not sorted and unique at ${JSON.stringify(e.name)}`)
      if (e.ino >= b.inodes.length || e.ino === sb.rootIno) bad(`inode ${i} entry ${JSON.stringify(e.name)} names inode ${e.ino}`)
      prev = e.name
    }
  }
  if (b.inodes[sb.rootIno].type !== 'dir') bad('the root is not a directory')
  const seenDir = new Set<number>([sb.rootIno])
  const reached = new Uint8Array(b.inodes.length)
  reached[sb.rootIno] = 1
  const stack = [sb.rootIno]
  while (stack.length > 0) {
    for (const e of b.inodes[stack.pop()!].entries) {
      reached[e.ino] = 1
      if (b.inodes[e.ino].type !== 'dir') continue
      if (seenDir.has(e.ino)) bad(`directory inode ${e.ino} is linked twice`)
      seenDir.add(e.ino)
      stack.push(e.ino)
    }
  }
  const orphan = reached.indexOf(0)
  if (orphan >= 0) bad(`inode ${orphan} is not reachable from the root`)
  for (const p of b.prefetch) if (p >= b.inodes.length) bad(`prefetch names inode ${p} of ${b.inodes.length}`)
}

export function isValidChunkSize(n: number): boolean {
  return Number.isSafeInteger(n) && n >= CHUNK_SIZE.min && n <= CHUNK_SIZE.max && (n & (n - 1)) === 0
}
