// The container image and docker/compose.yaml, built and run for real: buildah builds
// docker/Dockerfile (rootful, vfs, runc, no network in RUN steps) on a base made here from a
// Debian rootfs and Node 24, and podman-compose runs the compose file unchanged: a supernode
// and two daemons. dfget in the second daemon's container then gets the file from the swarm
// (the first daemon), not from the origin, which sends it once.
//
// podman-compose runs inside a network namespace this test creates: the compose network's
// bridge, its NAT and DNS rules and the published ports all live there, so nothing on the
// machine's own network changes and the containers can reach nothing but each other and the
// test's origin (which runs in that namespace too). The origin is on the compose network's
// private address, which the source policy allows only when told (NAIAD_SOURCE_ALLOW, the
// compose file's one variable); the supernode's API answers to an API token made in its
// container, as an operator makes one.

import { spawn, type ChildProcess } from 'node:child_process'
import { createHash } from 'node:crypto'
import { readFile, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { makeBlob } from '@naiad/testkit'

import { exec, installedPackage, type CommandOutput } from '../../scripts/test/fixtures/installed-package.ts'
import { baseImage, containerEnv, DOCKER_DIR, naiadImage, type ContainerEnv } from './fixtures/images.ts'

const ORIGIN = fileURLToPath(new URL('./fixtures/netns-origin.ts', import.meta.url))
const NS = `naiad-ct-${process.pid}`
const PROJECT = `naiadct${process.pid}`
const NETWORK = `${PROJECT}_default`
const SIZE = 24 << 20
const cname = (service: string): string => `${PROJECT}_${service}_1`

let ce: ContainerEnv
let origin: ChildProcess | undefined
let originSent = 0
let blobDigest = ''
let gateway = ''
let nsCreated = false
let composeUp = false
let apiToken = ''

// nsenter, not `ip netns exec`: that also remounts /sys, and runc then finds no cgroup mount.
const inNs = (cmd: string, args: string[], timeoutMs = 300_000): Promise<CommandOutput> => exec('nsenter', [`--net=/run/netns/${NS}`, cmd, ...args], { env: ce.env, cwd: DOCKER_DIR, timeoutMs })
// The compose network is 10.89.x.0/24 in the test's own namespace: nothing else is there to protect.
const compose = (args: string[], timeoutMs = 300_000): Promise<CommandOutput> =>
  exec('nsenter', [`--net=/run/netns/${NS}`, 'podman-compose', '-p', PROJECT, '-f', join(DOCKER_DIR, 'compose.yaml'), ...args], { env: { ...ce.env, NAIAD_SOURCE_ALLOW: '10.0.0.0/8' }, cwd: DOCKER_DIR, timeoutMs })
const podman = (args: string[], timeoutMs = 120_000): Promise<CommandOutput> => exec('podman', args, { env: ce.env, timeoutMs })
/** Node inside a container: prints what `fetch(url)` answered, or exits 1. */
const fetchIn = (service: string, url: string): Promise<CommandOutput> => podman(['exec', cname(service), 'node', '-e',
  `fetch(${JSON.stringify(url)}, { headers: ${JSON.stringify(apiToken === '' ? {} : { authorization: `Bearer ${apiToken}` })} }).then(async (r) => { process.stdout.write(await r.text()); process.exit(r.ok ? 0 : 1) }, (e) => { console.error(e.message); process.exit(1) })`])

async function until<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 90_000): Promise<T> {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    const v = await fn()
    if (v !== undefined) return v
    await new Promise((r) => setTimeout(r, 500))
  }
  throw new Error(`timed out waiting for ${what}`)
}

beforeAll(async () => {
  const t0 = Date.now()
  const pkg = await installedPackage()
  ce = await containerEnv()
  const tBase = Date.now()
  const base = await baseImage(ce)
  const baseSeconds = (Date.now() - tBase) / 1000
  const image = await naiadImage(ce, pkg, base)
  process.stderr.write(`container test: package ${pkg.installSeconds === 0 ? 'cached' : `${pkg.installSeconds.toFixed(0)} s`}, base image ${baseSeconds.toFixed(0)} s, naiad image ${image.seconds.toFixed(0)} s\n`)

  const blob = makeBlob(SIZE, 'container-test')
  blobDigest = createHash('sha256').update(blob).digest('hex')
  const blobFile = join(ce.dir, 'blob.bin')
  await writeFile(blobFile, blob)

  const mk = await exec('ip', ['netns', 'add', NS])
  if (mk.code !== 0) throw new Error(`ip netns add: ${mk.stderr}`)
  nsCreated = true
  await exec('ip', ['-n', NS, 'link', 'set', 'lo', 'up'])

  origin = spawn('nsenter', [`--net=/run/netns/${NS}`, process.execPath, ORIGIN, '8080', blobFile], { stdio: ['ignore', 'pipe', 'inherit'] })
  const listening = new Promise<void>((resolve, reject) => {
    origin!.once('exit', (code) => reject(new Error(`origin exited (${code})`)))
    createInterface({ input: origin!.stdout! }).on('line', (line) => {
      const rec = JSON.parse(line) as { listening?: number; served?: number }
      if (rec.listening !== undefined) resolve()
      if (rec.served !== undefined) originSent = rec.served
    })
  })
  await listening

  const up = await compose(['up', '-d', '--no-build'])
  composeUp = true
  if (up.code !== 0) throw new Error(`podman-compose up failed (${up.code}):\n${(up.stdout + up.stderr).slice(-4000)}`)
  const net = JSON.parse((await podman(['network', 'inspect', NETWORK])).stdout) as Array<{ subnets?: Array<{ gateway: string }> }>
  gateway = net[0]?.subnets?.[0]?.gateway ?? ''
  if (gateway === '') throw new Error(`no gateway in podman network inspect ${NETWORK}`)
  for (const d of ['dfdaemon-1', 'dfdaemon-2']) {
    await until(`${d} healthy`, async () => ((await fetchIn(d, 'http://127.0.0.1:65003/healthz')).code === 0 ? true : undefined))
  }
  const token = await podman(['exec', cname('supernode'), 'supernode', 'token', 'create', '--data-dir', '/var/lib/naiad/supernode', '--scope', 'api'])
  if (token.code !== 0) throw new Error(`supernode token create: ${token.stderr}`)
  apiToken = token.stdout.trim().split('\n').at(-1) ?? ''
  // Both daemons announced: the second can find the first as a parent.
  await until('both daemons at the supernode', async () => {
    const r = await fetchIn('supernode', 'http://127.0.0.1:8002/api/v1/peers')
    return r.code === 0 && (JSON.parse(r.stdout) as Array<{ isSeed: boolean; gone: boolean }>).filter((p) => !p.isSeed && !p.gone).length === 2 ? true : undefined
  })
  process.stderr.write(`container test: set-up ${((Date.now() - t0) / 1000).toFixed(0)} s\n`)
}, 1_500_000)

afterAll(async () => {
  if (ce === undefined) return
  if (composeUp) {
    const logs = await compose(['logs'], 60_000).catch(() => undefined)
    if (logs !== undefined && process.env.NAIAD_CONTAINER_LOGS === '1') process.stderr.write(logs.stdout.slice(-20_000))
    await compose(['down', '-v'], 180_000)
    // The network's DNS server (dnsmasq, started by CNI's dnsname plugin for this network only).
    const pidfile = `/run/containers/cni/dnsname/${NETWORK}/pidfile`
    const pid = Number((await readFile(pidfile, 'utf8').catch(() => '')).trim())
    await podman(['network', 'rm', '-f', NETWORK])
    if (Number.isInteger(pid) && pid > 0) { try { process.kill(pid, 'SIGTERM') } catch { /* gone */ } }
  }
  origin?.kill('SIGTERM')
  if (nsCreated) await exec('ip', ['netns', 'del', NS])
  // The base image stays cached; this run's image and volumes would only fill the vfs storage
  // (the test's own: nothing else uses it).
  await exec('podman', ['volume', 'prune', '-f'], { env: ce.env })
  await exec('buildah', ['rmi', '-f', 'localhost/naiad:dev'], { env: ce.env })
  await rm(ce.dir, { recursive: true, force: true })
}, 300_000)

describe('the container image', () => {
  it('carries the four commands, run as its own user, and FUSE', async () => {
    const r = await podman(['run', '--rm', '--network', 'none', 'naiad:dev', 'sh', '-c',
      'for c in supernode dfdaemon dfget nydus-fs; do "$c" --help | head -1; done; id -u; command -v fusermount'])
    expect(r.code, r.stderr).toBe(0)
    const lines = r.stdout.trim().split('\n')
    expect(lines.slice(0, 4).every((l) => l.startsWith('Usage: '))).toBe(true)
    expect(lines[4]).toBe('10001')
    expect(lines[5]).toMatch(/fusermount$/)
  })
})

describe('docker/compose.yaml under podman-compose', () => {
  it('serves dfget in the second daemon from the swarm, not the origin', async () => {
    const url = `http://${gateway}:8080/blob`
    const first = await podman(['exec', cname('dfdaemon-1'), 'dfget', url, '-O', '/tmp/blob', '--no-progress', '--json'])
    expect(first.code, first.stderr).toBe(0)
    // The origin's count, once it has stopped moving: on a loaded machine the first daemon may
    // take pieces from the origin while the seed is still fetching the whole file there, and the
    // seed's fetch can finish after dfget has returned.
    let last = -1
    let steadySince = Date.now()
    await until('the origin\'s byte count to settle', async () => {
      if (originSent !== last) { last = originSent; steadySince = Date.now() }
      return originSent >= SIZE && Date.now() - steadySince >= 1500 ? true : undefined
    }, 60_000)
    const sentAfterFirst = originSent
    process.stderr.write(`container test: the first download cost the origin ${(sentAfterFirst / SIZE).toFixed(2)}x the file\n`)
    // The seed's copy only: a daemon that went to the origin as well (it could not reach the
    // seed's data channel) makes it two.
    expect(sentAfterFirst).toBeLessThan(2 * SIZE)
    expect(sentAfterFirst).toBeGreaterThanOrEqual(SIZE)

    const second = await podman(['exec', cname('dfdaemon-2'), 'dfget', url, '-O', '/tmp/blob', '--no-progress', '--json'])
    expect(second.code, second.stderr).toBe(0)
    for (const d of ['dfdaemon-1', 'dfdaemon-2']) {
      const sum = await podman(['exec', cname(d), 'sha256sum', '/tmp/blob'])
      expect(sum.stdout.split(' ')[0]).toBe(blobDigest)
    }
    // The origin sent nothing more for the second download (its counts arrive within 100 ms).
    await new Promise((r) => setTimeout(r, 500))
    expect(originSent).toBe(sentAfterFirst)

    // Where the second daemon's bytes came from, as its pull trace tells the supernode.
    const hostname = (await podman(['inspect', '-f', '{{.Config.Hostname}}', cname('dfdaemon-2')])).stdout.trim()
    const peers = JSON.parse((await fetchIn('supernode', 'http://127.0.0.1:8002/api/v1/peers')).stdout) as Array<{ id: string; hostname: string }>
    const d2 = peers.find((p) => p.hostname === hostname)
    expect(d2, `no peer with hostname ${hostname}`).toBeDefined()
    const trace = await until('the second daemon\'s pull trace', async () => {
      const r = await fetchIn('supernode', `http://127.0.0.1:8002/api/v1/traces?peer=${d2!.id}`)
      const traces = r.code === 0 ? JSON.parse(r.stdout) as Array<{ result: string; bytes: { peer: number; seed: number; origin: number } }> : []
      return traces.find((t) => t.result === 'succeeded')
    })
    process.stderr.write(`container test: second daemon's bytes ${JSON.stringify(trace.bytes)}\n`)
    expect(trace.bytes.origin).toBe(0)
    expect(trace.bytes.peer + trace.bytes.seed).toBe(SIZE)
    expect(trace.bytes.peer).toBeGreaterThan(0)
  })

  it('publishes the console and the plugins on the loopback port the compose file names', async () => {
    const page = await inNs(process.execPath, ['-e', "fetch('http://127.0.0.1:8002/').then(async (r) => { process.stdout.write(r.headers.get('content-type') + '\\n' + await r.text()); process.exit(r.ok ? 0 : 1) }, () => process.exit(1))"])
    expect(page.code, page.stderr).toBe(0)
    expect(page.stdout).toMatch(/^text\/html/)
    expect(page.stdout).toContain('console/app.js')
    const slo = await fetchIn('supernode', 'http://127.0.0.1:8002/api/v1/slo')
    expect(slo.code).toBe(0)
    expect((JSON.parse(slo.stdout) as { sli: { pulls: number } }).sli.pulls).toBeGreaterThanOrEqual(2)
  })

  it("gives the daemons' containers FUSE for nydus-fs, as their doctor sees it", async () => {
    const r = await podman(['exec', cname('dfdaemon-1'), 'dfdaemon', 'doctor', '--json', '--supernode', 'http://supernode:8002',
      '--api-listen', '127.0.0.1:65003', '--proxy-listen', '127.0.0.1:65001', '--data-dir', '/var/lib/naiad/dfdaemon'])
    const report = JSON.parse(r.stdout) as { results: Array<{ rule: string; status: string }> }
    expect(report.results.find((x) => x.rule === 'fuse-available')?.status).toBe('ok')
    expect(report.results.find((x) => x.rule === 'supernode-reachable')?.status).toBe('ok')
  })
})
