// The prefetch table: what a container is all but certain to read first, fetched before
// anything asks for it. Kept deliberately simple (docs/lazy-image-format.md):
//   1. the entrypoint's (else the command's) program, found on the config's PATH;
//   2. the dynamic loaders in /lib, /lib64, /usr/lib, /usr/lib64 (ld-linux*, ld-musl*);
//   3. regular files directly in /etc of at most 64 KiB (passwd, group, hosts, ld.so.cache…);
// at most 256 inodes, in that order. The mount adds the access order it records on first start.

import type { Bootstrap } from '@naiad/proto/contracts'

import { resolvePath } from '../image/tree.ts'

const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
const ETC_MAX_SIZE = 64 * 1024
export const PREFETCH_MAX = 256

interface ImageConfigish {
  config?: { Entrypoint?: unknown; Cmd?: unknown; Env?: unknown; WorkingDir?: unknown }
}

/** The program a container of this config starts, as a path in the image (or undefined). */
export function entrypointProgram(b: Bootstrap, config: unknown): number | undefined {
  const c = (config as ImageConfigish | null)?.config ?? {}
  const argv = [...(Array.isArray(c.Entrypoint) ? c.Entrypoint : []), ...(Array.isArray(c.Cmd) ? c.Cmd : [])].filter((a): a is string => typeof a === 'string')
  const program = argv[0]
  if (program === undefined || program === '') return undefined
  const isFile = (ino: number | undefined): ino is number => ino !== undefined && b.inodes[ino].type === 'file'
  if (program.includes('/')) {
    const cwd = typeof c.WorkingDir === 'string' && c.WorkingDir !== '' ? c.WorkingDir : '/'
    const ino = resolvePath(b, program.startsWith('/') ? program : `${cwd}/${program}`)
    return isFile(ino) ? ino : undefined
  }
  const env = Array.isArray(c.Env) ? c.Env.filter((e): e is string => typeof e === 'string') : []
  const path = env.find((e) => e.startsWith('PATH='))?.slice(5) ?? DEFAULT_PATH
  for (const dir of path.split(':')) {
    if (!dir.startsWith('/')) continue
    const ino = resolvePath(b, `${dir}/${program}`)
    if (isFile(ino)) return ino
  }
  return undefined
}

export function prefetchTable(b: Bootstrap, config: unknown): number[] {
  const out: number[] = []
  const add = (ino: number | undefined): void => {
    if (ino === undefined || out.length >= PREFETCH_MAX || out.includes(ino)) return
    if (b.inodes[ino].type !== 'file' || b.inodes[ino].size === 0) return
    out.push(ino)
  }
  add(entrypointProgram(b, config))
  for (const dir of ['/lib', '/lib64', '/usr/lib', '/usr/lib64']) {
    const d = resolvePath(b, dir)
    if (d === undefined || b.inodes[d].type !== 'dir') continue
    for (const e of b.inodes[d].entries) {
      if (/^ld-(linux|musl)/.test(e.name)) add(resolvePath(b, `${dir}/${e.name}`))
    }
  }
  const etc = resolvePath(b, '/etc')
  if (etc !== undefined && b.inodes[etc].type === 'dir') {
    for (const e of b.inodes[etc].entries) {
      const n = b.inodes[e.ino]
      if (n.type === 'file' && n.size <= ETC_MAX_SIZE) add(e.ino)
    }
  }
  return out
}
