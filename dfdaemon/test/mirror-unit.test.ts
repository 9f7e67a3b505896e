// The registry mirror in process, against an in-process registry: a piece engine whose
// scheduler cannot be reached (so the swarm path falls back to the origin, as a lone node
// would), served by a plain HTTP server on loopback. What crosses to the registry, what the
// client gets (whole blobs, ranges, pass-through answers), and what lands in the cache. The
// same paths through real processes and real registries are in registry-mirror.test.ts.

import { createHash } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { createServer, request, type IncomingHttpHeaders, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { pino } from 'pino'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createPeerEngine, DOWNLOAD_DEFAULTS, ORIGIN_DEFAULTS, type PeerEngine, type SchedulerClient } from '@naiad/peer'
import { contentRange, NaiadError, parseRangeHeader } from '@naiad/proto'

import { RegistryMirror } from '../src/mirror/registry-mirror.ts'

const TOKEN = 'Bearer pull-token'

/** A scheduler that never answers: downloads go to the origin, as on a node whose supernode is away. */
const NO_SCHEDULER: SchedulerClient = {
  available: true,
  announceHost: async () => { throw new NaiadError('PROTO_ERR_DIAL', 'no supernode in this test') },
  registerTask: async () => { throw new NaiadError('PROTO_ERR_DIAL', 'no supernode in this test') },
  reportPieces: async () => {},
  getParents: async () => { throw new NaiadError('PROTO_ERR_DIAL', 'no supernode in this test') },
  leaveTask: async () => {},
  leaveHost: async () => {}
}

function blobOf(size: number, seed: number): { data: Buffer; digest: string } {
  const data = Buffer.alloc(size)
  for (let i = 0; i < size; i++) data[i] = (i * 31 + seed) & 0xff
  return { data, digest: `sha256:${createHash('sha256').update(data).digest('hex')}` }
}

interface Answer { status: number; headers: IncomingHttpHeaders; body: Buffer }

function get(url: string, headers: Record<string, string> = {}, method = 'GET'): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method, headers }, (res) => {
      const parts: Buffer[] = []
      res.on('data', (c: Buffer) => parts.push(c))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(parts) }))
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end()
  })
}

describe('registry mirror, in process', () => {
  let dir: string
  let registry: Server
  let host: string
  let engine: PeerEngine
  let mirror: RegistryMirror
  let server: Server
  let url: string
  const good = blobOf(3 * 1024 * 1024 + 17, 1)
  const bad = blobOf(64 * 1024, 2)
  const blobGets = new Map<string, number>()

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'naiad-mirror-unit-'))
    // The registry: a token for every request but /v2/, a blob that matches its digest and one that does not.
    registry = createServer((req, res) => {
      const path = req.url ?? '/'
      if (req.headers.authorization !== TOKEN) {
        res.writeHead(401, { 'www-authenticate': `Bearer realm="http://${host}/token",service="test"`, 'content-type': 'application/json' })
        return void res.end('{"errors":[{"code":"UNAUTHORIZED"}]}')
      }
      if (path === '/v2/app/manifests/v1') return void res.writeHead(200, { 'content-type': 'application/vnd.oci.image.manifest.v1+json', 'x-from': 'registry' }).end('{"schemaVersion":2}')
      const m = /^\/v2\/app\/blobs\/(sha256:[0-9a-f]{64})$/.exec(path)
      const blob = m === null ? undefined : m[1] === good.digest ? good.data : m[1] === bad.digest ? Buffer.from(bad.data).fill(0, 0, 10) : undefined
      if (blob === undefined) return void res.writeHead(404).end()
      if (req.method === 'GET') blobGets.set(m![1], (blobGets.get(m![1]) ?? 0) + 1)
      const range = parseRangeHeader(req.headers.range, blob.length)
      if (range.kind === 'partial') {
        res.writeHead(206, { 'content-length': range.end - range.start + 1, 'content-range': contentRange(range, blob.length) })
        return void res.end(req.method === 'HEAD' ? undefined : blob.subarray(range.start, range.end + 1))
      }
      res.writeHead(200, { 'content-length': blob.length, 'content-type': 'application/octet-stream' })
      res.end(req.method === 'HEAD' ? undefined : blob)
    })
    await new Promise<void>((r) => registry.listen(0, '127.0.0.1', r))
    host = `127.0.0.1:${(registry.address() as AddressInfo).port}`

    const logger = pino({ level: 'silent' })
    engine = await createPeerEngine({
      dataDir: dir, logger, p2pListen: ['/ip4/127.0.0.1/tcp/0'], cacheQuota: 64 * 2 ** 20, uploadSlots: 4,
      download: { ...DOWNLOAD_DEFAULTS, stallTimeoutMs: 500 }, origin: ORIGIN_DEFAULTS, data: { host: '127.0.0.1', port: 0, transport: 'tcp' }
    }, { scheduler: NO_SCHEDULER })
    mirror = new RegistryMirror({ tasks: engine.tasks, store: engine.store, logger, swarmAvailable: () => true }, {
      defaultRegistry: `http://${host}`, insecure: [host], credentials: new Map()
    })
    server = createServer((req, res) => { void mirror.handle(req, res) })
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  })

  afterAll(async () => {
    await new Promise<void>((r) => server?.close(() => r()) ?? r())
    await mirror?.close()
    await engine?.stop()
    await new Promise<void>((r) => registry?.close(() => r()) ?? r())
    await rm(dir, { recursive: true, force: true })
  })

  it("passes the registry's own answers through: the version check's challenge, a manifest", async () => {
    const ping = await get(`${url}/v2/?ns=${host}`)
    expect(ping.status).toBe(401)
    expect(ping.headers['www-authenticate']).toContain(`realm="http://${host}/token"`)
    const manifest = await get(`${url}/v2/app/manifests/v1?ns=${host}`, { authorization: TOKEN })
    expect({ status: manifest.status, from: manifest.headers['x-from'], body: manifest.body.toString() }).toEqual({ status: 200, from: 'registry', body: '{"schemaVersion":2}' })
  })

  it("serves a blob only with the registry's yes, whole and by range, fetched from the registry once", async () => {
    const path = `${url}/v2/app/blobs/${good.digest}?ns=${host}`
    expect((await get(path)).status).toBe(401)
    const whole = await get(path, { authorization: TOKEN })
    expect(whole.status).toBe(200)
    expect(whole.headers['docker-content-digest']).toBe(good.digest)
    expect(whole.body.equals(good.data)).toBe(true)
    const suffix = await get(path, { authorization: TOKEN, range: 'bytes=-10' })
    expect({ status: suffix.status, range: suffix.headers['content-range'] }).toEqual({ status: 206, range: `bytes ${good.data.length - 10}-${good.data.length - 1}/${good.data.length}` })
    expect(suffix.body.equals(good.data.subarray(-10))).toBe(true)
    const middle = await get(path, { authorization: TOKEN, range: 'bytes=1048570-1048589' })
    expect(middle.body.equals(good.data.subarray(1048570, 1048590))).toBe(true)
    expect((await get(path, { authorization: TOKEN, range: `bytes=${good.data.length}-` })).status).toBe(416)
    // Every answer after the first came from the cache.
    expect(blobGets.get(good.digest)).toBe(1)
  })

  it('never hands out a whole blob that does not match its digest, and caches none of it', async () => {
    const res = await get(`${url}/v2/app/blobs/${bad.digest}?ns=${host}`, { authorization: TOKEN }).catch((err: Error) => err)
    if (!(res instanceof Error)) {
      // Either a registry-shaped error before any byte, or a body cut short of its end.
      expect(res.status === 200 ? res.body.length < bad.data.length : res.status >= 500).toBe(true)
    }
    expect(engine.store.listTasks().some((t) => t.url.endsWith(bad.digest) && t.complete)).toBe(false)
  })

  it('refuses writes and names no other API', async () => {
    expect((await get(`${url}/v2/app/blobs/uploads/?ns=${host}`, {}, 'POST')).status).toBe(405)
    expect((await get(`${url}/v2/_catalog?ns=${host}`)).status).toBe(404)
    expect((await get(`${url}/v2/app/manifests/v1?ns=bad%20host`)).status).toBe(400)
  })
})
