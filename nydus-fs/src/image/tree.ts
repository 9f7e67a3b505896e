// Paths in a bootstrap's tree: lookup (no symlinks followed, like lstat) and walks.

import type { Bootstrap, Inode } from '@naiad/proto/contracts'

import { compareNames } from './bootstrap.ts'

/** Binary search of a directory's sorted entries; the child's inode number or undefined. */
export function findEntry(dir: Inode, name: string): number | undefined {
  let lo = 0
  let hi = dir.entries.length - 1
  const key = Buffer.from(name)
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1
    const c = Buffer.compare(Buffer.from(dir.entries[mid].name), key)
    if (c === 0) return dir.entries[mid].ino
    if (c < 0) lo = mid + 1
    else hi = mid - 1
  }
  return undefined
}

/** The inode number at an absolute or root-relative path (`/`, `/etc/passwd`), or undefined. */
export function lookupPath(b: Bootstrap, path: string): number | undefined {
  let ino = b.superblock!.rootIno
  for (const part of path.split('/')) {
    if (part === '' || part === '.') continue
    const node = b.inodes[ino]
    if (node.type !== 'dir') return undefined
    const next = findEntry(node, part)
    if (next === undefined) return undefined
    ino = next
  }
  return ino
}

/**
 * The inode number a path leads to when symlinks are followed (every component, the last
 * one too), resolved inside the image like a chroot; undefined when it leads nowhere.
 */
export function resolvePath(b: Bootstrap, path: string, maxHops = 40): number | undefined {
  const root = b.superblock!.rootIno
  const stack: number[] = [root]
  const queue = path.split('/')
  let hops = 0
  while (queue.length > 0) {
    const part = queue.shift()!
    if (part === '' || part === '.') continue
    if (part === '..') {
      if (stack.length > 1) stack.pop()
      continue
    }
    const dir = b.inodes[stack[stack.length - 1]]
    if (dir.type !== 'dir') return undefined
    const next = findEntry(dir, part)
    if (next === undefined) return undefined
    const node = b.inodes[next]
    if (node.type === 'symlink') {
      if (++hops > maxHops) return undefined
      if (node.symlink.startsWith('/')) stack.length = 1
      queue.unshift(...node.symlink.split('/'))
      continue
    }
    stack.push(next)
  }
  return stack[stack.length - 1]
}

/** The inode at a path, or undefined. */
export function lookupInode(b: Bootstrap, path: string): Inode | undefined {
  const ino = lookupPath(b, path)
  return ino === undefined ? undefined : b.inodes[ino]
}

export interface WalkEntry {
  path: string
  ino: number
  inode: Inode
}

/** Every path in the tree, depth first, entries in name order; the root first as `/`. */
export function* walk(b: Bootstrap): Generator<WalkEntry> {
  const root = b.superblock!.rootIno
  const stack: Array<{ ino: number; path: string }> = [{ ino: root, path: '/' }]
  while (stack.length > 0) {
    const { ino, path } = stack.pop()!
    const inode = b.inodes[ino]
    yield { path, ino, inode }
    if (inode.type !== 'dir') continue
    for (let i = inode.entries.length - 1; i >= 0; i--) {
      const e = inode.entries[i]
      stack.push({ ino: e.ino, path: path === '/' ? `/${e.name}` : `${path}/${e.name}` })
    }
  }
}

/** The first path (in walk order) of every inode; hardlinked inodes have several. */
export function firstPaths(b: Bootstrap): string[] {
  const out: string[] = new Array<string>(b.inodes.length)
  for (const { path, ino } of walk(b)) if (out[ino] === undefined) out[ino] = path
  return out
}

export { compareNames }
