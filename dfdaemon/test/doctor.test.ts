// `dfdaemon doctor` as a real child process against a real supernode and daemon: a correct
// setup (written by `dfdaemon init-config`) is all ok, and each broken thing — a missing or
// wrong containerd mirror config, a full disk, an unreachable supernode — gets its own
// finding. Then the doctor plugin pair: two daemons push their reports and the supernode
// serves both at /api/v1/doctor.

import { constants } from 'node:fs'
import { access, mkdir, mkdtemp, open, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { multiaddr } from '@multiformats/multiaddr'
import { call, DoctorReportRequest, DoctorReportResponse, PROTOCOLS } from '@naiad/proto'
import { stringify } from 'yaml'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  BINS, getJson, REFUSED_URL, run, runTool, startDaemon, startMemberNode, startSupernode, waitFor,
  type DaemonHandle, type SupernodeHandle
} from '@naiad/testkit'

import type { DoctorReport, RuleResult } from '@naiad/node-tools'

const REGISTRIES = ['docker.io', 'registry.test:5000']

describe('dfdaemon doctor', () => {
  let dir: string
  let sn: SupernodeHandle
  let daemon: DaemonHandle
  let mirror: string
  const ports = { proxy: 0, api: 0, p2p: 0 }
  let fuseUsable = false

  /** The daemon's config with its doctor settings; `doctor` overrides settings, `top` top-level keys. */
  async function config(name: string, doctor: Record<string, unknown> = {}, top: Record<string, unknown> = {}): Promise<string> {
    const file = join(dir, `${name}.yaml`)
    await writeFile(file, stringify({
      supernode: sn.url,
      'data-dir': join(dir, 'data'),
      proxy: { listen: `127.0.0.1:${ports.proxy}` },
      api: { listen: `127.0.0.1:${ports.api}` },
      p2p: { listen: `/ip4/127.0.0.1/tcp/${ports.p2p}` },
      'cache-quota': '64MiB',
      'log-level': 'warn',
      plugins: ['metrics', 'doctor'],
      'plugin-config': {
        doctor: {
          interval: '1s',
          registries: REGISTRIES,
          'containerd-certs-dir': join(dir, 'certs.d'),
          'docker-daemon-json': join(dir, 'docker', 'daemon.json'),
          'podman-registries-conf': [join(dir, 'containers', 'registries.conf.d')],
          ...doctor
        }
      },
      ...top
    }))
    return file
  }

  async function initConfig(args: string[]): Promise<void> {
    const r = await run(BINS.dfdaemon, ['init-config', ...args])
    expect(r.code, r.stderr).toBe(0)
  }

  async function doctor(args: string[]): Promise<{ code: number | null; report: DoctorReport; stderr: string }> {
    const r = await run(BINS.dfdaemon, ['doctor', '--json', ...args], { timeoutMs: 60_000 })
    let report: DoctorReport
    try {
      report = JSON.parse(r.stdout) as DoctorReport
    } catch {
      throw new Error(`doctor printed no JSON (exit ${r.code}):\n${r.stdout}\n${r.stderr}`)
    }
    return { code: r.code, report, stderr: r.stderr }
  }

  const result = (report: DoctorReport, id: string): RuleResult => {
    const r = report.results.find((x) => x.rule === id)
    if (r === undefined) throw new Error(`no result for rule ${id}`)
    return r
  }
  const failing = (report: DoctorReport): string[] => report.results.filter((r) => r.status !== 'ok').map((r) => r.rule)

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'naiad-doctor-'))
    fuseUsable = await open('/dev/fuse', constants.O_RDWR).then(async (fh) => { await fh.close(); return true }, () => false) &&
      (await access('/usr/bin/fusermount', constants.X_OK).then(() => true, () => false) || await access('/usr/bin/fusermount3', constants.X_OK).then(() => true, () => false))
    const snConfig = join(dir, 'supernode.yaml')
    await writeFile(snConfig, stringify({ plugins: ['metrics', 'doctor'] }))
    sn = await startSupernode(join(dir, 'sn'), { args: ['--config', snConfig, '--no-seed'] })
    // The daemon being checked binds its ports itself (port 0) and says which in its ready
    // line; the doctor then reads a config with exactly those ports.
    daemon = await startDaemon(join(dir, 'data'), sn.url, { args: ['--config', await config('daemon'), '--log-level', 'info'] })
    const ready = await daemon.process.ready
    ports.proxy = Number(new URL(daemon.proxyUrl).port)
    ports.api = Number(new URL(daemon.apiUrl).port)
    ports.p2p = Number(/\/tcp\/(\d+)/.exec(String((ready.p2p as string[])[0]))![1])
    mirror = `http://127.0.0.1:${ports.proxy}`
    // The correct setup: every runtime's file as init-config writes it.
    for (const registry of REGISTRIES) {
      // registry.test:5000 as a plain-HTTP registry: the doctor must accept those forms too.
      const plain = registry === 'docker.io' ? [] : ['--plain-http']
      await initConfig(['--runtime', 'containerd', '--registry', registry, ...plain, '--mirror', mirror, '--certs-dir', join(dir, 'certs.d')])
      await initConfig(['--runtime', 'podman', '--registry', registry, ...plain, '--mirror', mirror,
        '--file', join(dir, 'containers', 'registries.conf.d', `50-naiad-${registry.replace(':', '_')}.conf`)])
    }
    await mkdir(join(dir, 'docker'), { recursive: true })
    await initConfig(['--runtime', 'docker', '--registry', 'docker.io', '--mirror', mirror, '--file', join(dir, 'docker', 'daemon.json')])
  })

  afterAll(async () => {
    await daemon?.process.stop()
    await sn?.process.stop()
    await rm(dir, { recursive: true, force: true })
  })

  it('reports all ok on a setup written by init-config', async () => {
    const { code, report, stderr } = await doctor(['--config', await config('good')])
    // FUSE is a warning-level check of the machine itself; it is ok wherever /dev/fuse and fusermount work.
    expect(failing(report), JSON.stringify(report.results.filter((r) => r.status !== 'ok'), null, 2)).toEqual(fuseUsable ? [] : ['fuse-available'])
    expect(code, stderr).toBe(0)
    expect(result(report, 'containerd-mirror').checked).toBe(2)
    expect(result(report, 'podman-registry-mirror').checked).toBe(2)
    expect(result(report, 'docker-registry-mirror').checked).toBe(1)
    expect(result(report, 'ports-listening').checked).toBe(3)
    expect(result(report, 'clock-skew').checked).toBe(1)
    // Human output: one line per rule and a summary.
    const human = await run(BINS.dfdaemon, ['doctor', '--config', await config('good')])
    expect(human.code).toBe(0)
    const lines = human.stdout.trim().split('\n')
    expect(lines.filter((l) => /^ok {4}/.test(l)).length).toBe(report.summary.ok)
    expect(lines.at(-1)).toBe(`${report.summary.ok} ok, ${report.summary.warn} warn, 0 fail`)
  })

  it('catches a missing containerd hosts.toml', async () => {
    // Only docker.io is configured in this certs dir; registry.test:5000 is missing.
    const certs = join(dir, 'certs-missing')
    await initConfig(['--runtime', 'containerd', '--registry', 'docker.io', '--mirror', mirror, '--certs-dir', certs])
    const { code, report } = await doctor(['--config', await config('missing', { 'containerd-certs-dir': certs })])
    expect(code).toBe(1)
    const r = result(report, 'containerd-hosts-present')
    expect(r.status).toBe('fail')
    expect(r.findings).toHaveLength(1)
    expect(r.findings[0].found).toBe(`no ${join(certs, 'registry.test:5000', 'hosts.toml')} (ENOENT)`)
    expect(r.findings[0].fix).toContain(`dfdaemon init-config --runtime containerd --registry registry.test:5000 --mirror ${mirror} --certs-dir ${certs}`)
    expect((r.findings[0].facts.selected as { registry: string }).registry).toBe('registry.test:5000')
    expect(result(report, 'containerd-mirror').status).toBe('ok')
    expect(failing(report).filter((id) => id !== 'fuse-available')).toEqual(['containerd-hosts-present'])
  })

  it('catches a containerd hosts.toml that points elsewhere', async () => {
    const certs = join(dir, 'certs-wrong')
    await initConfig(['--runtime', 'containerd', '--registry', 'docker.io', '--mirror', 'http://10.9.8.7:65001', '--certs-dir', certs])
    await initConfig(['--runtime', 'containerd', '--registry', 'registry.test:5000', '--mirror', mirror, '--certs-dir', certs])
    const { code, report } = await doctor(['--config', await config('wrong', { 'containerd-certs-dir': certs })])
    expect(code).toBe(1)
    const r = result(report, 'containerd-mirror')
    expect(r.status).toBe('fail')
    expect(r.checked).toBe(2)
    expect(r.findings).toHaveLength(1)
    expect(r.findings[0].found).toBe(`${join(certs, 'docker.io', 'hosts.toml')} sends pulls to ["http://10.9.8.7:65001"], not to this daemon (${mirror})`)
    expect(r.findings[0].facts.pullMirrors).toEqual(['http://10.9.8.7:65001'])
    expect(r.findings[0].fix).toContain('--registry docker.io')
    expect(failing(report).filter((id) => id !== 'fuse-available')).toEqual(['containerd-mirror'])
  })

  it('catches a full disk under the data directory', async () => {
    const mnt = join(dir, 'tmpfs')
    await mkdir(mnt)
    const m = await runTool('mount', ['-t', 'tmpfs', '-o', 'size=16m', 'naiad-doctor-test', mnt])
    expect(m.code, `mounting a tmpfs needs root: ${m.stderr}`).toBe(0)
    try {
      const args = ['--config', await config('disk'), '--data-dir', mnt, '--cache-quota', '4MiB']
      const before = await doctor(args)
      expect(result(before.report, 'disk-free').status).toBe('ok')
      // Fill it up.
      const fh = await open(join(mnt, 'filler'), 'w')
      const chunk = Buffer.alloc(1 << 20, 7)
      try {
        for (let i = 0; i < 64; i++) await fh.write(chunk)
      } catch (err) {
        expect((err as NodeJS.ErrnoException).code).toBe('ENOSPC')
      } finally {
        await fh.close()
      }
      const { code, report } = await doctor(args)
      expect(code).toBe(1)
      const r = result(report, 'disk-free')
      expect(r.status).toBe('fail')
      expect(r.findings).toHaveLength(1)
      expect(r.findings[0].found).toMatch(new RegExp(`^${mnt} has \\d+ bytes free of ${16 * 2 ** 20}$`))
      expect((r.findings[0].facts.selected as { free: number }).free).toBeLessThan(2 ** 20)
      expect(failing(report).filter((id) => id !== 'fuse-available')).toEqual(['disk-free'])
    } finally {
      const u = await runTool('umount', [mnt])
      expect(u.code, u.stderr).toBe(0)
    }
  })

  it('catches an unreachable supernode', async () => {
    const dead = REFUSED_URL
    const { code, report } = await doctor(['--config', await config('nosn'), '--supernode', dead])
    expect(code).toBe(1)
    const r = result(report, 'supernode-reachable')
    expect(r.status).toBe('fail')
    expect(r.findings[0].found).toBe(`${dead}/healthz: ECONNREFUSED`)
    // Without the supernode the clock cannot be compared: that rule has nothing to check.
    expect(result(report, 'clock-skew')).toMatchObject({ status: 'ok', checked: 0 })
    expect(failing(report).filter((id) => id !== 'fuse-available')).toEqual(['supernode-reachable'])
  })

  it('applies user rules from --rules and from the config, and rejects a broken rule with its column', async () => {
    const mine = join(dir, 'my-rules.yaml')
    await writeFile(mine, stringify({
      rules: [{
        id: 'cache-quota-small', severity: 'error', query: 'expect daemon.cacheQuota <= 32MiB',
        why: 'this cluster keeps caches small', fix: 'set cache-quota to 32MiB or less'
      }]
    }))
    const viaFlag = await doctor(['--config', await config('good'), '--rules', mine])
    expect(viaFlag.code).toBe(1)
    const r = result(viaFlag.report, 'cache-quota-small')
    expect(r.findings[0]).toMatchObject({ found: `daemon.cacheQuota = ${64 * 2 ** 20}`, why: 'this cluster keeps caches small', fix: 'set cache-quota to 32MiB or less' })
    const viaConfig = await doctor(['--config', await config('user-rules', { 'rules-file': mine }), '--cache-quota', '16MiB'])
    expect(viaConfig.code).toBe(0)
    expect(result(viaConfig.report, 'cache-quota-small').status).toBe('ok')

    const broken = join(dir, 'broken-rules.yaml')
    await writeFile(broken, stringify({ rules: [{ id: 'oops', query: 'select ports where | expect listening', why: 'w', fix: 'f' }] }))
    const b = await run(BINS.dfdaemon, ['doctor', '--config', await config('good'), '--rules', broken])
    expect(b.code).toBe(2)
    expect(b.stderr).toContain(`${broken}: rule oops: query: expected a value, a fact path or "(" but found "|" at column 20`)
    expect(b.stderr).toContain('[DFD_ERR_DOCTOR_RULE]')
  })

  it('has --help and rejects unknown flags with exit 2', async () => {
    const h = await run(BINS.dfdaemon, ['doctor', '--help'])
    expect(h.code).toBe(0)
    expect(h.stdout).toContain('Usage: dfdaemon doctor')
    expect(h.stdout).toContain('--rules FILE')
    const u = await run(BINS.dfdaemon, ['doctor', '--bogus'])
    expect(u.code).toBe(2)
    expect(u.stderr).toContain('unknown flag --bogus')
  })

  it('aggregates the reports of two daemons at the supernode', async () => {
    // A second daemon whose containerd is not set up for the mirror.
    const other = await startDaemon(join(dir, 'data-b'), sn.url, {
      args: ['--config', await config('daemon-b', { 'containerd-certs-dir': join(dir, 'certs-empty') }, { 'data-dir': join(dir, 'data-b') }),
        '--api-listen', '127.0.0.1:0', '--proxy-listen', '127.0.0.1:0', '--p2p-listen', '/ip4/127.0.0.1/tcp/0']
    })
    try {
      interface NodeView { peerId: string; status: string; findings: Array<{ rule: string }>; results: RuleResult[] }
      let body: { summary: { nodes: number; fail: number; byRule: Record<string, { fail: number }> }; nodes: NodeView[] } | undefined
      await waitFor(async () => {
        body = await getJson(`${sn.url}/api/v1/doctor`)
        return body!.nodes.length === 2
      }, 30_000, 'two doctor reports at the supernode')
      expect(body!.nodes.map((n) => n.peerId).sort()).toEqual([daemon.peerId, other.peerId].sort())
      const a = body!.nodes.find((n) => n.peerId === daemon.peerId)!
      const b = body!.nodes.find((n) => n.peerId === other.peerId)!
      expect(a.findings.map((f) => f.rule).filter((id) => id !== 'fuse-available')).toEqual([])
      expect(b.status).toBe('fail')
      expect(b.findings.filter((f) => f.rule === 'containerd-hosts-present')).toHaveLength(2)
      // The daemon half checks the running daemon's real ports, including the ones it picked itself.
      expect(b.results.find((r) => r.rule === 'ports-listening')).toMatchObject({ status: 'ok', checked: 3 })
      expect(body!.summary.nodes).toBe(2)
      expect(body!.summary.fail).toBe(1)
      expect(body!.summary.byRule['containerd-hosts-present'].fail).toBe(1)
      // The daemon serves its own latest report too.
      const local = await getJson<DoctorReport>(`${other.apiUrl}/api/v1/doctor`)
      expect(local.node.peerId).toBe(other.peerId)

      // A malformed report (from a node of the cluster: others do not get past the handshake) is refused with a typed error and stored nowhere.
      const info = await getJson<{ peerId: string; multiaddrs: string[] }>(`${sn.url}/api/v1/info`)
      const { node } = await startMemberNode(join(dir, 'rogue'), sn)
      try {
        const addrs = info.multiaddrs.map((a) => multiaddr(a.includes('/p2p/') ? a : `${a}/p2p/${info.peerId}`))
        for (const report of ['not json', JSON.stringify({ version: 1, generatedAt: 'yesterday', results: [] }), JSON.stringify({ version: 1, generatedAt: new Date().toISOString(), results: [{ rule: 'x' }] })]) {
          const res = await call(node, addrs, PROTOCOLS.doctor, DoctorReportRequest, DoctorReportResponse, { hostname: 'rogue', report }, { timeoutMs: 10_000 })
          expect(res.error?.code).toBe('SN_ERR_BAD_REQUEST')
        }
      } finally {
        await node.stop()
      }
      const after = await getJson<{ nodes: NodeView[] }>(`${sn.url}/api/v1/doctor`)
      expect(after.nodes.map((n) => n.peerId).sort()).toEqual([daemon.peerId, other.peerId].sort())
    } finally {
      await other.process.stop()
    }
  })
})
