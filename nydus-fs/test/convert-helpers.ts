// Shared by the convert and check tests: the binary, and reading a converted image back
// through the registry (bootstrap tree and file contents).

import { createHash } from 'node:crypto'
import { fileURLToPath } from 'node:url'

import { run, type CommandResult } from '@naiad/testkit'

import { parseRef, RegistryClient } from '@naiad/oci'
import { loadLazyImage, lookupInode, readChunk, walk, type LazyImage } from '../src/index.ts'

export const NYDUS_FS = fileURLToPath(new URL('../bin/nydus-fs.ts', import.meta.url))

export function nydusFs(args: string[], env: Record<string, string> = {}, timeoutMs = 180_000): Promise<CommandResult> {
  return run(NYDUS_FS, args, { env, timeoutMs })
}

export interface TreeEntry {
  type: string
  mode: number
  uid: number
  gid: number
  nlink: number
  size: number
  rdev?: number
  symlink?: string
  xattrs?: Record<string, string>
  /** Files: content as a string (tests use text or known blobs). */
  sha256?: string
}

export async function openLazy(ref: string): Promise<{ client: RegistryClient; image: LazyImage; repository: string }> {
  const r = parseRef(ref)
  const client = new RegistryClient(r.registry, { plainHttp: true })
  return { client, image: await loadLazyImage(client, r), repository: r.repository }
}

/** A file's content, read chunk by chunk from the registry (each chunk verified). */
export async function readFile(client: RegistryClient, repository: string, image: LazyImage, path: string): Promise<Buffer> {
  const inode = lookupInode(image.bootstrap, path)
  if (inode === undefined || inode.type !== 'file') throw new Error(`${path} is not a file in the image`)
  const parts: Buffer[] = []
  for (const c of inode.chunks) parts.push(await readChunk(client, repository, image.bootstrap, c))
  return Buffer.concat(parts)
}

/** Every path of the image with its metadata; files with the SHA-256 of their content. */
export async function treeOf(client: RegistryClient, repository: string, image: LazyImage): Promise<Map<string, TreeEntry>> {
  const out = new Map<string, TreeEntry>()
  for (const { path, inode } of walk(image.bootstrap)) {
    const e: TreeEntry = { type: inode.type, mode: inode.mode, uid: inode.uid, gid: inode.gid, nlink: inode.nlink, size: inode.size }
    if (inode.type === 'symlink') e.symlink = inode.symlink
    if (inode.type === 'char' || inode.type === 'block') e.rdev = inode.rdev
    if (inode.xattrs.length > 0) e.xattrs = Object.fromEntries(inode.xattrs.map((x) => [x.name, Buffer.from(x.value).toString('hex')]))
    if (inode.type === 'file') e.sha256 = createHash('sha256').update(await readFile(client, repository, image, path)).digest('hex')
    out.set(path, e)
  }
  return out
}

export async function manifestStatus(registryUrl: string, repo: string, tag: string): Promise<number> {
  const res = await fetch(`${registryUrl}/v2/${repo}/manifests/${tag}`, { headers: { accept: 'application/vnd.oci.image.manifest.v1+json' } })
  await res.arrayBuffer()
  return res.status
}

export async function tagsStatus(registryUrl: string, repo: string): Promise<number> {
  const res = await fetch(`${registryUrl}/v2/${repo}/tags/list`)
  await res.arrayBuffer()
  return res.status
}
