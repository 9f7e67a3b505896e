// From the merged tree and the final chunk table to a Bootstrap: inode numbers in
// depth-first order of byte-sorted names (the root is 0), hardlinks as one inode with its
// link count, and the Merkle digests computed bottom-up.

import { LAZY_FORMAT_VERSION, type BlobRef, type Bootstrap, type Chunk, type Inode } from '@naiad/proto/contracts'

import { compareNames, validateBootstrap } from '../image/bootstrap.ts'
import { computeDigests } from '../image/merkle.ts'
import type { MergeNode, MergeTree } from './merge-tree.ts'

/** Every node reachable from the root, each once, in inode order. */
export function numberNodes(tree: MergeTree): { nodes: MergeNode[]; inos: Map<MergeNode, number>; links: Map<MergeNode, number> } {
  const nodes: MergeNode[] = []
  const inos = new Map<MergeNode, number>()
  const links = new Map<MergeNode, number>()
  const stack: MergeNode[] = [tree.root]
  while (stack.length > 0) {
    const node = stack.pop()!
    links.set(node, (links.get(node) ?? 0) + 1)
    if (inos.has(node)) continue
    inos.set(node, nodes.length)
    nodes.push(node)
    if (node.children !== undefined) {
      const names = [...node.children.keys()].sort(compareNames)
      for (let i = names.length - 1; i >= 0; i--) stack.push(node.children.get(names[i])!)
    }
  }
  return { nodes, inos, links }
}

/** Chunk indexes (of the converter's table) that the merged tree still uses. */
export function usedChunks(nodes: MergeNode[]): Set<number> {
  const used = new Set<number>()
  for (const n of nodes) for (const c of n.chunks) used.add(c)
  return used
}

export interface BuildInput {
  tree: MergeTree
  numbered: ReturnType<typeof numberNodes>
  chunks: Chunk[]
  blobs: BlobRef[]
  remap: Int32Array
  chunkSize: number
  compressor: 'zstd' | 'none'
  createdAt: number
}

export function buildBootstrap(input: BuildInput): { bootstrap: Bootstrap; rootDigest: string } {
  const { nodes, inos, links } = input.numbered
  const inodes: Inode[] = nodes.map((n, ino) => {
    const entries = n.children === undefined
      ? []
      : [...n.children.entries()].sort((a, b) => compareNames(a[0], b[0])).map(([name, child]) => ({ name, ino: inos.get(child)! }))
    const subdirs = n.children === undefined ? 0 : [...n.children.values()].filter((c) => c.type === 'dir').length
    return {
      ino,
      type: n.type,
      mode: n.mode & 0o7777,
      uid: n.uid,
      gid: n.gid,
      mtime: n.mtime,
      size: n.type === 'symlink' ? Buffer.byteLength(n.symlink) : n.size,
      nlink: n.type === 'dir' ? 2 + subdirs : links.get(n)!,
      rdev: n.rdev,
      xattrs: [...n.xattrs.entries()].sort((a, b) => compareNames(a[0], b[0])).map(([name, value]) => ({ name, value })),
      symlink: n.symlink,
      chunks: n.chunks.map((c) => input.remap[c]),
      entries,
      digest: new Uint8Array(32)
    }
  })
  const bootstrap: Bootstrap = {
    superblock: {
      version: LAZY_FORMAT_VERSION,
      chunkSize: input.chunkSize,
      compressor: input.compressor,
      rootIno: 0,
      inodeCount: inodes.length,
      createdAt: input.createdAt
    },
    inodes,
    chunks: input.chunks,
    blobs: input.blobs,
    prefetch: []
  }
  const digests = computeDigests(bootstrap)
  for (const inode of inodes) inode.digest = digests[inode.ino]
  validateBootstrap(bootstrap)
  return { bootstrap, rootDigest: `sha256:${digests[0].toString('hex')}` }
}
