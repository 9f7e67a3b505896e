// A real OCI registry for tests (Debian's docker-registry, distribution 2.8, on loopback
// with its own config), a counting and fault-injecting proxy to put in front of it, and
// synthetic multi-layer images pushed over the distribution API.

import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process'
import { createHash } from 'node:crypto'
import { mkdir, writeFile } from 'node:fs/promises'
import { createServer, request as httpRequest, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { gzipSync } from 'node:zlib'

import { pack } from 'tar-stream'

import { makeBlob } from './blobs.ts'
import { runTool, type CommandResult } from './processes.ts'

export interface RegistryHandle {
  /** host:port */
  host: string
  url: string
  process: ChildProcess
  stop(): Promise<void>
}

export interface RegistryOptions {
  htpasswd?: string
  tls?: { cert: string; key: string }
  /** Address to bind (default 127.0.0.1): a benchmark's network namespace has its own. */
  host?: string
  /** Spawns the registry (default child_process.spawn): a benchmark spawns it inside a network namespace. */
  spawn?: (cmd: string, args: string[], options: SpawnOptions) => ChildProcess
}

/**
 * Starts docker-registry on loopback (or `host`); with `htpasswd` it requires basic auth. It
 * binds port 0 itself and the port is read back from its "listening on" log line: no port is
 * probed and released for it.
 */
export async function startRegistry(dir: string, options: RegistryOptions = {}): Promise<RegistryHandle> {
  const host = options.host ?? '127.0.0.1'
  await mkdir(join(dir, 'data'), { recursive: true })
  const auth = options.htpasswd === undefined ? '' : `auth:\n  htpasswd:\n    realm: naiad-test\n    path: ${options.htpasswd}\n`
  // Info, not warn: the "listening on" line is an info line. Access logs go to stdout (ignored).
  const config = `version: 0.1
log: {level: info, accesslog: {disabled: true}}
storage:
  cache: {blobdescriptor: inmemory}
  filesystem: {rootdirectory: ${join(dir, 'data')}}
  delete: {enabled: true}
http:
  addr: ${host}:0
${options.tls === undefined ? '' : `  tls:\n    certificate: ${options.tls.cert}\n    key: ${options.tls.key}\n`}${auth}`
  await writeFile(join(dir, 'config.yml'), config)
  const proc = (options.spawn ?? spawn)('docker-registry', ['serve', join(dir, 'config.yml')], { stdio: ['ignore', 'ignore', 'pipe'] })
  let log = ''
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => { proc.kill('SIGKILL'); reject(new Error(`docker-registry did not say where it listens within 30 s: ${log}`)) }, 30_000)
    proc.stderr!.on('data', (d: Buffer) => {
      log = (log + d.toString()).slice(-4000)
      const m = new RegExp(`listening on ${host.replaceAll('.', '\\.')}:(\\d+)`).exec(log)
      if (m !== null) { clearTimeout(timer); resolve(Number(m[1])) }
    })
    proc.once('exit', (code) => { clearTimeout(timer); reject(new Error(`docker-registry exited with ${code}: ${log}`)) })
  })
  const url = `${options.tls === undefined ? 'http' : 'https'}://${host}:${port}`
  return {
    host: `${host}:${port}`,
    url,
    process: proc,
    stop: async () => {
      if (proc.exitCode !== null) return
      proc.kill('SIGTERM')
      await new Promise((r) => proc.once('exit', r))
    }
  }
}

export type ProxyFault = { status: number } | { truncateAt: number } | { corrupt: true } | { down: true }
  /** Sends a body up to `holdAt` bytes, then the rest once `until` resolves (optionally with its first byte flipped). */
  | { holdAt: number; until: Promise<void>; corrupt?: true }

/**
 * A reverse proxy in front of a registry that counts body bytes per path and can be told
 * to fail: answer a status, cut a body short, flip a byte, or refuse everything.
 */
export class CountingProxy {
  readonly served = new Map<string, number>()
  readonly requests: Array<{ method: string; path: string; authorization: string | undefined }> = []
  readonly faults = new Map<string, ProxyFault>()
  down = false
  private server: Server | undefined
  private readonly target: string
  host = ''
  url = ''

  constructor(target: string) {
    this.target = target
  }

  async start(): Promise<this> {
    this.server = createServer((req, res) => {
      const path = new URL(req.url ?? '/', 'http://x').pathname
      this.requests.push({ method: req.method ?? 'GET', path, authorization: req.headers.authorization })
      if (this.down) { req.socket.destroy(); return }
      const fault = [...this.faults].find(([suffix]) => path.endsWith(suffix))?.[1]
      if (fault !== undefined && 'status' in fault) {
        res.writeHead(fault.status, { 'content-type': 'application/json' }).end('{"errors":[{"code":"UNKNOWN","message":"injected"}]}')
        return
      }
      const t = new URL(this.target)
      const up = httpRequest({ host: t.hostname, port: t.port, method: req.method, path: req.url, headers: { ...req.headers, host: t.host } }, (upRes) => {
        res.writeHead(upRes.statusCode ?? 502, upRes.headers)
        let sent = 0
        let held = false
        upRes.on('data', (chunk: Buffer) => {
          if (fault !== undefined && 'truncateAt' in fault && sent + chunk.length > fault.truncateAt) {
            res.write(chunk.subarray(0, Math.max(0, fault.truncateAt - sent)))
            this.count(path, Math.max(0, fault.truncateAt - sent))
            upRes.destroy()
            res.destroy()
            return
          }
          if (fault !== undefined && 'corrupt' in fault && sent === 0 && chunk.length > 0) {
            chunk = Buffer.from(chunk)
            chunk[0] ^= 0xff
          }
          if (fault !== undefined && 'holdAt' in fault && !held && sent + chunk.length > fault.holdAt) {
            held = true
            const head = chunk.subarray(0, Math.max(0, fault.holdAt - sent))
            const rest = chunk.subarray(head.length)
            sent += head.length
            this.count(path, head.length)
            res.write(head)
            upRes.pause()
            void fault.until.then(() => {
              sent += rest.length
              this.count(path, rest.length)
              res.write(rest)
              upRes.resume()
            })
            return
          }
          sent += chunk.length
          this.count(path, chunk.length)
          if (!res.write(chunk)) { upRes.pause(); res.once('drain', () => upRes.resume()) }
        })
        upRes.on('end', () => res.end())
        upRes.on('error', () => res.destroy())
      })
      up.on('error', () => { res.destroy() })
      req.pipe(up)
    })
    this.server.listen(0, '127.0.0.1')
    await new Promise<void>((r) => this.server!.once('listening', r))
    const port = (this.server.address() as AddressInfo).port
    this.host = `127.0.0.1:${port}`
    this.url = `http://${this.host}`
    return this
  }

  private count(path: string, n: number): void {
    this.served.set(path, (this.served.get(path) ?? 0) + n)
  }

  /** Body bytes served for paths ending in `suffix` (e.g. a blob digest). */
  bytesServed(suffix: string): number {
    let n = 0
    for (const [p, b] of this.served) if (p.endsWith(suffix)) n += b
    return n
  }

  async stop(): Promise<void> {
    this.server?.closeAllConnections()
    await new Promise<void>((r) => this.server?.close(() => r()) ?? r())
  }
}

export interface PushedImage {
  repo: string
  tag: string
  manifestDigest: string
  manifest: Buffer
  config: { digest: string; size: number }
  layers: Array<{ digest: string; size: number; data: Buffer }>
}

function digestOf(data: Buffer): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`
}

/** A gzip tar layer holding the given files. */
export async function makeLayer(files: Record<string, Buffer>): Promise<Buffer> {
  const p = pack()
  const chunks: Buffer[] = []
  p.on('data', (c: unknown) => { chunks.push(c as Buffer) })
  const done = new Promise<void>((r) => p.on('end', () => r()))
  for (const [name, content] of Object.entries(files)) {
    await new Promise<void>((resolve, reject) => p.entry({ name, size: content.length, mode: 0o644, mtime: new Date(0) }, content, (err) => err ? reject(err) : resolve()))
  }
  p.finalize()
  await done
  return gzipSync(Buffer.concat(chunks), { level: 1 })
}

async function pushBlob(registry: string, repo: string, data: Buffer, headers: Record<string, string>): Promise<string> {
  const digest = digestOf(data)
  const start = await fetch(`${registry}/v2/${repo}/blobs/uploads/`, { method: 'POST', headers })
  if (start.status !== 202) throw new Error(`upload start: HTTP ${start.status}`)
  const loc = new URL(start.headers.get('location')!, registry)
  loc.searchParams.set('digest', digest)
  const put = await fetch(loc, { method: 'PUT', headers: { ...headers, 'content-type': 'application/octet-stream' }, body: data })
  if (put.status !== 201) throw new Error(`upload ${digest}: HTTP ${put.status} ${await put.text()}`)
  return digest
}

/**
 * Pushes an OCI image whose layers hold random files of the given sizes (plus a small
 * /hello.txt layer), so that it can be pulled by containerd and skopeo.
 */
export async function pushImage(registryUrl: string, repo: string, tag: string, layerSizes: number[], options: { auth?: string; seed?: string } = {}): Promise<PushedImage> {
  const headers: Record<string, string> = options.auth === undefined ? {} : { authorization: options.auth }
  const layers: PushedImage['layers'] = []
  const diffIds: string[] = []
  const contents = layerSizes.map((size, i) => ({ [`data/layer${i}.bin`]: makeBlob(size, `${options.seed ?? repo}-${tag}-${i}`) }))
  contents.push({ 'hello.txt': Buffer.from(`hello from ${repo}:${tag}\n`) })
  for (const files of contents) {
    const data = await makeLayer(files)
    const { gunzipSync } = await import('node:zlib')
    diffIds.push(digestOf(gunzipSync(data)))
    layers.push({ digest: await pushBlob(registryUrl, repo, data, headers), size: data.length, data })
  }
  const config = Buffer.from(JSON.stringify({
    architecture: 'amd64', os: 'linux',
    config: { Cmd: ['/bin/cat', '/hello.txt'] },
    rootfs: { type: 'layers', diff_ids: diffIds }
  }))
  const configDigest = await pushBlob(registryUrl, repo, config, headers)
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: configDigest, size: config.length },
    layers: layers.map((l) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: l.digest, size: l.size }))
  }))
  const put = await fetch(`${registryUrl}/v2/${repo}/manifests/${tag}`, {
    method: 'PUT', headers: { ...headers, 'content-type': 'application/vnd.oci.image.manifest.v1+json' }, body: manifest
  })
  if (put.status !== 201) throw new Error(`manifest push: HTTP ${put.status} ${await put.text()}`)
  return { repo, tag, manifestDigest: digestOf(manifest), manifest, config: { digest: configDigest, size: config.length }, layers }
}

export interface ContainerdHandle {
  socket: string
  /** Runs `ctr -a SOCKET ...args`. */
  ctr(args: string[], timeoutMs?: number): Promise<CommandResult>
  stop(): Promise<void>
}

/**
 * A containerd daemon with its own root, state and socket (no CRI plugin). `config` is
 * appended to its config.toml (e.g. `[proxy_plugins]` tables).
 */
export async function startContainerd(dir: string, options: { config?: string } = {}): Promise<ContainerdHandle> {
  await mkdir(join(dir, 'root'), { recursive: true })
  await mkdir(join(dir, 'state'), { recursive: true })
  const socket = join(dir, 'containerd.sock')
  await writeFile(join(dir, 'config.toml'), `version = 2
root = "${join(dir, 'root')}"
state = "${join(dir, 'state')}"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "${socket}"
[ttrpc]
  address = "${socket}.ttrpc"
${options.config ?? ''}`)
  const proc = spawn('containerd', ['--config', join(dir, 'config.toml')], { stdio: ['ignore', 'ignore', 'pipe'] })
  let log = ''
  proc.stderr!.on('data', (d: Buffer) => { log = (log + d.toString()).slice(-4000) })
  const ctr = (args: string[], timeoutMs = 120_000): Promise<CommandResult> => runTool('ctr', ['-a', socket, ...args], { timeoutMs })
  for (let i = 0; i < 100; i++) {
    if (proc.exitCode !== null) throw new Error(`containerd exited: ${log}`)
    if ((await ctr(['version'], 5000)).code === 0) break
    await new Promise((r) => setTimeout(r, 100))
  }
  return {
    socket,
    ctr,
    stop: async () => {
      if (proc.exitCode !== null) return
      proc.kill('SIGTERM')
      await new Promise((r) => proc.once('exit', r))
    }
  }
}
