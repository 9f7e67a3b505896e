// dfdaemon as the registry mirror of real clients (containerd's ctr, skopeo) in front of a
// real registry (docker-registry), with a counting proxy between them that also injects
// failures.

import { mkdir, readdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  metric, pushImage, runTool, sha256Hex, startContainerd, startMirrorCluster,
  type CountingProxy, type DaemonHandle, type MirrorCluster, type PushedImage
} from '@naiad/testkit'

const MiB = 1024 * 1024

async function registriesConf(dir: string, registry: string, mirror: string): Promise<string> {
  const file = join(dir, `registries-${mirror.replace(/\W/g, '_')}.conf`)
  await writeFile(file, `[[registry]]
prefix = "${registry}"
location = "${registry}"
insecure = true

[[registry.mirror]]
location = "${mirror.replace(/^http:\/\//, '')}"
insecure = true
`)
  return file
}

async function digestsIn(layout: string): Promise<string[]> {
  return (await readdir(join(layout, 'blobs', 'sha256'))).map((h) => `sha256:${h}`)
}

describe('registry mirror', () => {
  let cluster: MirrorCluster
  let dir: string
  let proxy: CountingProxy
  let daemons: DaemonHandle[]
  let image: PushedImage

  beforeAll(async () => {
    cluster = await startMirrorCluster('mirror', { daemons: 3 })
    ;({ dir, proxy, daemons } = cluster)
    image = await pushImage(cluster.registry.url, 'naiad/multi', 'v1', [6 * MiB, 3 * MiB, 2 * MiB])
  })

  afterAll(async () => {
    await cluster?.stop()
  })

  it('lets three daemons pull one multi-layer image at once while the registry serves each blob about once', async () => {
    const copies = await Promise.all(daemons.map(async (d, i) => {
      const conf = await registriesConf(dir, proxy.host, d.proxyUrl)
      return runTool('skopeo', ['--registries-conf', conf, 'copy', '--src-tls-verify=false', `docker://${proxy.host}/naiad/multi:v1`, `oci:${join(dir, `oci${i}`)}:v1`])
    }))
    for (const c of copies) expect(c.code, c.stderr).toBe(0)
    for (let i = 0; i < 3; i++) {
      const blobs = await digestsIn(join(dir, `oci${i}`))
      expect(blobs).toContain(image.manifestDigest)
      for (const l of image.layers) expect(blobs).toContain(l.digest)
    }
    for (const l of image.layers) {
      expect(proxy.bytesServed(l.digest), `registry bytes for ${l.digest}`).toBeLessThanOrEqual(1.1 * l.size)
    }
    // Blob GETs reached the mirror (not the registry directly): the daemons moved the bytes.
    let viaSwarm = 0
    for (const d of daemons) viaSwarm += await metric(d.apiUrl, 'naiad_download_bytes_total')
    expect(viaSwarm).toBeGreaterThanOrEqual(3 * image.layers.reduce((n, l) => n + l.size, 0))
  })

  it('serves containerd: ctr pulls through the mirror and gets the upstream digest', async () => {
    const containerd = await startContainerd(join(dir, 'containerd'))
    try {
      const hosts = join(dir, 'certs.d', proxy.host)
      await mkdir(hosts, { recursive: true })
      await writeFile(join(hosts, 'hosts.toml'), `server = "http://${proxy.host}"\n\n[host."${daemons[0].proxyUrl}"]\n  capabilities = ["pull", "resolve"]\n`)
      const before = proxy.requests.length
      const pull = await containerd.ctr(['image', 'pull', '--hosts-dir', join(dir, 'certs.d'), `${proxy.host}/naiad/multi:v1`])
      expect(pull.code, pull.stderr).toBe(0)
      const ls = await containerd.ctr(['image', 'ls'])
      expect(ls.stdout).toContain(image.manifestDigest)
      // Every blob containerd fetched came from the swarm: the registry saw HEAD checks and no blob GET from containerd.
      const blobGets = proxy.requests.slice(before).filter((r) => r.method === 'GET' && r.path.includes('/blobs/'))
      expect(blobGets.length).toBe(0)
    } finally {
      await containerd.stop()
    }
  })

  it('keeps byte ranges and digests intact', async () => {
    const layer = image.layers[0]
    const res = await fetch(`${daemons[1].proxyUrl}/v2/naiad/multi/blobs/${layer.digest}?ns=${proxy.host}`, { headers: { range: 'bytes=100-1123' } })
    expect(res.status).toBe(206)
    expect(res.headers.get('docker-content-digest')).toBe(layer.digest)
    expect(Buffer.from(await res.arrayBuffer()).equals(layer.data.subarray(100, 1124))).toBe(true)
    const whole = await fetch(`${daemons[1].proxyUrl}/v2/naiad/multi/blobs/${layer.digest}?ns=${proxy.host}`)
    expect(`sha256:${sha256Hex(Buffer.from(await whole.arrayBuffer()))}`).toBe(layer.digest)
  })

  it('refuses writes and answers unknown paths with registry errors', async () => {
    const put = await fetch(`${daemons[0].proxyUrl}/v2/naiad/multi/manifests/v2`, { method: 'PUT', body: '{}' })
    expect(put.status).toBe(405)
    const other = await fetch(`${daemons[0].proxyUrl}/elsewhere`)
    expect(other.status).toBe(404)
  })
})
