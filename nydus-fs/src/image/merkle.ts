// Merkle digests of a bootstrap's tree, recomputed from its metadata and the chunk digests
// it lists (proto/src/lazy-image/format.ts has the rules). Fetching and hashing the chunk
// bytes themselves is `check`'s job; this proves the bootstrap is the one the root names.

import { directoryContent, fileDigest, inodeDigest, NaiadError, type Bootstrap, type Inode } from '@naiad/proto/contracts'

/** The Merkle digest an inode should carry, given its children's digests. */
export function expectedDigest(b: Bootstrap, inode: Inode, childDigest: (ino: number) => Uint8Array): Buffer {
  let content: Uint8Array = new Uint8Array(0)
  if (inode.type === 'file') content = fileDigest(inode.chunks.map((c) => b.chunks[c].digest))
  else if (inode.type === 'dir') content = directoryContent(inode.entries.map((e) => ({ name: e.name, digest: childDigest(e.ino) })))
  return inodeDigest(inode, content)
}

/**
 * Recomputes every reachable inode's digest bottom-up and returns them by inode number.
 * With `verify`, the first inode whose stored digest differs fails with NFS_ERR_DIGEST
 * naming its path. Expects a validated bootstrap (a tree under the root).
 */
export function computeDigests(b: Bootstrap, options: { verify?: boolean } = {}): Buffer[] {
  const out: Buffer[] = new Array<Buffer>(b.inodes.length)
  const root = b.superblock!.rootIno
  // Iterative post-order: a directory is finished after all its entries.
  const stack: Array<{ ino: number; path: string; expanded: boolean }> = [{ ino: root, path: '/', expanded: false }]
  while (stack.length > 0) {
    const top = stack[stack.length - 1]
    const inode = b.inodes[top.ino]
    if (inode.type === 'dir' && !top.expanded) {
      top.expanded = true
      for (const e of inode.entries) {
        if (out[e.ino] === undefined) stack.push({ ino: e.ino, path: top.path === '/' ? `/${e.name}` : `${top.path}/${e.name}`, expanded: false })
      }
      continue
    }
    stack.pop()
    if (out[top.ino] !== undefined) continue
    const d = expectedDigest(b, inode, (ino) => out[ino])
    if (options.verify === true && !d.equals(inode.digest)) {
      throw new NaiadError('NFS_ERR_DIGEST', `${inode.type === 'dir' ? 'directory' : inode.type} ${top.path} does not match its Merkle digest`)
    }
    out[top.ino] = d
  }
  return out
}

/** The root digest as written in the manifest annotation: `sha256:<hex>`. */
export function rootDigestOf(b: Bootstrap, options: { verify?: boolean } = {}): string {
  return `sha256:${computeDigests(b, options)[b.superblock!.rootIno].toString('hex')}`
}
