// Real container images for the scenarios, built once and cached under bench/.cache
// (gitignored): a Debian bookworm rootfs with python3 (debootstrap minbase +
// python3-minimal), packed as OCI image layouts with umoci. Reruns find them and skip the
// minute debootstrap takes. Needs root, debootstrap and umoci.

import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { existsSync } from 'node:fs'
import { mkdir, readFile, readdir, rename, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

export const CACHE = fileURLToPath(new URL('../.cache/', import.meta.url))
const STEP_MS = 10 * 60_000

/** Runs a command to completion on the machine, failing on a non-zero exit; returns stdout. */
export function run(cmd: string, argv: string[], what: string, signal?: AbortSignal): Promise<string> {
  const bounded = signal === undefined ? AbortSignal.timeout(STEP_MS) : AbortSignal.any([signal, AbortSignal.timeout(STEP_MS)])
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, argv, { stdio: ['ignore', 'pipe', 'pipe'], signal: bounded })
    let out = ''
    let err = ''
    child.stdout.on('data', (d: Buffer) => { out += d.toString() })
    child.stderr.on('data', (d: Buffer) => { err = (err + d.toString()).slice(-4000) })
    child.once('error', (e) => reject(new Error(`${what}: ${e.message}`)))
    child.once('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`${what}: ${cmd} exited with ${code}: ${err.trim()}`))))
  })
}

/** The machine's Debian mirror, from its apt sources. */
export async function aptMirror(): Promise<string> {
  for (const f of await readdir('/etc/apt/sources.list.d').catch(() => [] as string[])) {
    const m = /^URIs:\s*(\S+)/m.exec(await readFile(join('/etc/apt/sources.list.d', f), 'utf8').catch(() => ''))
    if (m !== null) return m[1]
  }
  const m = /^deb\s+(?:\[[^\]]*\]\s+)?(\S+)/m.exec(await readFile('/etc/apt/sources.list', 'utf8').catch(() => ''))
  if (m !== null) return m[1]
  throw new Error('no Debian mirror found in /etc/apt; pass --mirror URL')
}

export interface BuildOptions {
  rebuild?: boolean
  mirror?: string
  log?: (msg: string) => void
  signal?: AbortSignal
}

/** debootstrap bookworm minbase + python3-minimal into the cache, once. */
export async function debianPythonRootfs(o: BuildOptions = {}): Promise<string> {
  const dir = join(CACHE, 'debian-python/rootfs')
  if (o.rebuild !== true && existsSync(join(dir, 'usr/bin/python3'))) return dir
  await rm(dir, { recursive: true, force: true })
  const tmp = `${dir}.tmp`
  await rm(tmp, { recursive: true, force: true })
  await mkdir(join(dir, '..'), { recursive: true })
  o.log?.('images: debootstrap bookworm (minbase + python3-minimal) into bench/.cache (about a minute)')
  await run('debootstrap', ['--variant=minbase', '--include=python3-minimal', 'bookworm', tmp, o.mirror ?? await aptMirror()], 'debootstrap', o.signal)
  await rename(tmp, dir)
  return dir
}

export interface ExtraLayer {
  /** Path inside the image. */
  path: string
  /** Bytes of random (incompressible) content. */
  randomBytes: number
}

/**
 * An OCI image layout at bench/.cache/NAME with tag `tag`: the rootfs as the first layer,
 * then one layer per extra file. Built once.
 */
export async function ociImage(name: string, tag: string, rootfs: string, extra: ExtraLayer[], o: BuildOptions = {}): Promise<string> {
  const layout = join(CACHE, name)
  if (o.rebuild !== true && existsSync(join(layout, 'index.json'))) return layout
  const tmp = `${layout}.tmp`
  await rm(tmp, { recursive: true, force: true })
  o.log?.(`images: packing ${name}:${tag} (umoci, ${1 + extra.length} layer${extra.length === 0 ? '' : 's'})`)
  await mkdir(join(tmp, '..'), { recursive: true })
  await run('umoci', ['init', '--layout', tmp], 'umoci init', o.signal)
  await run('umoci', ['new', '--image', `${tmp}:${tag}`], 'umoci new', o.signal)
  await run('umoci', ['insert', '--image', `${tmp}:${tag}`, rootfs, '/'], 'umoci insert', o.signal)
  const staging = `${tmp}-files`
  for (const [k, e] of extra.entries()) {
    const file = join(staging, String(k))
    await mkdir(staging, { recursive: true })
    await writeFile(file, randomBytes(e.randomBytes))
    await run('umoci', ['insert', '--image', `${tmp}:${tag}`, file, e.path], 'umoci insert', o.signal)
  }
  await rm(staging, { recursive: true, force: true })
  await run('umoci', ['config', '--image', `${tmp}:${tag}`, '--config.cmd', '/usr/bin/python3', '--config.env', 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'], 'umoci config', o.signal)
  await rm(layout, { recursive: true, force: true })
  await rename(tmp, layout)
  return layout
}

/** Bytes of an image as a registry serves it: manifest, config and layers (compressed). */
export async function imageBytes(layout: string): Promise<{ total: number; layers: number[] }> {
  const blob = (digest: string): string => join(layout, 'blobs', ...digest.split(':'))
  const index = JSON.parse(await readFile(join(layout, 'index.json'), 'utf8')) as { manifests: Array<{ digest: string; size: number }> }
  const m = index.manifests[0]
  const manifest = JSON.parse(await readFile(blob(m.digest), 'utf8')) as { config: { size: number }; layers: Array<{ size: number }> }
  return { total: m.size + manifest.config.size + manifest.layers.reduce((a, l) => a + l.size, 0), layers: manifest.layers.map((l) => l.size) }
}

/** A docker-registry (distribution) configuration listening on `ip:port` with storage in `dir`. */
export function registryConfig(addr: string, storage: string): string {
  return ['version: 0.1', 'log: {level: warn}', 'storage:', '  cache: {blobdescriptor: inmemory}', `  filesystem: {rootdirectory: ${storage}}`, 'http:', `  addr: ${addr}`, ''].join('\n')
}
