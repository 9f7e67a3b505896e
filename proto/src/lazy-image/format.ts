// The lazy-image format, version 1: what `nydus-fs convert` writes and `nydus-fs mount`
// and `check` read. docs/lazy-image-format.md is the prose specification; this file is
// the normative schema (protobuf wire format, see ../codec/wire.ts) and the digest rules.
//
// An image is an ordinary OCI image manifest in a registry:
//   config  — the source image's config (application/vnd.oci.image.config.v1+json)
//   layers  — the data blobs (MEDIA_TYPES.blob), then the bootstrap (MEDIA_TYPES.bootstrap)
//   annotations — ANNOTATIONS below, among them the root and bootstrap digests
//
// The bootstrap holds all metadata: superblock, inode table (with directory entries and
// each file's chunk list), chunk table, blob table, prefetch table. A data blob is the
// concatenation of chunks, each compressed on its own so any one can be read by range.

import { createHash } from 'node:crypto'

import { f, message, type MessageOf } from '../codec/wire.ts'

export const LAZY_FORMAT_VERSION = 1

export const MEDIA_TYPES = {
  /** Bootstrap: a `Bootstrap` message, zstd-compressed as one frame. */
  bootstrap: 'application/vnd.naiad.lazy.bootstrap.v1.tar+zstd',
  /** Data blob: concatenated chunks, each compressed on its own (or raw with compressor none). */
  blob: 'application/vnd.naiad.lazy.blob.v1',
  config: 'application/vnd.oci.image.config.v1+json',
  manifest: 'application/vnd.oci.image.manifest.v1+json'
} as const

export const ANNOTATIONS = {
  version: 'io.naiad.lazy.version',
  /** `sha256:<hex>` Merkle root of the filesystem tree. */
  rootDigest: 'io.naiad.lazy.root-digest',
  /** `sha256:<hex>` of the bootstrap layer blob as stored (compressed). */
  bootstrapDigest: 'io.naiad.lazy.bootstrap-digest',
  /** Chunk size in bytes. */
  chunkSize: 'io.naiad.lazy.chunk-size',
  /** `zstd` or `none`. */
  compressor: 'io.naiad.lazy.compressor',
  /** Digest of the source image manifest that was converted. */
  sourceManifest: 'io.naiad.lazy.source-manifest'
} as const

/**
 * The containerd-facing side of a converted image (docs/lazy-image-format.md, "For container
 * runtimes"): `convert` tags an OCI index holding a runtime manifest (a stub layer, then the
 * source's layers, with a config whose diff_ids match) beside the lazy manifest. containerd
 * passes layer annotations under `containerd.io/snapshot/` to the snapshotter as labels.
 */
export const RUNTIME_ANNOTATIONS = {
  /** On every runtime layer: `sha256:<hex>` of the lazy manifest (same repository). */
  lazyImage: 'containerd.io/snapshot/naiad.lazy-image',
  /** On every runtime layer: `INDEX/COUNT`, 0-based, the stub being layer 0. */
  layer: 'containerd.io/snapshot/naiad.layer',
  /** On the index entries: `runtime` or `lazy`. */
  role: 'io.naiad.lazy.role'
} as const

/** The stub layer's media type: an ordinary gzip tar layer, so every runtime accepts it. */
export const RUNTIME_STUB_MEDIA_TYPE = 'application/vnd.oci.image.layer.v1.tar+gzip'
export const OCI_INDEX_MEDIA_TYPE = 'application/vnd.oci.image.index.v1+json'

export const INODE_TYPES = ['file', 'dir', 'symlink', 'char', 'block', 'fifo', 'socket'] as const
export type InodeType = (typeof INODE_TYPES)[number]

export const CHUNK_SIZE = { default: 1024 * 1024, min: 64 * 1024, max: 16 * 1024 * 1024 } as const

export const Xattr = message('Xattr', {
  name: f.string(1),
  value: f.bytes(2)
})

export const DirEntry = message('DirEntry', {
  name: f.string(1),
  ino: f.uint32(2)
})

export const Inode = message('Inode', {
  ino: f.uint32(1), // this inode's index in Bootstrap.inodes (the root is Superblock.rootIno)
  type: f.string(2), // one of INODE_TYPES
  mode: f.uint32(3), // permission bits and setuid/setgid/sticky (no file-type bits)
  uid: f.uint32(4),
  gid: f.uint32(5),
  mtime: f.int64(6), // seconds since the epoch
  size: f.uint64(7), // file: content bytes; symlink: target length; else 0
  nlink: f.uint32(8), // hard links to this inode (directories: 2 + subdirectories)
  rdev: f.uint64(9), // char/block devices: makedev(major, minor)
  xattrs: f.repeated(f.message(10, Xattr)), // sorted by name
  symlink: f.string(11),
  chunks: f.repeated(f.uint32(12)), // file: indexes into Bootstrap.chunks, in file order
  entries: f.repeated(f.message(13, DirEntry)), // dir: sorted by name (byte order), no . or ..
  digest: f.bytes(14) // Merkle digest, see inodeDigest()
})

export const Chunk = message('Chunk', {
  digest: f.bytes(1), // SHA-256 of the uncompressed bytes
  blob: f.uint32(2), // index into Bootstrap.blobs
  offset: f.uint64(3), // offset of the stored (compressed) bytes in the blob
  storedSize: f.uint32(4),
  size: f.uint32(5) // uncompressed size (chunkSize, or less for a file's last chunk)
})

export const BlobRef = message('BlobRef', {
  digest: f.string(1), // sha256:<hex> of the data blob, as a registry layer digest
  size: f.uint64(2)
})

export const Superblock = message('Superblock', {
  version: f.uint32(1),
  chunkSize: f.uint32(2),
  compressor: f.string(3), // zstd | none
  rootIno: f.uint32(4),
  inodeCount: f.uint32(5),
  createdAt: f.int64(6)
})

export const Bootstrap = message('Bootstrap', {
  superblock: f.message(1, Superblock),
  inodes: f.repeated(f.message(2, Inode)),
  chunks: f.repeated(f.message(3, Chunk)),
  blobs: f.repeated(f.message(4, BlobRef)),
  prefetch: f.repeated(f.uint32(5)) // inode numbers to fetch first, in order
})

export type Xattr = MessageOf<typeof Xattr>
export type DirEntry = MessageOf<typeof DirEntry>
export type Inode = MessageOf<typeof Inode>
export type Chunk = MessageOf<typeof Chunk>
export type BlobRef = MessageOf<typeof BlobRef>
export type Superblock = MessageOf<typeof Superblock>
export type Bootstrap = MessageOf<typeof Bootstrap>

/** A file's digest: SHA-256 over its chunk digests, in order (an empty file hashes nothing). */
export function fileDigest(chunkDigests: Uint8Array[]): Buffer {
  const h = createHash('sha256')
  for (const d of chunkDigests) h.update(d)
  return h.digest()
}

/**
 * An inode's Merkle digest covers its metadata and its content:
 *   SHA-256( "naiad-lazy-v1\0" type "\0" mode uid gid mtime size nlink rdev (each as decimal and "\0")
 *            symlink "\0" for each xattr: name "\0" hex(value) "\0"
 *            "content\0" content )
 * where content is fileDigest(chunks) for a file, and for a directory the concatenation,
 * in entry order, of: name "\0" child inode digest.
 */
export function inodeDigest(inode: Omit<Inode, 'digest'>, content: Uint8Array): Buffer {
  const h = createHash('sha256')
  const field = (v: string | number): void => { h.update(String(v)); h.update('\0') }
  h.update('naiad-lazy-v1\0')
  field(inode.type)
  for (const v of [inode.mode, inode.uid, inode.gid, inode.mtime, inode.size, inode.nlink, inode.rdev]) field(v)
  field(inode.symlink)
  for (const x of inode.xattrs) {
    field(x.name)
    field(Buffer.from(x.value).toString('hex'))
  }
  h.update('content\0')
  h.update(content)
  return h.digest()
}

/** Directory content for inodeDigest(): name "\0" child digest, per entry in order. */
export function directoryContent(entries: Array<{ name: string; digest: Uint8Array }>): Buffer {
  const parts: Buffer[] = []
  for (const e of entries) parts.push(Buffer.from(e.name), Buffer.from([0]), Buffer.from(e.digest))
  return Buffer.concat(parts)
}
