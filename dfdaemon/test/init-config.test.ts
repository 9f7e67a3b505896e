// `dfdaemon init-config` writes each runtime's mirror configuration, and the result works
// with a real client.

import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  BINS, CountingProxy, getJson, pushImage, run, runTool, startDaemon, startRegistry, startSupernode,
  type DaemonHandle, type PushedImage, type RegistryHandle, type SupernodeHandle
} from '@naiad/testkit'

describe('dfdaemon init-config', () => {
  let dir: string

  beforeAll(async () => { dir = await mkdtemp(join(tmpdir(), 'naiad-init-')) })
  afterAll(async () => { await rm(dir, { recursive: true, force: true }) })

  it('writes containerd hosts.toml under the certs directory', async () => {
    const r = await run(BINS.dfdaemon, ['init-config', '--runtime', 'containerd', '--registry', 'docker.io', '--certs-dir', join(dir, 'certs.d'), '--mirror', 'http://127.0.0.1:65001'])
    expect(r.code, r.stderr).toBe(0)
    const toml = await readFile(join(dir, 'certs.d', 'docker.io', 'hosts.toml'), 'utf8')
    expect(toml).toContain('server = "https://registry-1.docker.io"')
    expect(toml).toContain('[host."http://127.0.0.1:65001"]')
    expect(toml).toContain('capabilities = ["pull", "resolve"]')
  })

  it('writes a plain-HTTP registry as containerd and podman need it, and refuses --plain-http for Docker', async () => {
    const certs = join(dir, 'plain-certs.d')
    const c = await run(BINS.dfdaemon, ['init-config', '--runtime', 'containerd', '--registry', 'registry.test:5000', '--plain-http', '--certs-dir', certs, '--mirror', 'http://127.0.0.1:65001'])
    expect(c.code, c.stderr).toBe(0)
    const toml = await readFile(join(certs, 'registry.test:5000', 'hosts.toml'), 'utf8')
    expect(toml).toContain('server = "http://registry.test:5000"')
    expect(toml).toContain('--insecure-registry registry.test:5000')
    const p = await run(BINS.dfdaemon, ['init-config', '--runtime', 'podman', '--registry', 'registry.test:5000', '--plain-http', '--dry-run'])
    expect(p.code, p.stderr).toBe(0)
    // insecure on the registry's own entry (podman's fallback past the mirror), and on the mirror's.
    const entries = p.stdout.split(/^\[\[/m).slice(1)
    expect(entries.map((e) => [e.split(']]')[0], /^insecure = true$/m.test(e)])).toEqual([['registry', true], ['registry.mirror', true]])
    const d = await run(BINS.dfdaemon, ['init-config', '--runtime', 'docker', '--registry', 'docker.io', '--plain-http', '--dry-run'])
    expect(d.code).toBe(2)
    expect(d.stderr).toContain('--plain-http')
    const help = await run(BINS.dfdaemon, ['init-config', '--help'])
    expect(help.stdout).toContain('--plain-http')
  })

  it('merges the mirror into an existing Docker daemon.json and refuses other registries', async () => {
    const file = join(dir, 'daemon.json')
    await writeFile(file, JSON.stringify({ 'log-driver': 'json-file', 'registry-mirrors': ['https://other.example'] }))
    const r = await run(BINS.dfdaemon, ['init-config', '--runtime', 'docker', '--registry', 'docker.io', '--file', file])
    expect(r.code, r.stderr).toBe(0)
    const doc = JSON.parse(await readFile(file, 'utf8')) as Record<string, unknown>
    expect(doc['log-driver']).toBe('json-file')
    expect(doc['registry-mirrors']).toEqual(['http://127.0.0.1:65001', 'https://other.example'])
    const bad = await run(BINS.dfdaemon, ['init-config', '--runtime', 'docker', '--registry', 'quay.io', '--file', file])
    expect(bad.code).toBe(2)
    expect(bad.stderr).toContain('only for docker.io')
  })

  it('prints instead of writing with --dry-run, and rejects an unknown runtime', async () => {
    const r = await run(BINS.dfdaemon, ['init-config', '--runtime', 'podman', '--registry', 'example.internal:5000', '--dry-run', '--file', join(dir, 'never.conf')])
    expect(r.code).toBe(0)
    expect(r.stdout).toContain('location = "127.0.0.1:65001/naiad-ns/example.internal_5000"')
    await expect(readFile(join(dir, 'never.conf'))).rejects.toThrow()
    const bad = await run(BINS.dfdaemon, ['init-config', '--runtime', 'cri-o', '--registry', 'docker.io'])
    expect(bad.code).toBe(2)
    expect(bad.stderr.trim().split('\n')[0]).toContain('--runtime: expected containerd, docker or podman, got "cri-o"')
  })

  describe('with a registry', () => {
    let registry: RegistryHandle
    let proxy: CountingProxy
    let sn: SupernodeHandle
    let daemon: DaemonHandle
    let image: PushedImage

    beforeAll(async () => {
      registry = await startRegistry(join(dir, 'registry'))
      proxy = await new CountingProxy(registry.url).start()
      image = await pushImage(registry.url, 'naiad/podman', 'v1', [1024 * 1024])
      sn = await startSupernode(join(dir, 'sn'))
      // No --default-registry: the upstream comes only from the _ns path prefix.
      daemon = await startDaemon(join(dir, 'd1'), sn.url, { args: ['--insecure-registry', proxy.host] })
    })
    afterAll(async () => {
      await daemon?.process.stop()
      await sn?.process.stop()
      await proxy?.stop()
      await registry?.stop()
    })

    it('gives podman-family clients a registries.conf that routes through the mirror', async () => {
      const file = join(dir, 'registries.conf')
      // The test registry speaks plain HTTP.
      const r = await run(BINS.dfdaemon, ['init-config', '--runtime', 'podman', '--registry', proxy.host, '--plain-http', '--mirror', daemon.proxyUrl, '--file', file])
      expect(r.code, r.stderr).toBe(0)
      const copy = await runTool('skopeo', ['--registries-conf', file, 'copy', '--src-tls-verify=false', `docker://${proxy.host}/naiad/podman:v1`, `oci:${join(dir, 'oci')}:v1`])
      expect(copy.code, copy.stderr).toBe(0)
      const tasks = await getJson<Array<{ url: string; complete: boolean }>>(`${daemon.apiUrl}/api/v1/tasks`)
      for (const l of image.layers) expect(tasks.find((t) => t.url.endsWith(l.digest))?.complete).toBe(true)
    })
  })
})
