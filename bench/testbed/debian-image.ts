// A real Debian image for the benchmarks: `debootstrap --variant=minbase bookworm` made into a
// one-layer OCI layout with umoci, both cached in bench/.cache/ (gitignored) so that reruns
// skip the half minute of debootstrap. Each is built beside its place and renamed into it, so
// a half-built cache is never used. Needs root, debootstrap, umoci and the apt mirror.

import { spawn } from 'node:child_process'
import { access, mkdir, readFile, rename, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

export const CACHE = fileURLToPath(new URL('../.cache/', import.meta.url))

export interface Timed {
  code: number | null
  ms: number
  stdout: string
  stderr: string
}

/** Runs a command to its end, timed from spawn to exit; SIGKILLed when `signal` aborts. */
export function timedRun(cmd: string, args: string[], signal: AbortSignal, env: Record<string, string> = {}): Promise<Timed> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now()
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d: Buffer) => { stdout = (stdout + d.toString()).slice(-20_000) })
    child.stderr.on('data', (d: Buffer) => { stderr = (stderr + d.toString()).slice(-20_000) })
    const kill = (): void => { child.kill('SIGKILL') }
    signal.addEventListener('abort', kill, { once: true })
    child.once('error', reject)
    child.once('close', (code) => {
      signal.removeEventListener('abort', kill)
      resolve({ code, ms: performance.now() - t0, stdout, stderr })
    })
  })
}

/** The same, failing unless the command exits 0. */
export async function must(cmd: string, args: string[], signal: AbortSignal, env: Record<string, string> = {}): Promise<Timed> {
  const r = await timedRun(cmd, args, signal, env)
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ').slice(0, 300)} exited with ${r.code}:\n${r.stderr.slice(-2000)}`)
  return r
}

async function exists(p: string): Promise<boolean> {
  return await access(p).then(() => true, () => false)
}

/** The apt mirror this machine uses (deb822 sources), else deb.debian.org. */
async function aptMirror(signal: AbortSignal): Promise<string> {
  const r = await timedRun('sh', ['-c', "awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null"], signal)
  return r.stdout.trim().split('\n')[0] || 'http://deb.debian.org/debian'
}

/** The cached minbase rootfs, made on first use. */
export async function debianRootfs(signal: AbortSignal, log: (m: string) => void): Promise<string> {
  const dir = join(CACHE, 'debian-rootfs')
  if (await exists(join(dir, 'etc', 'debian_version'))) return dir
  await mkdir(CACHE, { recursive: true })
  const tmp = join(CACHE, `debian-rootfs.tmp-${process.pid}`)
  await rm(tmp, { recursive: true, force: true })
  log(`debootstrap --variant=minbase bookworm into ${dir} (once; about half a minute)`)
  await must('debootstrap', ['--variant=minbase', 'bookworm', tmp, await aptMirror(signal)], signal)
  await rename(tmp, dir)
  return dir
}

/**
 * Directories of the rootfs that make up the small variant (about a third of it). umoci 0.4.7
 * wrote a truncated layer (tar: "Unexpected EOF") for a tree whose last entry was
 * usr/sbin/zramctl; with the dpkg database after it the layer is whole. Every layer made here
 * is checked with `tar -tzf` anyway.
 */
const SMALL = ['etc', 'usr/bin', 'usr/sbin', 'usr/lib', 'var/lib/dpkg']

/** The small variant's tree: those directories copied (cp -a) out of the rootfs, made on first use. */
async function smallRootfs(signal: AbortSignal, log: (m: string) => void): Promise<string> {
  const dir = join(CACHE, 'debian-small-rootfs')
  if (await exists(join(dir, 'etc', 'debian_version'))) return dir
  const full = await debianRootfs(signal, log)
  const tmp = join(CACHE, `debian-small-rootfs.tmp-${process.pid}`)
  await rm(tmp, { recursive: true, force: true })
  for (const d of SMALL) {
    await mkdir(join(tmp, d, '..'), { recursive: true })
    await must('cp', ['-a', join(full, d), join(tmp, d)], signal)
  }
  await rename(tmp, dir)
  return dir
}

/**
 * An OCI layout holding the rootfs as image `base` (one gzip layer), or with `small` the
 * directories in SMALL as image `small`; made on first use.
 */
export async function debianLayout(signal: AbortSignal, log: (m: string) => void, variant: 'base' | 'small' = 'base'): Promise<{ layout: string; image: string; rootfs: string }> {
  const rootfs = variant === 'base' ? await debianRootfs(signal, log) : await smallRootfs(signal, log)
  const layout = join(CACHE, `oci-debian-${variant}`)
  const image = `${layout}:${variant}`
  if (await exists(join(layout, 'index.json')) && (await readFile(join(layout, 'index.json'), 'utf8')).includes(`"${variant}"`)) return { layout, image, rootfs }
  const tmp = join(CACHE, `oci-debian-${variant}.tmp-${process.pid}`)
  await rm(tmp, { recursive: true, force: true })
  log(`umoci: ${rootfs} as an OCI layout in ${layout} (once)`)
  await must('umoci', ['init', '--layout', tmp], signal)
  await must('umoci', ['new', '--image', `${tmp}:${variant}`], signal)
  await must('umoci', ['insert', '--image', `${tmp}:${variant}`, rootfs, '/'], signal)
  await must('umoci', ['config', '--image', `${tmp}:${variant}`, '--config.cmd', '/bin/sh'], signal)
  const layer = await layerBlob(tmp, variant)
  const check = await timedRun('tar', ['-tzf', layer.path], signal)
  if (check.code !== 0) throw new Error(`umoci made a broken layer ${layer.path}: ${check.stderr.trim()}`)
  await rename(tmp, layout)
  return { layout, image, rootfs }
}

/** Path of the single layer blob of the layout's image `tag`. */
export async function layerBlob(layout: string, tag: string): Promise<{ path: string; digest: string; size: number }> {
  const blob = (digest: string): string => join(layout, 'blobs', ...digest.split(':'))
  const index = JSON.parse(await readFile(join(layout, 'index.json'), 'utf8')) as { manifests: Array<{ digest: string; annotations?: Record<string, string> }> }
  const m = index.manifests.find((x) => x.annotations?.['org.opencontainers.image.ref.name'] === tag) ?? index.manifests[0]
  const manifest = JSON.parse(await readFile(blob(m.digest), 'utf8')) as { layers: Array<{ digest: string; size: number }> }
  if (manifest.layers.length !== 1) throw new Error(`expected one layer in ${layout}:${tag}, found ${manifest.layers.length}`)
  return { path: blob(manifest.layers[0].digest), digest: manifest.layers[0].digest, size: manifest.layers[0].size }
}

/** Pushes the layout's image to a registry with skopeo. */
export async function pushLayout(image: string, target: string, signal: AbortSignal): Promise<void> {
  await must('skopeo', ['copy', '--dest-tls-verify=false', `oci:${image}`, `docker://${target}`], signal)
}

/** Bytes of an image in a registry: manifest, config and layers. */
export async function imageBytes(registryUrl: string, repo: string, tag: string): Promise<{ layers: number; total: number }> {
  const res = await fetch(`${registryUrl}/v2/${repo}/manifests/${tag}`, { headers: { accept: 'application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json' } })
  if (res.status !== 200) throw new Error(`manifest ${repo}:${tag}: HTTP ${res.status}`)
  const text = await res.text()
  const m = JSON.parse(text) as { config: { size: number }; layers: Array<{ size: number }> }
  const layers = m.layers.reduce((a, l) => a + l.size, 0)
  return { layers, total: layers + m.config.size + Buffer.byteLength(text) }
}
