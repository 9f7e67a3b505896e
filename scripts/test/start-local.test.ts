// `npm start` as a single-machine install: arguments and a config file reach both processes,
// every built-in plugin answers, the banner names every address, and a registry that speaks
// plain HTTP gets an error naming --insecure-registry from the mirror, in the log and from
// `dfdaemon doctor`. Ports are all 0 (the banner says which were taken).

import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { run, TestOrigin, BINS } from '@naiad/testkit'

const START = fileURLToPath(new URL('../start-local.ts', import.meta.url))

let dir: string
let proc: ChildProcess
let out = ''
let exited: Promise<number | null>
const banner: Record<string, string> = {}
let plainRegistry: TestOrigin

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'naiad-start-'))
  // Any plain-HTTP server answers a TLS ClientHello the way a plain-HTTP registry does.
  plainRegistry = await new TestOrigin().start()
  const config = join(dir, 'naiad.yaml')
  await writeFile(config, [
    'supernode:',
    '  p2p: { listen: /ip4/127.0.0.1/tcp/0 }',
    'dfdaemon:',
    '  p2p.listen: /ip4/127.0.0.1/tcp/0',
    '  host: { labels: { zone: start-test } }',
    // A registry on loopback is reached only when the operator allows it (source.allow).
    `  source: { allow: ["${new URL(plainRegistry.url).host}"] }`
  ].join('\n'))
  proc = spawn(process.execPath, [START, '--config', config, '--data-dir', join(dir, 'data'), '--listen', '127.0.0.1:0',
    '--proxy-listen', '127.0.0.1:0', '--api-listen', '127.0.0.1:0', '--insecure-registry', '127.0.0.1:1'], { stdio: ['ignore', 'pipe', 'pipe'], detached: true })
  proc.stdout!.on('data', (d: Buffer) => { out += d.toString() })
  proc.stderr!.on('data', (d: Buffer) => { out += d.toString() })
  exited = new Promise((resolve) => proc.once('exit', (code) => resolve(code)))
  const deadline = Date.now() + 90_000
  while (!out.includes('Ctrl-C stops both.') && Date.now() < deadline && proc.exitCode === null) await new Promise((r) => setTimeout(r, 200))
  if (!out.includes('Ctrl-C stops both.')) throw new Error(`npm start did not come up:\n${out.slice(-3000)}`)
  const field = (re: RegExp): string => re.exec(out)?.[1] ?? ''
  banner.http = field(/supernode {2}HTTP API +(\S+)/)
  banner.console = field(/console +(http\S+)/)
  banner.mirror = field(/mirror +(http\S+)/)
  banner.api = field(/local API +(http\S+)/)
  banner.snFabric = field(/supernode[\s\S]*?fabric +(\/ip4\/\S+)/)
  banner.ddFabric = field(/dfdaemon[\s\S]*?fabric +(\/ip4\/\S+)/)
}, 120_000)

afterAll(async () => {
  if (proc !== undefined && proc.exitCode === null) {
    proc.kill('SIGTERM')
    const t = setTimeout(() => { try { process.kill(-proc.pid!, 'SIGKILL') } catch { /* gone */ } }, 15_000)
    await exited
    clearTimeout(t)
  }
  await plainRegistry?.stop()
  if (dir !== undefined) await rm(dir, { recursive: true, force: true })
})

describe('npm start', () => {
  it('lists every address in its banner', () => {
    for (const [k, v] of Object.entries(banner)) expect(v, `banner ${k} in:\n${out}`).not.toBe('')
    expect(banner.console).toBe(`${banner.http}/`)
    expect(banner.snFabric).not.toMatch(/\/tcp\/0\b/)
  })

  it('loads every built-in plugin of both, and passes the config file through', async () => {
    // The API token npm start made, in the file its banner names; its daemon joined with the join token.
    expect(out).toMatch(/API token +\S+api-token/)
    const token = (await readFile(join(dir, 'data', 'api-token'), 'utf8')).trim()
    const headers = { authorization: `Bearer ${token}` }
    expect((await fetch(`${banner.http}/api/v1/peers`)).status).toBe(401)
    for (const path of ['/api/v1/jobs', '/api/v1/slo', '/api/v1/health/hosts', '/api/v1/health/events', '/api/v1/doctor', '/healthy', '/metrics']) {
      const res = await fetch(`${banner.http}${path}`, { headers })
      await res.arrayBuffer()
      expect(res.status, `supernode ${path}`).toBe(200)
    }
    const peers = await (await fetch(`${banner.http}/api/v1/peers`, { headers })).json() as Array<{ labels: Record<string, string>; isSeed: boolean }>
    expect(peers.find((p) => !p.isSeed)?.labels).toEqual({ zone: 'start-test' })
    expect((await fetch(`${banner.api}/metrics`)).status).toBe(200)
    expect((await fetch(`${banner.http}/`)).headers.get('content-type')).toMatch(/text\/html/)
  })

  it('names --insecure-registry when a registry answers in plain HTTP, in the reply, the log and the doctor', async () => {
    const host = new URL(plainRegistry.url).host
    const res = await fetch(`${banner.mirror}/v2/library/app/manifests/latest?ns=${encodeURIComponent(host)}`)
    expect(res.status).toBe(502)
    const body = await res.json() as { errors: Array<{ message: string; detail: { naiad: string } }> }
    expect(body.errors[0].detail.naiad).toBe('DFD_ERR_REGISTRY_PLAIN_HTTP')
    expect(body.errors[0].message).toContain(`--insecure-registry ${host}`)
    const deadline = Date.now() + 10_000
    while (!out.includes(`--insecure-registry ${host}`) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100))
    expect(out).toMatch(new RegExp(`dfdaemon +\\| WARN +mirror request failed .*--insecure-registry ${host}`))

    const doctor = await run(BINS.dfdaemon, ['doctor', '--json', '--supernode', banner.http, '--api-listen', new URL(banner.api).host,
      '--proxy-listen', new URL(banner.mirror).host, '--data-dir', join(dir, 'data', 'dfdaemon')])
    const report = JSON.parse(doctor.stdout) as { results: Array<{ rule: string; status: string; findings: Array<{ found: string; fix: string }> }> }
    const rule = report.results.find((r) => r.rule === 'registry-plain-http')
    expect(rule?.status, doctor.stdout).toBe('fail')
    expect(rule?.findings[0].found).toContain(host)
    expect(rule?.findings[0].fix).toContain(`--insecure-registry ${host}`)
    expect(doctor.code).toBe(1)
  })

  it('stops both on SIGINT', async () => {
    proc.kill('SIGINT')
    expect(await exited).toBe(0)
  })
})
