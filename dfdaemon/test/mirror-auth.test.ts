// Private images stay private: a node gets a private blob's bytes from the swarm only
// after the registry accepted that node's own credentials for it.

import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  CountingProxy, getJson, metric, pushImage, runTool, sha256Hex, startDaemon, startRegistry, startSupernode,
  type DaemonHandle, type PushedImage, type RegistryHandle, type SupernodeHandle
} from '@naiad/testkit'

const BASIC = `Basic ${Buffer.from('naiad:s3cret').toString('base64')}`
const WRONG = `Basic ${Buffer.from('naiad:wrong').toString('base64')}`

describe('registry mirror with a private registry', () => {
  let dir: string
  let registry: RegistryHandle
  let proxy: CountingProxy
  let sn: SupernodeHandle
  let withCreds: DaemonHandle
  let without: DaemonHandle
  let image: PushedImage

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'naiad-auth-'))
    const ht = await runTool('htpasswd', ['-Bbn', 'naiad', 's3cret'])
    expect(ht.code).toBe(0)
    await writeFile(join(dir, 'htpasswd'), ht.stdout)
    registry = await startRegistry(join(dir, 'registry'), { htpasswd: join(dir, 'htpasswd') })
    proxy = await new CountingProxy(registry.url).start()
    image = await pushImage(registry.url, 'private/app', 'v1', [4 * 1024 * 1024], { auth: BASIC })
    sn = await startSupernode(join(dir, 'sn'))
    const args = ['--insecure-registry', proxy.host, '--default-registry', proxy.url]
    withCreds = await startDaemon(join(dir, 'd1'), sn.url, { args })
    without = await startDaemon(join(dir, 'd2'), sn.url, { args })
  })

  afterAll(async () => {
    await withCreds?.process.stop()
    await without?.process.stop()
    await sn?.process.stop()
    await proxy?.stop()
    await registry?.stop()
    await rm(dir, { recursive: true, force: true })
  })

  it('passes the registry\'s challenge to a client without credentials', async () => {
    const res = await fetch(`${without.proxyUrl}/v2/private/app/manifests/v1?ns=${proxy.host}`)
    expect(res.status).toBe(401)
    expect(res.headers.get('www-authenticate')).toMatch(/^Basic realm="naiad-test"/)
  })

  it('serves the blob to the node with credentials, and nothing of it to the node without, though a peer holds it', async () => {
    const layer = image.layers[0]
    const url = (d: DaemonHandle): string => `${d.proxyUrl}/v2/private/app/blobs/${layer.digest}?ns=${proxy.host}`

    const ok = await fetch(url(withCreds), { headers: { authorization: BASIC } })
    expect(ok.status).toBe(200)
    expect(`sha256:${sha256Hex(Buffer.from(await ok.arrayBuffer()))}`).toBe(layer.digest)

    for (const auth of [undefined, WRONG]) {
      const denied = await fetch(url(without), { headers: auth === undefined ? {} : { authorization: auth } })
      expect(denied.status).toBe(401)
      expect(denied.headers.get('www-authenticate')).toMatch(/^Basic/)
      const body = Buffer.from(await denied.arrayBuffer())
      expect(body.includes(layer.data.subarray(0, 64))).toBe(false)
    }
    expect(await metric(without.apiUrl, 'naiad_download_bytes_total')).toBe(0)
    expect(await getJson<unknown[]>(`${without.apiUrl}/api/v1/tasks`)).toEqual([])
  })

  it('pulls with skopeo through a daemon that holds the registry credentials itself', async () => {
    // Node-level credentials in Docker's config.json format: clients of this node need none.
    await writeFile(join(dir, 'auth.json'), JSON.stringify({ auths: { [proxy.host]: { auth: Buffer.from('naiad:s3cret').toString('base64') } } }))
    await writeFile(join(dir, 'd3.yaml'), `registry:\n  auth-file: ${join(dir, 'auth.json')}\n`)
    const trusted = await startDaemon(join(dir, 'd3'), sn.url, { args: ['--config', join(dir, 'd3.yaml'), '--insecure-registry', proxy.host, '--default-registry', proxy.url] })
    try {
      const conf = join(dir, 'registries.conf')
      await writeFile(conf, `[[registry]]\nprefix = "${proxy.host}"\nlocation = "${proxy.host}"\ninsecure = true\n\n[[registry.mirror]]\nlocation = "${trusted.proxyUrl.replace('http://', '')}"\ninsecure = true\n`)
      const copy = await runTool('skopeo', ['--registries-conf', conf, 'copy', '--src-tls-verify=false', `docker://${proxy.host}/private/app:v1`, `oci:${join(dir, 'oci')}:v1`])
      expect(copy.code, copy.stderr).toBe(0)
      // The config blob, fetched by nobody before, came through this daemon.
      const tasks = await getJson<Array<{ url: string; complete: boolean }>>(`${trusted.apiUrl}/api/v1/tasks`)
      expect(tasks.find((t) => t.url.endsWith(image.config.digest))?.complete).toBe(true)
    } finally {
      await trusted.process.stop()
    }
  })
})
