// Manifest resolution against a small fake registry: an index is followed to the wanted
// platform, and a Bearer challenge is answered with a token fetched with Basic credentials.

import { createHash } from 'node:crypto'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { parseImageRef } from '../src/plugins/preheat/image-ref.ts'
import { resolveImage } from '../src/plugins/preheat/manifest-resolver.ts'

const d = (c: string): string => `sha256:${c.repeat(64)}`
const BASIC = `Basic ${Buffer.from('robot:secret').toString('base64')}`
const LAYER = 'application/vnd.oci.image.layer.v1.tar+gzip'
/** The arm64 manifest, served under its own digest (the client checks it). */
const ARM64 = JSON.stringify({
  schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: d('c'), size: 10 },
  layers: [{ mediaType: LAYER, digest: d('a'), size: 100 }, { mediaType: LAYER, digest: d('b'), size: 200 }, { mediaType: LAYER, digest: d('a'), size: 100 }]
})
const ARM64_DIGEST = `sha256:${createHash('sha256').update(ARM64).digest('hex')}`

describe('preheat manifest resolution', () => {
  let server: Server
  let host: string
  const seen: Array<{ path: string; auth: string | undefined; accept: string | undefined }> = []

  beforeAll(async () => {
    server = createServer((req, res) => {
      const path = req.url ?? '/'
      seen.push({ path, auth: req.headers.authorization, accept: req.headers.accept })
      if (path.startsWith('/token')) {
        if (req.headers.authorization !== BASIC) return void res.writeHead(401).end()
        return void res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ token: 'tok' }))
      }
      if (req.headers.authorization !== 'Bearer tok') {
        return void res.writeHead(401, { 'www-authenticate': `Bearer realm="http://${host}/token",service="fake",scope="repository:team/app:pull"` }).end()
      }
      const json = (doc: object): void => void res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(doc))
      if (path === '/v2/team/app/manifests/multi') {
        return json({
          mediaType: 'application/vnd.oci.image.index.v1+json',
          manifests: [
            { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: d('1'), size: 400, platform: { os: 'linux', architecture: 'amd64' } },
            { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: ARM64_DIGEST, size: ARM64.length, platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } }
          ]
        })
      }
      if (path === `/v2/team/app/manifests/${ARM64_DIGEST}`) return void res.writeHead(200, { 'content-type': 'application/vnd.oci.image.manifest.v1+json' }).end(ARM64)
      res.writeHead(404).end()
    })
    server.listen(0, '127.0.0.1')
    await new Promise<void>((r) => server.once('listening', r))
    host = `127.0.0.1:${(server.address() as AddressInfo).port}`
  })

  afterAll(async () => {
    await new Promise<void>((r) => server.close(() => r()))
  })

  it('follows an index to the platform and answers a Bearer challenge', async () => {
    const ref = parseImageRef(`${host}/team/app:multi`, [host])
    const r = await resolveImage(ref, { headers: { Authorization: BASIC }, platform: 'linux/arm64/v8' })
    expect(r.blobs).toEqual([
      { kind: 'config', digest: d('c'), size: 10 },
      { kind: 'layer', digest: d('a'), size: 100 },
      { kind: 'layer', digest: d('b'), size: 200 }
    ])
    expect(r.authorization).toBe('Bearer tok')
    const manifestCalls = seen.filter((s) => s.path.includes('/manifests/'))
    expect(manifestCalls[0].accept).toContain('application/vnd.oci.image.index.v1+json')
    expect(manifestCalls[0].accept).toContain('application/vnd.docker.distribution.manifest.v2+json')
  })

  it('names the platforms an index has when the wanted one is missing', async () => {
    const ref = parseImageRef(`${host}/team/app:multi`, [host])
    await expect(resolveImage(ref, { headers: { Authorization: BASIC }, platform: 'windows/amd64' }))
      .rejects.toMatchObject({ code: 'OCI_ERR_BAD_MANIFEST', message: expect.stringContaining('linux/arm64/v8') })
  })

  it('reports a token refusal as a registry error', async () => {
    const ref = parseImageRef(`${host}/team/app:multi`, [host])
    await expect(resolveImage(ref, { headers: {}, platform: 'linux/amd64' })).rejects.toMatchObject({ code: 'OCI_ERR_REGISTRY' })
  })
})
