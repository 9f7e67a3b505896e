// Node facts the doctor's rules read: each collector looks at one thing (a runtime's mirror
// file, the disk, a port, FUSE, the supernode) and records what it saw, errors included, as
// plain JSON. Collectors never throw; a failure to look is itself a fact. Every path comes
// from DoctorSettings so tests can point them at temporary directories.

import { constants, type Dirent } from 'node:fs'
import { access, open, readdir, readFile, stat, statfs } from 'node:fs/promises'
import { connect } from 'node:net'
import { hostname } from 'node:os'
import { delimiter, dirname, join } from 'node:path'

import { NaiadError } from '@naiad/proto/contracts'

import { parseToml, type TomlTable, type TomlValue } from './toml.ts'
import type { Value } from './query.ts'

export interface DoctorSettings {
  /** Registries whose mirror configuration is checked. */
  registries: string[]
  containerdCertsDir: string
  dockerDaemonJson: string
  /** containers-registries.conf files and drop-in directories. */
  podmanRegistriesConf: string[]
  fuseDevice: string
  /** fusermount binary; empty searches PATH for fusermount3 and fusermount. */
  fusermount: string
  supernodeTimeoutMs: number
  portTimeoutMs: number
  /** User rule files, applied after the built-in rules. */
  rulesFiles: string[]
  /** How often the daemon plugin runs the checks. */
  intervalMs: number
}

/** What the doctor knows about the daemon it checks: its config, or the running daemon's real addresses. */
export interface DaemonFacts {
  supernode: string
  dataDir: string
  cacheQuota: number
  /** HOST:PORT of the registry mirror. */
  proxy: string
  /** HOST:PORT of the local API. */
  api: string
  /** p2p listen multiaddrs. */
  p2p: string[]
  peerId?: string
}

const errText = (err: unknown): string => (err as NodeJS.ErrnoException).code ?? (err as Error).message

function splitHostPort(hp: string): { host: string; port: number } {
  const i = hp.lastIndexOf(':')
  return { host: hp.slice(0, i).replace(/^\[|\]$/g, ''), port: Number(hp.slice(i + 1)) }
}

const bracket = (h: string): string => h.includes(':') ? `[${h}]` : h

/** Normalises a mirror URL so configured and actual addresses compare equal. */
export function normalizeUrl(u: string): string {
  try {
    const url = new URL(u)
    return `${url.protocol}//${url.host}${url.pathname.replace(/\/+$/, '')}`.toLowerCase()
  } catch {
    return u.replace(/\/+$/, '').toLowerCase()
  }
}

/** Addresses by which a local client reaches a listener (a wildcard listener answers on loopback too). */
function reachableHosts(host: string): string[] {
  if (host === '0.0.0.0' || host === '' || host === '::') return ['127.0.0.1', 'localhost', hostname().toLowerCase()]
  if (host === '127.0.0.1' || host === 'localhost') return ['127.0.0.1', 'localhost']
  return [host.toLowerCase()]
}

function daemonSection(d: DaemonFacts): Record<string, Value> {
  const { host, port } = splitHostPort(d.proxy)
  const hosts = reachableHosts(host)
  return {
    supernode: d.supernode,
    dataDir: d.dataDir,
    cacheQuota: d.cacheQuota,
    proxy: `${bracket(hosts[0])}:${port}`,
    proxyHosts: hosts.map((h) => `${bracket(h)}:${port}`),
    proxyUrl: `http://${bracket(hosts[0])}:${port}`,
    proxyUrls: hosts.map((h) => `http://${bracket(h)}:${port}`),
    api: d.api,
    p2p: d.p2p,
    hostname: hostname(),
    peerId: d.peerId ?? null
  }
}

// ---- container runtimes ---------------------------------------------------------------

async function containerdHosts(certsDir: string, registry: string): Promise<Record<string, Value>> {
  // containerd reads `<certs.d>/<host[:port]>/hosts.toml`, else `<certs.d>/_default/hosts.toml`.
  const file = join(certsDir, registry, 'hosts.toml')
  const out: Record<string, Value> = { registry, file, present: false, viaDefault: false, error: null, server: null, mirrors: [], pullMirrors: [], firstMirror: null }
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (err) {
    out.error = errText(err)
    const fallback = join(certsDir, '_default', 'hosts.toml')
    const t = await readFile(fallback, 'utf8').catch(() => undefined)
    if (t === undefined) return out
    text = t
    Object.assign(out, { file: fallback, viaDefault: true, error: null })
  }
  out.present = true
  let doc: TomlTable
  try {
    doc = parseToml(text)
  } catch (err) {
    out.error = `cannot parse: ${(err as Error).message}`
    return out
  }
  out.server = typeof doc.server === 'string' ? doc.server : null
  const hosts = (doc.host !== undefined && typeof doc.host === 'object' && !Array.isArray(doc.host)) ? doc.host : {}
  const entries = Object.entries(hosts).map(([url, v]) => {
    const caps = (v as TomlTable).capabilities
    // containerd's default capabilities for a host entry are pull, resolve and push.
    const capabilities = Array.isArray(caps) ? caps.map(String) : ['pull', 'resolve', 'push']
    return { url: normalizeUrl(url), capabilities }
  })
  out.mirrors = entries.map((e) => e.url)
  out.pullMirrors = entries.filter((e) => e.capabilities.includes('pull')).map((e) => e.url)
  out.firstMirror = entries[0]?.url ?? null
  return out
}

async function dockerFacts(file: string): Promise<Record<string, Value>> {
  const out: Record<string, Value> = { file, present: false, error: null, mirrors: [] }
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (err) {
    out.error = errText(err)
    return out
  }
  out.present = true
  try {
    const doc = JSON.parse(text) as Record<string, unknown>
    const m = doc['registry-mirrors']
    out.mirrors = Array.isArray(m) ? m.map((x) => normalizeUrl(String(x))) : []
  } catch (err) {
    out.error = `cannot parse: ${(err as Error).message}`
  }
  return out
}

async function podmanFiles(paths: string[]): Promise<string[]> {
  const files: string[] = []
  for (const p of paths) {
    const s = await stat(p).catch(() => undefined)
    if (s?.isFile() === true) files.push(p)
    else if (s?.isDirectory() === true) {
      const names = (await readdir(p).catch(() => [] as string[])).filter((n) => n.endsWith('.conf')).sort()
      files.push(...names.map((n) => join(p, n)))
    }
  }
  return files
}

async function podmanFacts(paths: string[], registries: string[]): Promise<Record<string, Value>> {
  const files = await podmanFiles(paths)
  const errors: Value[] = []
  const entries: Array<{ prefix: string; location: string; mirrors: string[]; file: string }> = []
  for (const file of files) {
    let doc: TomlTable
    try {
      doc = parseToml(await readFile(file, 'utf8'))
    } catch (err) {
      errors.push(`${file}: ${errText(err)}`)
      continue
    }
    const regs = Array.isArray(doc.registry) ? doc.registry : []
    for (const r of regs as TomlValue[]) {
      if (r === null || typeof r !== 'object' || Array.isArray(r)) continue
      const location = typeof r.location === 'string' ? r.location : ''
      const prefix = typeof r.prefix === 'string' ? r.prefix : location
      const mirrors = Array.isArray(r.mirror) ? (r.mirror as TomlTable[]).map((m) => typeof m.location === 'string' ? m.location : '').filter((s) => s !== '') : []
      entries.push({ prefix, location, mirrors, file })
    }
  }
  const perRegistry = registries.map((registry) => {
    // Drop-ins are read in order and a later entry for the same prefix wins, as in podman.
    const e = entries.filter((x) => x.prefix === registry).at(-1)
    return {
      registry,
      present: e !== undefined,
      file: e?.file ?? null,
      location: e?.location ?? null,
      mirrors: e?.mirrors ?? [],
      mirrorHosts: (e?.mirrors ?? []).map((m) => m.split('/')[0].toLowerCase())
    }
  })
  return { installed: files.length > 0, files, errors, registries: perRegistry }
}

// ---- disk -------------------------------------------------------------------------------

/** Bytes under a directory, bounded so a huge cache cannot stall the doctor. */
async function du(dir: string, budget = { entries: 200_000 }): Promise<number> {
  let total = 0
  let names: Dirent[]
  try {
    names = await readdir(dir, { withFileTypes: true })
  } catch {
    return 0
  }
  for (const d of names) {
    if (--budget.entries < 0) break
    const p = join(dir, d.name)
    if (d.isDirectory()) total += await du(p, budget)
    else if (d.isFile()) total += (await stat(p).catch(() => undefined))?.size ?? 0
  }
  return total
}

async function diskFacts(dataDir: string, cacheQuota: number): Promise<Record<string, Value>> {
  // A data dir not created yet lives on the file system of its nearest existing parent.
  let path = dataDir
  for (;;) {
    if (await stat(path).then(() => true, () => false)) break
    const up = dirname(path)
    if (up === path) break
    path = up
  }
  try {
    const s = await statfs(path)
    const free = s.bavail * s.bsize
    const total = s.blocks * s.bsize
    const cacheUsed = await du(dataDir)
    return { path: dataDir, measuredAt: path, free, total, freeRatio: total > 0 ? free / total : 0, cacheUsed, cacheQuota, error: null }
  } catch (err) {
    return { path: dataDir, measuredAt: path, free: null, total: null, freeRatio: null, cacheUsed: null, cacheQuota, error: errText(err) }
  }
}

// ---- ports, FUSE, supernode -------------------------------------------------------------

function tcpProbe(host: string, port: number, timeoutMs: number): Promise<string | null> {
  return new Promise((resolve) => {
    const target = host === '0.0.0.0' || host === '' ? '127.0.0.1' : host === '::' ? '::1' : host
    const sock = connect({ host: target, port })
    const done = (err: string | null): void => { sock.destroy(); resolve(err) }
    sock.setTimeout(timeoutMs, () => done('ETIMEDOUT'))
    sock.once('connect', () => done(null))
    sock.once('error', (err) => done(errText(err)))
  })
}

async function portFacts(d: DaemonFacts, timeoutMs: number): Promise<Value[]> {
  const targets: Array<{ name: string; address: string; host: string; port: number }> = []
  for (const [name, hp] of [['proxy', d.proxy], ['api', d.api]] as const) targets.push({ name, address: hp, ...splitHostPort(hp) })
  for (const ma of d.p2p) {
    const m = /^\/ip([46])\/([^/]+)\/tcp\/(\d+)/.exec(ma)
    if (m !== null) targets.push({ name: 'p2p', address: ma, host: m[2], port: Number(m[3]) })
  }
  return Promise.all(targets.map(async (t) => {
    // Port 0 means "any free port": nothing to probe from the config alone.
    if (t.port === 0) return { name: t.name, address: t.address, ephemeral: true, listening: null, error: null }
    const err = await tcpProbe(t.host, t.port, timeoutMs)
    return { name: t.name, address: t.address, ephemeral: false, listening: err === null, error: err }
  }))
}

/** The first of `names` found executable in a directory of PATH, or null. */
export async function findOnPath(names: string[], path = process.env.PATH ?? ''): Promise<string | null> {
  for (const dir of path.split(delimiter)) {
    if (dir === '') continue
    for (const n of names) {
      const p = join(dir, n)
      if (await access(p, constants.X_OK).then(() => true, () => false)) return p
    }
  }
  return null
}

/** Why the FUSE device cannot be opened for reading and writing (which a mount needs), or null when it can. */
export async function fuseDeviceError(device: string): Promise<string | null> {
  try {
    const fh = await open(device, constants.O_RDWR)
    await fh.close()
    return null
  } catch (err) {
    return errText(err)
  }
}

async function fuseFacts(s: DoctorSettings): Promise<Record<string, Value>> {
  const deviceError = await fuseDeviceError(s.fuseDevice)
  let fusermount: string | null
  if (s.fusermount !== '') fusermount = await access(s.fusermount, constants.X_OK).then(() => s.fusermount, () => null)
  else fusermount = await findOnPath(['fusermount3', 'fusermount'])
  return { device: s.fuseDevice, deviceOpenable: deviceError === null, deviceError, fusermount, available: deviceError === null && fusermount !== null }
}

async function supernodeFacts(url: string, timeoutMs: number): Promise<{ supernode: Record<string, Value>; clock: Record<string, Value> }> {
  const target = `${url.replace(/\/+$/, '')}/healthz`
  const t0 = Date.now()
  try {
    const res = await fetch(target, { signal: AbortSignal.timeout(timeoutMs) })
    const t1 = Date.now()
    await res.arrayBuffer().catch(() => undefined)
    const date = res.headers.get('date')
    const server = date === null ? NaN : Date.parse(date)
    // The Date header has one-second resolution and names the second the reply was made:
    // compare it with the middle of the round trip, less half a second for the truncation.
    const skewMs = Number.isNaN(server) ? null : Math.round(server + 500 - (t0 + t1) / 2)
    return {
      supernode: { url, reachable: res.ok, status: res.status, latencyMs: t1 - t0, error: res.ok ? null : `HTTP ${res.status}` },
      clock: { known: skewMs !== null, skewMs, source: skewMs === null ? null : 'supernode HTTP Date header', resolutionMs: 1000 + (t1 - t0) }
    }
  } catch (err) {
    const cause = (err as { cause?: unknown }).cause
    const why = (err as Error).name === 'TimeoutError' ? `no answer within ${timeoutMs} ms` : cause !== undefined ? errText(cause) : errText(err)
    return {
      supernode: { url, reachable: false, status: null, latencyMs: null, error: why },
      clock: { known: false, skewMs: null, source: null, resolutionMs: null }
    }
  }
}

/**
 * What the running daemon's registry mirror could not reach (GET /api/v1/mirror/problems on
 * its local API): a registry that answers in plain HTTP without --insecure-registry, say.
 * Only the daemon sees those failures; a daemon that is not running has none to report.
 */
async function mirrorFacts(api: string, timeoutMs: number): Promise<Record<string, Value>> {
  const { host, port } = splitHostPort(api)
  const target = host === '0.0.0.0' || host === '' ? '127.0.0.1' : host === '::' ? '::1' : host
  const url = `http://${bracket(target)}:${port}/api/v1/mirror/problems`
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) })
    if (!res.ok) {
      await res.arrayBuffer().catch(() => undefined)
      return { checked: false, error: `HTTP ${res.status} from ${url}`, problems: [] }
    }
    const body = await res.json() as { problems?: Value[] }
    return { checked: true, error: null, problems: Array.isArray(body.problems) ? body.problems : [] }
  } catch (err) {
    const cause = (err as { cause?: unknown }).cause
    return { checked: false, error: cause !== undefined ? errText(cause) : errText(err), problems: [] }
  }
}

/** Collects every fact the rules may read. */
export async function collectFacts(d: DaemonFacts, s: DoctorSettings): Promise<Value> {
  if (d.supernode === '') throw new NaiadError('PROTO_ERR_USAGE', 'missing --supernode URL (or supernode: in the config file, or NAIAD_SUPERNODE)')
  const [hosts, docker, podman, disk, ports, fuse, sn, mirror] = await Promise.all([
    Promise.all(s.registries.map((r) => containerdHosts(s.containerdCertsDir, r))),
    dockerFacts(s.dockerDaemonJson),
    podmanFacts(s.podmanRegistriesConf, s.registries),
    diskFacts(d.dataDir, d.cacheQuota),
    portFacts(d, s.portTimeoutMs),
    fuseFacts(s),
    supernodeFacts(d.supernode, s.supernodeTimeoutMs),
    mirrorFacts(d.api, s.portTimeoutMs)
  ])
  return {
    daemon: daemonSection(d),
    doctor: { registries: s.registries },
    containerd: { certsDir: s.containerdCertsDir, hosts },
    docker: { ...docker, mirrorsDockerHub: s.registries.includes('docker.io') },
    podman,
    disk,
    ports,
    fuse,
    clock: sn.clock,
    supernode: sn.supernode,
    mirror
  }
}
