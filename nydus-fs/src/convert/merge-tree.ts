// The merged root filesystem, built layer by layer in memory (metadata and chunk indexes
// only, never content) with the OCI whiteout rules:
//   `.wh.NAME`      deletes NAME of the lower layers
//   `.wh..wh..opq`  makes its directory opaque: everything the lower layers put under it is hidden
// Hardlinks share one node. Paths are resolved inside the tree only (a symlink in a parent
// component is followed within the root, like a chroot), so nothing can escape it.

import { NaiadError, type InodeType } from '@naiad/proto/contracts'

import { isValidName } from '../image/bootstrap.ts'

export interface MergeNode {
  type: InodeType
  mode: number
  uid: number
  gid: number
  mtime: number
  rdev: number
  xattrs: Map<string, Buffer>
  symlink: string
  size: number
  /** Indexes into the converter's chunk table, in file order. */
  chunks: number[]
  /** Directories only. */
  children: Map<string, MergeNode> | undefined
  /** The last layer that had this path (or a path below it): whiteouts and opaque markers only hide older nodes. */
  seen: number
}

export interface NodeMeta {
  mode: number
  uid: number
  gid: number
  mtime: number
  xattrs: Map<string, Buffer>
}

const WHITEOUT = '.wh.'
const OPAQUE = '.wh..wh..opq'
const MAX_SYMLINK_HOPS = 40

/**
 * Splits a layer entry name into safe components. Absolute names and `..` components are
 * refused (NFS_ERR_UNSAFE_PATH), except "/" alone, the root; `./` prefixes, empty and `.`
 * components are dropped.
 */
export function safeComponents(name: string, what = 'entry'): string[] {
  // umoci writes the root directory itself as "/": that names no path outside the root.
  if (/^[/.]*$/.test(name) && !name.includes('..')) return []
  if (name.startsWith('/')) throw new NaiadError('NFS_ERR_UNSAFE_PATH', `${what} "${name}" is an absolute path`)
  const parts = name.split('/').filter((p) => p !== '' && p !== '.')
  if (parts.includes('..')) throw new NaiadError('NFS_ERR_UNSAFE_PATH', `${what} "${name}" has a .. component`)
  for (const p of parts) {
    if (!isValidName(p)) throw new NaiadError('NFS_ERR_BAD_LAYER', `${what} "${name}" has an invalid name component`)
  }
  return parts
}

export function newDir(meta: Partial<NodeMeta>, layer: number): MergeNode {
  return {
    type: 'dir', mode: meta.mode ?? 0o755, uid: meta.uid ?? 0, gid: meta.gid ?? 0, mtime: meta.mtime ?? 0, rdev: 0,
    xattrs: meta.xattrs ?? new Map(), symlink: '', size: 0, chunks: [], children: new Map(), seen: layer
  }
}

export class MergeTree {
  readonly root: MergeNode
  /** The layer being applied (0-based). */
  layer = 0

  constructor() {
    this.root = newDir({}, 0)
  }

  /**
   * The directory at `parts`, following symlinks within the root. With `create`, missing
   * directories are made (mode 0755, root-owned), as the layer's tar implies them.
   */
  resolveDir(parts: string[], create: boolean, entryName: string): MergeNode | undefined {
    const stack: MergeNode[] = [this.root]
    const queue = [...parts]
    let hops = 0
    while (queue.length > 0) {
      const name = queue.shift()!
      if (name === '' || name === '.') continue
      if (name === '..') {
        if (stack.length > 1) stack.pop()
        continue
      }
      const cur = stack[stack.length - 1]
      cur.seen = this.layer
      let child = cur.children!.get(name)
      if (child === undefined) {
        if (!create) return undefined
        child = newDir({}, this.layer)
        cur.children!.set(name, child)
      }
      if (child.type === 'symlink') {
        if (++hops > MAX_SYMLINK_HOPS) throw new NaiadError('NFS_ERR_BAD_LAYER', `entry "${entryName}": too many levels of symbolic links`)
        if (child.symlink.startsWith('/')) stack.length = 1
        queue.unshift(...child.symlink.split('/'))
        continue
      }
      if (child.type !== 'dir') {
        if (!create) return undefined
        throw new NaiadError('NFS_ERR_BAD_LAYER', `entry "${entryName}": parent "${name}" is a ${child.type}, not a directory`)
      }
      stack.push(child)
    }
    const dir = stack[stack.length - 1]
    dir.seen = this.layer
    return dir
  }

  /**
   * Applies one whiteout name if `parts` ends in one; returns whether it was a whiteout.
   * A whiteout is not itself part of the tree.
   */
  applyWhiteout(parts: string[], entryName: string): boolean {
    const base = parts[parts.length - 1]
    if (base === undefined || !base.startsWith(WHITEOUT)) return false
    if (base === OPAQUE) {
      const dir = this.resolveDir(parts.slice(0, -1), true, entryName)!
      this.hideOlder(dir)
      return true
    }
    // Other `.wh..wh.` names are AUFS bookkeeping (hardlink directories), never content.
    if (base.startsWith(`${WHITEOUT}${WHITEOUT}`)) return true
    const target = base.slice(WHITEOUT.length)
    if (!isValidName(target)) throw new NaiadError('NFS_ERR_BAD_LAYER', `whiteout "${entryName}" names no file`)
    const dir = this.resolveDir(parts.slice(0, -1), false, entryName)
    const victim = dir?.children!.get(target)
    if (victim !== undefined && victim.seen < this.layer) dir!.children!.delete(target)
    return true
  }

  /** Removes what older layers put under `dir`; what this layer put there stays. */
  private hideOlder(dir: MergeNode): void {
    for (const [name, child] of dir.children!) {
      if (child.seen < this.layer) dir.children!.delete(name)
      else if (child.type === 'dir') this.hideOlder(child)
    }
  }

  /** Adds or replaces the node at `parts`. A directory over a directory keeps its children. */
  put(parts: string[], node: MergeNode, entryName: string): MergeNode {
    node.seen = this.layer
    if (parts.length === 0) {
      if (node.type !== 'dir') throw new NaiadError('NFS_ERR_BAD_LAYER', `entry "${entryName}" would replace the root with a ${node.type}`)
      Object.assign(this.root, { mode: node.mode, uid: node.uid, gid: node.gid, mtime: node.mtime, xattrs: node.xattrs, seen: this.layer })
      return this.root
    }
    const parent = this.resolveDir(parts.slice(0, -1), true, entryName)!
    const name = parts[parts.length - 1]
    const existing = parent.children!.get(name)
    if (node.type === 'dir' && existing?.type === 'dir') {
      Object.assign(existing, { mode: node.mode, uid: node.uid, gid: node.gid, mtime: node.mtime, xattrs: node.xattrs, seen: this.layer })
      return existing
    }
    parent.children!.set(name, node)
    return node
  }

  /** Makes `parts` another name of the node at `targetParts` (a tar hardlink). */
  link(parts: string[], targetParts: string[], entryName: string, linkName: string): void {
    if (parts.length === 0) throw new NaiadError('NFS_ERR_BAD_LAYER', `hardlink "${entryName}" would replace the root`)
    const tdir = targetParts.length === 0 ? undefined : this.resolveDir(targetParts.slice(0, -1), false, entryName)
    const target = tdir?.children!.get(targetParts[targetParts.length - 1])
    if (target === undefined) throw new NaiadError('NFS_ERR_BAD_LAYER', `hardlink "${entryName}" points to "${linkName}", which is not in the image`)
    if (target.type === 'dir') throw new NaiadError('NFS_ERR_BAD_LAYER', `hardlink "${entryName}" points to the directory "${linkName}"`)
    target.seen = this.layer
    const parent = this.resolveDir(parts.slice(0, -1), true, entryName)!
    parent.children!.set(parts[parts.length - 1], target)
  }
}
