// The source policy: which addresses count as public, what source.allow opens, and the
// origin client refusing loopback (by literal, by a name that resolves to it, after a
// redirect) unless allowed.

import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { DestinationPolicy, OriginClient, ORIGIN_DEFAULTS, type OriginOptions } from '../src/index.ts'

describe('destination policy', () => {
  const policy = new DestinationPolicy({ allow: [], self: ['203.0.114.7'] })

  it('allows public addresses and refuses loopback, link-local, private, reserved and its own', () => {
    for (const ip of ['8.8.8.8', '1.1.1.1', '2606:4700::1111', '2a00:1450:4001::200e']) expect(policy.allowsAddress(ip, 443), ip).toBe(true)
    for (const ip of [
      '127.0.0.1', '127.8.9.10', '0.0.0.0', '10.1.2.3', '172.16.0.1', '172.31.255.255', '192.168.1.1', '100.64.0.1', '169.254.169.254',
      '224.0.0.1', '255.255.255.255', '::1', '::', 'fe80::1', 'fd00::1', 'ff02::1', '::ffff:127.0.0.1', '::ffff:7f00:1',
      '64:ff9b::a9fe:a9fe', '2002:a9fe:a9fe::1', '203.0.114.7'
    ]) expect(policy.allowsAddress(ip, 80), ip).toBe(false)
  })

  it('opens hosts, host:port and CIDRs listed in source.allow, and nothing more', () => {
    const p = new DestinationPolicy({ allow: ['10.0.0.0/8', 'registry.internal', '127.0.0.1:5000', '[::1]:8080', 'fd00::/8'], self: [] })
    expect(p.allowsAddress('10.9.9.9', 1)).toBe(true)
    expect(p.allowsAddress('::ffff:10.9.9.9', 1)).toBe(true)
    expect(p.allowsAddress('11.0.0.1', 1)).toBe(true)
    expect(p.allowsAddress('192.168.0.1', 1)).toBe(false)
    expect(p.allowsAddress('127.0.0.1', 5000)).toBe(true)
    expect(p.allowsAddress('127.0.0.1', 5001)).toBe(false)
    expect(p.allowsAddress('::1', 8080)).toBe(true)
    expect(p.allowsAddress('fd12::1', 1)).toBe(true)
    expect(p.allowsName('registry.internal', 443)).toBe(true)
    expect(p.allowsName('REGISTRY.internal', 5000)).toBe(true)
    expect(p.allowsName('other.internal', 443)).toBe(false)
    expect(p.with(['192.168.0.0/16']).allowsAddress('192.168.0.1', 1)).toBe(true)
    for (const bad of ['', 'http://x', '10.0.0.0/33', 'a b', 'host:99999']) {
      expect(() => new DestinationPolicy({ allow: [bad] }), bad).toThrow(expect.objectContaining({ code: 'PROTO_ERR_BAD_CONFIG' }))
    }
  })

  it('fetches only http and https', () => {
    for (const url of ['file:///etc/passwd', 'ftp://example.com/x', 'gopher://example.com/']) {
      expect(() => policy.checkUrl(url), url).toThrow(expect.objectContaining({ code: 'PROTO_ERR_DESTINATION_DENIED' }))
    }
    expect(policy.checkUrl('https://example.com/x').host).toBe('example.com')
  })
})

describe('origin client with a source policy', () => {
  let allowed: Server
  let internal: Server
  let allowedPort = 0
  let internalPort = 0
  const hits = { internal: 0 }

  const listen = async (s: Server): Promise<number> => {
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', r))
    return (s.address() as AddressInfo).port
  }

  beforeAll(async () => {
    internal = createServer((_req, res) => { hits.internal++; res.end('secret') })
    internalPort = await listen(internal)
    allowed = createServer((req, res) => {
      if (req.url === '/redirect') res.writeHead(302, { location: `http://127.0.0.1:${internalPort}/secret` }).end()
      else if (req.url === '/redirect-localhost') res.writeHead(302, { location: `http://localhost:${internalPort}/secret` }).end()
      else res.end('public bytes')
    })
    allowedPort = await listen(allowed)
  })

  afterAll(async () => {
    await new Promise((r) => allowed.close(r))
    await new Promise((r) => internal.close(r))
  })

  const client = (allow: string[]): OriginClient => new OriginClient({ ...ORIGIN_DEFAULTS, retries: 0, policy: new DestinationPolicy({ allow, self: [] }) } satisfies OriginOptions)

  const read = async (c: OriginClient, url: string): Promise<string> => {
    const res = await c.open({ url, headers: {} })
    const chunks: Buffer[] = []
    for await (const b of res.body) chunks.push(b)
    return Buffer.concat(chunks).toString()
  }

  it('refuses loopback by literal and by a name that resolves to it, before a byte is sent', async () => {
    const c = client([])
    await expect(read(c, `http://127.0.0.1:${internalPort}/secret`)).rejects.toMatchObject({ code: 'PROTO_ERR_DESTINATION_DENIED' })
    await expect(read(c, `http://localhost:${internalPort}/secret`)).rejects.toMatchObject({ code: 'PROTO_ERR_DESTINATION_DENIED' })
    await expect(c.probe(`http://localhost:${internalPort}/secret`, {})).rejects.toMatchObject({ code: 'PROTO_ERR_DESTINATION_DENIED' })
    expect(hits.internal).toBe(0)
    await c.close()
  })

  it('follows a redirect from an allowed origin only to an allowed one', async () => {
    const c = client([`127.0.0.1:${allowedPort}`])
    expect(await read(c, `http://127.0.0.1:${allowedPort}/file`)).toBe('public bytes')
    expect(await c.probe(`http://127.0.0.1:${allowedPort}/file`, {})).toBe(200)
    await expect(read(c, `http://127.0.0.1:${allowedPort}/redirect`)).rejects.toMatchObject({ code: 'PROTO_ERR_DESTINATION_DENIED' })
    await expect(read(c, `http://127.0.0.1:${allowedPort}/redirect-localhost`)).rejects.toMatchObject({ code: 'PROTO_ERR_DESTINATION_DENIED' })
    expect(hits.internal).toBe(0)
    await c.close()
    const both = client([`127.0.0.1:${allowedPort}`, `127.0.0.1:${internalPort}`])
    expect(await read(both, `http://127.0.0.1:${allowedPort}/redirect`)).toBe('secret')
    await both.close()
  })
})
