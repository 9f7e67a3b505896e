// Registries often answer blob requests with a redirect to object storage: the mirror (and
// the seed behind it) follow it, and the client gets the bytes, verified, from the mirror.

import { createHash } from 'node:crypto'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { makeBlob, startDaemon, startSupernode, TestOrigin, type DaemonHandle, type SupernodeHandle } from '@naiad/testkit'

describe('registry mirror with a redirecting registry', () => {
  let dir: string
  let storage: TestOrigin
  let registry: Server
  let registryHost: string
  let sn: SupernodeHandle
  let daemon: DaemonHandle
  const blob = makeBlob(3 * 1024 * 1024, 'redirected')
  const digest = `sha256:${createHash('sha256').update(blob).digest('hex')}`
  let redirects = 0

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'naiad-redirect-'))
    storage = await new TestOrigin().start()
    storage.files.set('/bucket/blob', { data: blob })
    // A registry front that sends every blob request to the bucket, as S3-backed registries do.
    registry = createServer((req, res) => {
      const path = new URL(req.url ?? '/', 'http://x').pathname
      if (path === '/v2/') {
        res.writeHead(200, { 'content-type': 'application/json', 'docker-distribution-api-version': 'registry/2.0' }).end('{}')
      } else if (path === `/v2/app/blobs/${digest}`) {
        redirects++
        res.writeHead(307, { location: `${storage.url}/bucket/blob` }).end()
      } else {
        res.writeHead(404).end()
      }
    })
    registry.listen(0, '127.0.0.1')
    await new Promise((r) => registry.once('listening', r))
    registryHost = `127.0.0.1:${(registry.address() as AddressInfo).port}`
    sn = await startSupernode(join(dir, 'sn'))
    daemon = await startDaemon(join(dir, 'd1'), sn.url, { args: ['--insecure-registry', registryHost] })
  })

  afterAll(async () => {
    await daemon?.process.stop()
    await sn?.process.stop()
    registry?.closeAllConnections()
    await new Promise((r) => registry?.close(r))
    await storage?.stop()
    await rm(dir, { recursive: true, force: true })
  })

  it('follows the redirect to storage and serves the verified blob', async () => {
    const res = await fetch(`${daemon.proxyUrl}/v2/app/blobs/${digest}?ns=${registryHost}`)
    expect(res.status).toBe(200)
    expect(res.headers.get('docker-content-digest')).toBe(digest)
    expect(Buffer.from(await res.arrayBuffer()).equals(blob)).toBe(true)
    expect(redirects).toBeGreaterThanOrEqual(2) // the mirror's access check and the seed's download
    expect(storage.bytesServed('/bucket/blob')).toBe(blob.length)
  })
})
