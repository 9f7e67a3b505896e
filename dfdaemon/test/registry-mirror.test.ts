// dfdaemon as the registry mirror of real clients (containerd's ctr, skopeo) in front of a
// real registry (docker-registry), with a counting proxy between them that also injects
// failures.

import { readdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  BINS, metric, pushImage, run, runTool, sha256Hex, startContainerd, startMirrorCluster,
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
      // The registry speaks plain HTTP: hosts.toml as init-config writes it for one.
      const init = await run(BINS.dfdaemon, ['init-config', '--runtime', 'containerd', '--registry', proxy.host, '--plain-http', '--mirror', daemons[0].proxyUrl, '--certs-dir', join(dir, 'certs.d')])
      expect(init.code, init.stderr).toBe(0)
      expect(await readFile(join(dir, 'certs.d', proxy.host, 'hosts.toml'), 'utf8')).toContain(`server = "http://${proxy.host}"`)
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

  it("lists tags, referrers and the catalog through the mirror exactly as the registry answers them (skopeo list-tags, paging)", async () => {
    // More tags and a second repository, so that the listings have pages.
    for (const tag of ['v2', 'v3']) {
      const put = await fetch(`${cluster.registry.url}/v2/naiad/multi/manifests/${tag}`, { method: 'PUT', headers: { 'content-type': 'application/vnd.oci.image.manifest.v1+json' }, body: image.manifest })
      expect(put.status).toBe(201)
    }
    await pushImage(cluster.registry.url, 'naiad/other', 'v1', [1024])
    const mirror = daemons[0].proxyUrl
    const mirrorHost = new URL(mirror).host
    const prefixed = `${mirrorHost}/naiad-ns/${proxy.host.replace(':', '_')}/naiad/multi`
    const viaMirror = await runTool('skopeo', ['list-tags', '--tls-verify=false', `docker://${prefixed}`])
    const direct = await runTool('skopeo', ['list-tags', '--tls-verify=false', `docker://${proxy.host}/naiad/multi`])
    expect(viaMirror.code, viaMirror.stderr).toBe(0)
    expect((JSON.parse(viaMirror.stdout) as { Tags: string[] }).Tags).toEqual((JSON.parse(direct.stdout) as { Tags: string[] }).Tags)
    expect((JSON.parse(viaMirror.stdout) as { Tags: string[] }).Tags).toEqual(['v1', 'v2', 'v3'])

    /** Follows Link from `path` on `base`, collecting every page's status, type and body. */
    const pages = async (base: string, path: string): Promise<Array<{ status: number; type: string | null; body: string }>> => {
      const out = []
      for (let next: string | undefined = path, i = 0; next !== undefined && i < 10; i++) {
        const r = await fetch(`${base}${next}`)
        out.push({ status: r.status, type: r.headers.get('content-type'), body: await r.text() })
        next = /^<([^>]+)>/.exec(r.headers.get('link') ?? '')?.[1]
      }
      return out
    }
    const ns = `ns=${proxy.host}`
    // docker-registry 2.8 pages only the catalog (tags/list ignores n; mirror-unit pages tags).
    expect(await pages(mirror, `/v2/naiad/multi/tags/list?n=2&${ns}`)).toEqual(await pages(cluster.registry.url, '/v2/naiad/multi/tags/list?n=2'))
    const catalog = await pages(mirror, `/v2/_catalog?n=1&${ns}`)
    expect(catalog).toEqual(await pages(cluster.registry.url, '/v2/_catalog?n=1'))
    expect(catalog).toHaveLength(2)
    expect(catalog.map((p) => (JSON.parse(p.body) as { repositories: string[] }).repositories).flat()).toEqual(['naiad/multi', 'naiad/other'])
    // docker-registry 2.8 has no referrers API: the client gets its answer unchanged, and falls back to the tag schema.
    const referrers = `/v2/naiad/multi/referrers/${image.manifestDigest}`
    expect(await pages(mirror, `${referrers}?artifactType=application%2Fexample&${ns}`)).toEqual(await pages(cluster.registry.url, `${referrers}?artifactType=application%2Fexample`))
  })

  it("gives blobs the registry's headers, and a missing blob the registry's own error", async () => {
    const layer = image.layers[1]
    const mine = await fetch(`${daemons[2].proxyUrl}/v2/naiad/multi/blobs/${layer.digest}?ns=${proxy.host}`)
    const theirs = await fetch(`${cluster.registry.url}/v2/naiad/multi/blobs/${layer.digest}`)
    for (const h of ['content-type', 'docker-content-digest', 'etag', 'cache-control', 'docker-distribution-api-version', 'content-length']) {
      expect(mine.headers.get(h), h).toBe(theirs.headers.get(h))
    }
    expect(`sha256:${sha256Hex(Buffer.from(await mine.arrayBuffer()))}`).toBe(layer.digest)
    await theirs.body?.cancel()
    const missing = `/v2/naiad/multi/blobs/sha256:${'0'.repeat(64)}`
    const a = await fetch(`${daemons[2].proxyUrl}${missing}?ns=${proxy.host}`)
    const b = await fetch(`${cluster.registry.url}${missing}`)
    expect({ status: a.status, type: a.headers.get('content-type'), body: await a.text() }).toEqual({ status: b.status, type: b.headers.get('content-type'), body: await b.text() })
    expect(a.status).toBe(404)
  })

  it('refuses writes and answers unknown paths with registry errors', async () => {
    const put = await fetch(`${daemons[0].proxyUrl}/v2/naiad/multi/manifests/v2`, { method: 'PUT', body: '{}' })
    expect(put.status).toBe(405)
    const other = await fetch(`${daemons[0].proxyUrl}/elsewhere`)
    expect(other.status).toBe(404)
  })
})
