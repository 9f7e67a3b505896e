// nydus-fs snapshotter under a real containerd (1.6, its own root, state and socket) with
// real runc: a two-layer Debian image with python3 is converted, pulled with
// `ctr-remote image rpull --snapshotter naiad` and run with `ctr run --snapshotter naiad`
// while the registry (behind a counting proxy) serves a small fraction of the image. The
// same containerd runs the plain OCI image through the same snapshotter; the snapshotter is
// killed and restarted between runs; the registry goes down and reads of fetched files still
// work while the others fail with EIO within the read timeout; the access order the first run
// recorded reaches the registry and a second snapshotter (another "node") prefetches it;
// removing the image unmounts the lazy image.

import { spawn, type ChildProcess } from 'node:child_process'
import { createWriteStream } from 'node:fs'
import { mkdir, mkdtemp, readdir, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { CountingProxy, run, runTool, startContainerd, startRegistry, type ContainerdHandle, type RegistryHandle } from '@naiad/testkit'

import { querySocket, type MountStats } from '../src/mount/stats.ts'
import { mountType, readState } from '../src/mount/runtime.ts'
import { RegistryClient } from '@naiad/oci'
import { fetchAccessOrder } from '../src/snapshotter/access-order.ts'
import { debianPythonLayout, pushLayout } from './fixtures/debian-image.ts'
import { convert, NYDUS_FS } from './fixtures/mount-helpers.ts'

const MiB = 1024 * 1024
const READ_TIMEOUT_MS = 5_000

interface Snapshotter { proc: ChildProcess; root: string; socket: string; log: string }

let dir: string
let registry: RegistryHandle
let proxy: CountingProxy
let containerd: ContainerdHandle
let naiad: Snapshotter
let other: Snapshotter
let lazyRef: string
let sourceRef: string
/** Bytes of the lazy image (data blobs and bootstrap) and of the source's layers. */
let lazyBytes = 0
let lazyDigest = ''
let sourceLayers: string[] = []

async function startSnapshotter(root: string, socket: string): Promise<Snapshotter> {
  await mkdir(root, { recursive: true })
  const log = join(root, '..', `${root.split('/').at(-1)}.log`)
  const out = createWriteStream(log, { flags: 'a' })
  const proc = spawn(process.execPath, [NYDUS_FS, 'snapshotter', '--socket', socket, '--root', root, '--daemon', 'none', '--plain-http',
    '--read-timeout', `${READ_TIMEOUT_MS}ms`, '--log-level', 'debug'], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, NAIAD_ACCESS_SETTLE: '2s' } })
  let text = ''
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`snapshotter did not start: ${text.slice(-2000)}`)), 30_000)
    proc.stderr!.on('data', (d: Buffer) => {
      out.write(d)
      if (text.length < 100_000) text += d.toString()
      if (text.includes('"snapshotter ready"')) { clearTimeout(timer); resolve() }
    })
    proc.once('exit', (code) => { clearTimeout(timer); reject(new Error(`snapshotter exited ${code}: ${text.slice(-2000)}`)) })
  })
  return { proc, root, socket, log }
}

async function stopProcess(proc: ChildProcess | undefined, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (proc === undefined || proc.exitCode !== null || proc.signalCode !== null) return
  const exited = new Promise((r) => proc.once('exit', r))
  proc.kill(signal)
  await exited
}

function ctr(args: string[], timeoutMs = 180_000): ReturnType<ContainerdHandle['ctr']> {
  return containerd.ctr(args, timeoutMs)
}

/**
 * `ctr run --rm` of `script` in a container of `ref`, its stdout written to a file on a bind
 * mount and read once ctr returns: ctr's own copy of a container's stdout can lose the last
 * line printed as the container exits (a CI run got "42" without the line echoed after it).
 */
async function ctrRun(ref: string, name: string, script: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const out = join(dir, `out-${name}`)
  await mkdir(out, { recursive: true })
  const r = await ctr(['run', '--rm', '--snapshotter', 'naiad', '--mount', `type=bind,src=${out},dst=/out,options=rbind:rw`, ref, name,
    '/bin/sh', '-c', `exec > /out/stdout; ${script}`])
  const stdout = await readFile(join(out, 'stdout'), 'utf8').catch(() => '')
  return { code: r.code, stdout, stderr: r.stderr }
}

function rpull(snapshotter: string, ref: string): ReturnType<typeof runTool> {
  return runTool('ctr-remote', ['-a', containerd.socket, 'image', 'rpull', '--plain-http', '--snapshotter', snapshotter, ref], { timeoutMs: 180_000 })
}

function servedTotal(): number {
  let n = 0
  for (const b of proxy.served.values()) n += b
  return n
}

/** Stats of the lazy mount of the image under a snapshotter's root. */
async function mountStats(s: Snapshotter): Promise<MountStats> {
  const mnt = join(s.root, 'mnt', lazyDigest.slice(7, 23))
  const state = await readState(join(s.root, 'run'), mnt)
  if (state === undefined) throw new Error(`no lazy mount at ${mnt}`)
  return JSON.parse(await querySocket(state.socket, '/stats')) as MountStats
}

/** Unmounts what a snapshotter left mounted (lazy mounts outlive it on purpose). */
async function unmountAll(s: Snapshotter | undefined): Promise<void> {
  if (s === undefined) return
  for (const name of await readdir(join(s.root, 'mnt')).catch(() => [] as string[])) {
    const mnt = join(s.root, 'mnt', name)
    if (await mountType(mnt) !== undefined) await run(NYDUS_FS, ['umount', mnt], { env: { NAIAD_RUN_DIR: join(s.root, 'run') }, timeoutMs: 60_000 })
  }
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'nfs-snapshotter-'))
  const { image } = await debianPythonLayout()
  registry = await startRegistry(join(dir, 'registry'))
  proxy = await new CountingProxy(registry.url).start()
  await pushLayout(image, `${registry.host}/debian:python`)
  await convert(`${registry.host}/debian:python`, `${registry.host}/debian:lazy`)
  // containerd and the snapshotter reach the registry through the counting proxy.
  lazyRef = `${proxy.host}/debian:lazy`
  sourceRef = `${proxy.host}/debian:python`
  const client = new RegistryClient(registry.host, { plainHttp: true })
  try {
    const index = JSON.parse((await client.getManifest('debian', 'lazy', ['application/vnd.oci.image.index.v1+json'])).body.toString()) as { manifests: Array<{ digest: string; annotations: Record<string, string> }> }
    lazyDigest = index.manifests.find((m) => m.annotations['io.naiad.lazy.role'] === 'lazy')!.digest
    const lazy = JSON.parse((await client.getManifest('debian', lazyDigest)).body.toString()) as { layers: Array<{ size: number }> }
    lazyBytes = lazy.layers.reduce((n, l) => n + l.size, 0)
    const source = JSON.parse((await client.getManifest('debian', 'python')).body.toString()) as { layers: Array<{ digest: string }> }
    sourceLayers = source.layers.map((l) => l.digest)
  } finally {
    await client.close()
  }
  naiad = await startSnapshotter(join(dir, 'naiad'), join(dir, 'naiad.sock'))
  // The second "node": its own root and cache, used only once the first published the access order.
  other = await startSnapshotter(join(dir, 'naiad2'), join(dir, 'naiad2.sock'))
  containerd = await startContainerd(join(dir, 'containerd'), {
    config: [
      '[proxy_plugins]',
      '  [proxy_plugins.naiad]', '    type = "snapshot"', `    address = "${naiad.socket}"`,
      '  [proxy_plugins.naiad2]', '    type = "snapshot"', `    address = "${other.socket}"`,
      ''
    ].join('\n')
  })
}, 600_000)

afterAll(async () => {
  if (proxy !== undefined) proxy.down = false
  await containerd?.stop()
  await stopProcess(naiad?.proc)
  await stopProcess(other?.proc)
  await unmountAll(naiad)
  await unmountAll(other)
  await proxy?.stop()
  await registry?.stop()
  if (dir !== undefined) await rm(dir, { recursive: true, force: true })
}, 180_000)

describe('nydus-fs snapshotter in containerd', () => {
  it('pulls the converted image with ctr-remote rpull and runs python3 from it, the registry serving a small fraction of it', async () => {
    proxy.served.clear()
    const pull = await rpull('naiad', lazyRef)
    expect(pull.code, pull.stderr).toBe(0)
    const pulled = servedTotal()
    const r = await ctrRun(lazyRef, 'lazy-1', 'python3 -c "print(42)"')
    expect(r.code, r.stderr).toBe(0)
    expect(r.stdout).toBe('42\n')
    const served = servedTotal()
    const s = await mountStats(naiad)
    console.log(`rpull + ctr run: registry served ${(served / MiB).toFixed(2)} MiB (pull ${(pulled / 1024).toFixed(1)} KiB) of a ${(lazyBytes / MiB).toFixed(1)} MiB lazy image ` +
      `= ${(100 * served / lazyBytes).toFixed(2)} %; mount: ${s.fetch.chunks} chunks, ${s.reads.count} reads, prefetch ${s.prefetch.filesDone}/${s.prefetch.files} files`)
    expect(served / lazyBytes).toBeLessThan(0.2)
    // containerd downloaded and unpacked no layer: not a byte of the source's layers was served.
    for (const digest of sourceLayers) expect(proxy.bytesServed(digest)).toBe(0)
  })

  it('publishes the access order next to the image; another node mounting it prefetches those files', async () => {
    const client = new RegistryClient(registry.host, { plainHttp: true })
    let order: Buffer | undefined
    try {
      for (let i = 0; i < 120 && order === undefined; i++) {
        order = await fetchAccessOrder(client, 'debian', lazyDigest)
        if (order === undefined) await new Promise((r) => setTimeout(r, 500))
      }
    } finally {
      await client.close()
    }
    expect(order, 'no access order in the registry after 60 s').toBeDefined()
    const files = (JSON.parse(order!.toString()) as { files: string[] }).files
    expect(files.some((f) => f.startsWith('/usr/bin/python3'))).toBe(true)

    const pull = await rpull('naiad2', lazyRef)
    expect(pull.code, pull.stderr).toBe(0)
    const s = await mountStats(other)
    console.log(`second node: access order of ${files.length} files from the registry; prefetch ${s.prefetch.filesDone}/${s.prefetch.files} files (${s.prefetch.accessLog})`)
    expect(s.prefetch.accessLog).toBe('replayed')
    expect(s.prefetch.files).toBeGreaterThan(files.length / 2)
  })

  it('runs an ordinary OCI image through the same snapshotter (overlay of unpacked layers)', async () => {
    const pull = await ctr(['image', 'pull', '--plain-http', '--snapshotter', 'naiad', sourceRef])
    expect(pull.code, pull.stderr).toBe(0)
    const r = await ctrRun(sourceRef, 'plain-1', 'python3 -c "print(43)"; cat /etc/debian_version; echo x > /tmp/w && cat /tmp/w')
    expect(r.code, r.stderr).toBe(0)
    expect(r.stdout).toMatch(/^43\n12\.\d+\nx\n$/)
  })

  it('keeps working across a killed and restarted snapshotter; the lazy mount stays up', async () => {
    const mnt = join(naiad.root, 'mnt', lazyDigest.slice(7, 23))
    const before = await readState(join(naiad.root, 'run'), mnt)
    await stopProcess(naiad.proc, 'SIGKILL')
    naiad = await startSnapshotter(naiad.root, naiad.socket)
    // containerd redials its proxy plugins with a backoff of at most 3 s; calls fail fast until then.
    let probe = await ctr(['snapshots', '--snapshotter', 'naiad', 'ls'])
    for (let i = 0; i < 60 && probe.code !== 0; i++) {
      await new Promise((r) => setTimeout(r, 500))
      probe = await ctr(['snapshots', '--snapshotter', 'naiad', 'ls'])
    }
    expect(probe.code, probe.stderr).toBe(0)
    const r = await ctrRun(lazyRef, 'lazy-2', 'python3 -c "print(6 * 7)"; echo written > /root/f && cat /root/f')
    expect(r.code, r.stderr).toBe(0)
    expect(r.stdout).toBe('42\nwritten\n')
    const after = await readState(join(naiad.root, 'run'), mnt)
    expect(after?.pid).toBe(before?.pid)
    expect(await readFile(naiad.log, 'utf8')).toMatch(/"alive":1,"gone":0,"msg":"lazy mounts found"/)
  })

  it('with the registry down, fetched files are read and the others fail with EIO within the read timeout', async () => {
    proxy.down = true
    try {
      const t0 = Date.now()
      // cat's status is the container's exit code: ctr run returns it, while the last line a
      // container prints as it exits can be lost (a CI run got "42" without the "cat exit 1"
      // echoed after it, with the container's exit code 0: the echo ran).
      const r = await ctr(['run', '--rm', '--snapshotter', 'naiad', lazyRef, 'lazy-3', '/bin/sh', '-c',
        'python3 -c "print(42)"; cat /usr/bin/perl > /dev/null; exit $?'])
      const ms = Date.now() - t0
      console.log(`registry down: ctr run took ${ms} ms; exit ${r.code}; stderr: ${r.stderr.trim()}`)
      expect(r.code, r.stderr).toBe(1)
      expect(r.stdout).toBe('42\n')
      expect(r.stderr).toContain('Input/output error')
      // Read timeout 5 s; a loaded machine gets wide room, a hang would not.
      expect(ms).toBeLessThan(READ_TIMEOUT_MS * 6)
    } finally {
      proxy.down = false
    }
  })

  it('unmounts the lazy image once the image is removed and containerd collects its snapshots', async () => {
    const mnt = join(naiad.root, 'mnt', lazyDigest.slice(7, 23))
    expect(await mountType(mnt)).toBe('fuse.nydus-fs')
    const rmi = await ctr(['image', 'rm', '--sync', lazyRef])
    expect(rmi.code, rmi.stderr).toBe(0)
    let type: string | undefined = 'fuse.nydus-fs'
    for (let i = 0; i < 100 && type !== undefined; i++) {
      type = await mountType(mnt)
      if (type !== undefined) await new Promise((r) => setTimeout(r, 200))
    }
    expect(type).toBeUndefined()
    expect(await readdir(join(naiad.root, 'mnt'))).toEqual([])
  })
})
