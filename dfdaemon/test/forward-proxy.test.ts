// Forward-proxy mode: plain-HTTP URLs that match a rule go through the swarm, other
// requests are relayed untouched, and CONNECT tunnels pass bytes through, to allowed hosts only.

import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { request } from 'node:http'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { makeBlob, sha256Hex, startDaemon, startSupernode, TestOrigin, type DaemonHandle, type SupernodeHandle } from '@naiad/testkit'

function viaProxy(proxyUrl: string, target: string): Promise<{ status: number; headers: Record<string, unknown>; body: Buffer }> {
  const p = new URL(proxyUrl)
  return new Promise((resolve, reject) => {
    const req = request({ host: p.hostname, port: p.port, method: 'GET', path: target, headers: { host: new URL(target).host } }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }))
    })
    req.on('error', reject)
    req.end()
  })
}

describe('forward proxy', () => {
  let dir: string
  let origin: TestOrigin
  let sn: SupernodeHandle
  let daemon: DaemonHandle
  const model = makeBlob(6 * 1024 * 1024, 'model')
  const page = Buffer.from('<html>not for the swarm</html>')

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'naiad-fwd-'))
    origin = await new TestOrigin().start()
    origin.files.set('/models/big.bin', { data: model })
    origin.files.set('/index.html', { data: page })
    sn = await startSupernode(join(dir, 'sn'))
    await writeFile(join(dir, 'd.yaml'), `proxy:\n  rules:\n    - "^http://[^/]+/models/"\n  connect-allow: ["${new URL(origin.url).host}"]\n`)
    daemon = await startDaemon(join(dir, 'd1'), sn.url, { args: ['--config', join(dir, 'd.yaml')] })
  })

  afterAll(async () => {
    await daemon?.process.stop()
    await sn?.process.stop()
    await origin?.stop()
    await rm(dir, { recursive: true, force: true })
  })

  it('sends URLs that match a rule through the swarm', async () => {
    const res = await viaProxy(daemon.proxyUrl, `${origin.url}/models/big.bin`)
    expect(res.status).toBe(200)
    expect(sha256Hex(res.body)).toBe(sha256Hex(model))
    // Fetched once by the seed, not by the proxy on the client's behalf; the second time from
    // the cache, with the content's digest known up front.
    const again = await viaProxy(daemon.proxyUrl, `${origin.url}/models/big.bin`)
    expect(again.body.equals(model)).toBe(true)
    expect(again.headers['x-naiad-sha256']).toBe(sha256Hex(model))
    expect(origin.bytesServed('/models/big.bin')).toBe(model.length)
  })

  it('relays other requests as they are', async () => {
    const res = await viaProxy(daemon.proxyUrl, `${origin.url}/index.html`)
    expect(res.status).toBe(200)
    expect(res.body.equals(page)).toBe(true)
    expect(res.headers['x-naiad-sha256']).toBeUndefined()
    const missing = await viaProxy(daemon.proxyUrl, `${origin.url}/nope`)
    expect(missing.status).toBe(404)
  })

  it('refuses CONNECT to a host or port proxy.connect-allow does not name', async () => {
    const p = new URL(daemon.proxyUrl)
    const o = new URL(origin.url)
    for (const target of [`${o.hostname}:443`, `127.0.0.2:${o.port}`, `localhost:${o.port}`]) {
      const sock = connect(Number(p.port), p.hostname)
      sock.write(`CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\n\r\n`)
      let received = ''
      sock.on('data', (d: Buffer) => { received += d.toString('latin1') })
      await new Promise((r) => sock.once('close', r))
      expect(received, target).toMatch(/^HTTP\/1\.1 403 /)
      expect(received).toContain('DFD_ERR_CONNECT_FORBIDDEN')
    }
  })

  it('tunnels CONNECT to an allowed host without looking inside', async () => {
    const p = new URL(daemon.proxyUrl)
    const o = new URL(origin.url)
    const sock = connect(Number(p.port), p.hostname)
    await new Promise((r) => sock.once('connect', r))
    sock.write(`CONNECT ${o.host} HTTP/1.1\r\nHost: ${o.host}\r\n\r\n`)
    let received = ''
    sock.on('data', (d: Buffer) => { received += d.toString('latin1') })
    const until = Date.now() + 5000
    while (!received.includes('\r\n\r\n') && Date.now() < until) await new Promise((r) => setTimeout(r, 20))
    expect(received.startsWith('HTTP/1.1 200')).toBe(true)
    received = ''
    sock.write(`GET /index.html HTTP/1.1\r\nHost: ${o.host}\r\nConnection: close\r\n\r\n`)
    await new Promise((r) => sock.once('end', r))
    expect(received).toContain('200 OK')
    expect(received).toContain('not for the swarm')
    sock.destroy()
  })
})
