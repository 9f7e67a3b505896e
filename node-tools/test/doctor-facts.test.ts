// The doctor's fact collectors on files in a temporary directory: what containerd, Docker
// and podman would read, as they would read it.

import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { REFUSED_URL } from '@naiad/testkit'

import { collectFacts } from '../src/doctor/facts.ts'
import { evaluateRule, loadRules } from '../src/doctor/rules.ts'
import { DOCTOR_DEFAULTS } from '../src/doctor/settings.ts'
import { containerdHostsToml, podmanRegistriesConf } from '../src/init-config/runtime-config.ts'

describe('doctor facts', () => {
  let dir: string
  beforeAll(async () => { dir = await mkdtemp(join(tmpdir(), 'naiad-facts-')) })
  afterAll(async () => { await rm(dir, { recursive: true, force: true }) })

  it('reads runtime files the way the runtimes do', async () => {
    const certs = join(dir, 'certs.d')
    await mkdir(join(certs, '_default'), { recursive: true })
    await mkdir(join(certs, 'quay.io'), { recursive: true })
    await writeFile(join(certs, '_default', 'hosts.toml'), containerdHostsToml('docker.io', 'http://127.0.0.1:65001'))
    // The daemon listed second: containerd would try the other host first.
    await writeFile(join(certs, 'quay.io', 'hosts.toml'), 'server = "https://quay.io"\n[host."http://10.0.0.1:5000/"]\n  capabilities = ["pull"]\n[host."http://localhost:65001"]\n')
    const conf = join(dir, 'registries.conf.d')
    await mkdir(conf)
    await writeFile(join(conf, '10-old.conf'), podmanRegistriesConf('quay.io', 'http://10.0.0.1:5000'))
    await writeFile(join(conf, '50-naiad.conf'), podmanRegistriesConf('quay.io', 'http://127.0.0.1:65001'))
    await writeFile(join(dir, 'daemon.json'), '{ "registry-mirrors": [ "http://127.0.0.1:65001/" ], ')
    const facts = await collectFacts({
      supernode: REFUSED_URL, dataDir: join(dir, 'not-yet', 'data'), cacheQuota: 2 ** 20,
      proxy: '0.0.0.0:65001', api: '127.0.0.1:0', p2p: ['/ip4/0.0.0.0/tcp/0']
    }, {
      ...DOCTOR_DEFAULTS, registries: ['docker.io', 'quay.io'], containerdCertsDir: certs, dockerDaemonJson: join(dir, 'daemon.json'),
      podmanRegistriesConf: [conf], fuseDevice: join(dir, 'no-fuse'), fusermount: join(dir, 'no-fusermount')
    }) as Record<string, Record<string, unknown>>
    expect(facts.daemon.proxyUrls).toEqual(expect.arrayContaining(['http://127.0.0.1:65001', 'http://localhost:65001']))
    const [docker, quay] = facts.containerd.hosts as Array<Record<string, unknown>>
    expect(docker).toMatchObject({ registry: 'docker.io', present: true, viaDefault: true, file: join(certs, '_default', 'hosts.toml'), pullMirrors: ['http://127.0.0.1:65001'] })
    expect(quay).toMatchObject({ present: true, server: 'https://quay.io', mirrors: ['http://10.0.0.1:5000', 'http://localhost:65001'], firstMirror: 'http://10.0.0.1:5000' })
    // A later drop-in wins, as in podman.
    expect((facts.podman.registries as Array<Record<string, unknown>>)[1]).toMatchObject({ registry: 'quay.io', present: true, file: join(conf, '50-naiad.conf'), mirrorHosts: ['127.0.0.1:65001'] })
    expect(facts.docker).toMatchObject({ present: true, mirrors: [] })
    expect(facts.docker.error).toMatch(/^cannot parse/)
    // A data dir not created yet is measured on its nearest existing parent.
    expect(facts.disk).toMatchObject({ measuredAt: dir, cacheUsed: 0, error: null })
    expect(facts.disk.free).toBeGreaterThan(0)
    expect((facts.ports as unknown as Array<Record<string, unknown>>).map((p) => [p.name, p.ephemeral])).toEqual([['proxy', false], ['api', true], ['p2p', true]])
    expect(facts.fuse).toMatchObject({ deviceOpenable: false, deviceError: 'ENOENT', fusermount: null, available: false })
    expect(facts.supernode).toMatchObject({ reachable: false, error: 'ECONNREFUSED' })
    expect(facts.clock).toMatchObject({ known: false, skewMs: null })
  })

  it("accepts init-config's files for a plain-HTTP registry: every containerd and podman rule passes", async () => {
    const registry = 'registry.test:5000'
    const mirror = 'http://127.0.0.1:65001'
    const certs = join(dir, 'plain', 'certs.d')
    const conf = join(dir, 'plain', 'registries.conf.d')
    await mkdir(join(certs, registry), { recursive: true })
    await mkdir(conf, { recursive: true })
    await writeFile(join(certs, registry, 'hosts.toml'), containerdHostsToml(registry, mirror, { plainHttp: true }))
    await writeFile(join(conf, '50-naiad.conf'), podmanRegistriesConf(registry, mirror, { plainHttp: true }))
    const facts = await collectFacts({
      supernode: REFUSED_URL, dataDir: join(dir, 'plain', 'data'), cacheQuota: 2 ** 20,
      proxy: '127.0.0.1:65001', api: '127.0.0.1:0', p2p: ['/ip4/0.0.0.0/tcp/0']
    }, {
      ...DOCTOR_DEFAULTS, registries: [registry], containerdCertsDir: certs, dockerDaemonJson: join(dir, 'plain', 'no-daemon.json'),
      podmanRegistriesConf: [conf], fuseDevice: join(dir, 'no-fuse'), fusermount: join(dir, 'no-fusermount')
    }) as Record<string, Record<string, unknown>>
    expect((facts.containerd.hosts as Array<Record<string, unknown>>)[0]).toMatchObject({ present: true, error: null, server: `http://${registry}`, pullMirrors: [mirror] })
    expect((facts.podman.registries as Array<Record<string, unknown>>)[0]).toMatchObject({ present: true, location: registry, mirrorHosts: ['127.0.0.1:65001'] })
    const rules = (await loadRules([])).filter((r) => /^(containerd|podman)-/.test(r.id))
    expect(rules.map((r) => r.id)).toEqual(['containerd-hosts-present', 'containerd-hosts-parse', 'containerd-mirror', 'containerd-mirror-first', 'podman-registry-mirror'])
    for (const rule of rules) {
      const r = evaluateRule(rule, facts as never)
      expect({ rule: r.rule, status: r.status, checked: r.checked }).toEqual({ rule: rule.id, status: 'ok', checked: 1 })
    }
  })
})
