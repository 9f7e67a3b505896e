// The registry mirror in process, against an in-process registry: a piece engine whose
// scheduler cannot be reached (so the swarm path falls back to the origin, as a lone node
// would), served by a plain HTTP server on loopback. What crosses to the registry, what the
// client gets (whole blobs, ranges, pass-through answers), and what lands in the cache. The
// same paths through real processes and real registries are in registry-mirror.test.ts.

import { createHash } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { createServer, request, type IncomingHttpHeaders, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { pino } from 'pino'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createPeerEngine, DOWNLOAD_DEFAULTS, ORIGIN_DEFAULTS, type PeerEngine, type SchedulerClient } from '@naiad/peer'
import { contentRange, NaiadError, parseRangeHeader } from '@naiad/proto'

import { mirrorLink } from '../src/mirror/headers.ts'
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

const V2 = { 'docker-distribution-api-version': 'registry/2.0' }
const UNAUTHORIZED = '{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}'
const SIG = 'application/vnd.example.signature'

/** One page of a registry listing (`n`, `last`), with the Link to the next as distribution sends it. */
function listingPage(res: ServerResponse, u: URL, items: string[], body: (page: string[]) => unknown): void {
  const n = Number(u.searchParams.get('n') ?? items.length)
  const last = u.searchParams.get('last')
  const from = last === null ? 0 : items.indexOf(last) + 1
  const page = items.slice(from, from + n)
  const link = from + n < items.length ? { link: `<${u.pathname}?last=${page.at(-1)}&n=${n}>; rel="next"` } : {}
  res.writeHead(200, { 'content-type': 'application/json; charset=utf-8', ...V2, ...link }).end(JSON.stringify(body(page)))
}

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
  /** Every request the registry got, in order. */
  const seen: Array<{ method: string; url: string }> = []

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'naiad-mirror-unit-'))
    // The registry: a token for every request but /v2/, a blob that matches its digest and one that does not.
    registry = createServer((req, res) => {
      const u = new URL(req.url ?? '/', 'http://registry')
      const path = u.pathname
      seen.push({ method: req.method ?? '', url: req.url ?? '' })
      if (req.headers.authorization !== TOKEN) {
        res.writeHead(401, { 'www-authenticate': `Bearer realm="http://${host}/token",service="test"`, 'content-type': 'application/json', ...V2 })
        return void res.end(UNAUTHORIZED)
      }
      if (path === '/v2/app/manifests/v1') return void res.writeHead(200, { 'content-type': 'application/vnd.oci.image.manifest.v1+json', 'x-from': 'registry' }).end('{"schemaVersion":2}')
      if (path === '/v2/app/tags/list') return listingPage(res, u, ['a', 'b', 'c'], (tags) => ({ name: 'app', tags }))
      if (path === '/v2/_catalog') return listingPage(res, u, ['app', 'other'], (repositories) => ({ repositories }))
      if (path === `/v2/app/referrers/${good.digest}`) {
        const type = u.searchParams.get('artifactType')
        const all = [{ artifactType: SIG, digest: `sha256:${'5'.repeat(64)}` }, { artifactType: 'application/spdx+json', digest: `sha256:${'6'.repeat(64)}` }]
        const manifests = all.filter((m) => type === null || m.artifactType === type)
        return void res.writeHead(200, { 'content-type': 'application/vnd.oci.image.index.v1+json', ...V2, ...(type === null ? {} : { 'oci-filters-applied': 'artifactType' }) })
          .end(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests }))
      }
      const m = /^\/v2\/app\/blobs\/(sha256:[0-9a-f]{64})$/.exec(path)
      const blob = m === null ? undefined : m[1] === good.digest ? good.data : m[1] === bad.digest ? Buffer.from(bad.data).fill(0, 0, 10) : undefined
      if (blob === undefined) {
        const body = JSON.stringify({ errors: [{ code: m === null ? 'NAME_UNKNOWN' : 'BLOB_UNKNOWN', message: 'blob unknown to registry', detail: m?.[1] ?? path }] })
        return void res.writeHead(404, { 'content-type': 'application/json; charset=utf-8', ...V2 }).end(req.method === 'HEAD' ? undefined : body)
      }
      if (req.method === 'GET') blobGets.set(m![1], (blobGets.get(m![1]) ?? 0) + 1)
      const range = parseRangeHeader(req.headers.range, blob.length)
      if (range.kind === 'partial') {
        res.writeHead(206, { 'content-length': range.end - range.start + 1, 'content-range': contentRange(range, blob.length) })
        return void res.end(req.method === 'HEAD' ? undefined : blob.subarray(range.start, range.end + 1))
      }
      res.writeHead(200, { 'content-length': blob.length, 'content-type': 'application/octet-stream', 'cache-control': 'max-age=31536000', etag: `"${m![1]}"`, ...V2 })
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
    // The registry's own headers, as a client pulling directly would see them.
    expect({ cc: whole.headers['cache-control'], v: whole.headers['docker-distribution-api-version'], etag: whole.headers.etag, type: whole.headers['content-type'] })
      .toEqual({ cc: 'max-age=31536000', v: 'registry/2.0', etag: `"${good.digest}"`, type: 'application/octet-stream' })
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

  it("answers a refused or missing blob with the registry's own status, headers and error body", async () => {
    const missing = `sha256:${'1'.repeat(64)}`
    const denied = await get(`${url}/v2/app/blobs/${good.digest}?ns=${host}`)
    expect({ status: denied.status, body: denied.body.toString() }).toEqual({ status: 401, body: UNAUTHORIZED })
    expect(denied.headers['www-authenticate']).toContain('Bearer realm=')
    const gone = await get(`${url}/v2/app/blobs/${missing}?ns=${host}`, { authorization: TOKEN })
    expect(gone.status).toBe(404)
    expect(JSON.parse(gone.body.toString())).toEqual({ errors: [{ code: 'BLOB_UNKNOWN', message: 'blob unknown to registry', detail: missing }] })
    expect(gone.headers['docker-distribution-api-version']).toBe('registry/2.0')
    expect(engine.store.listTasks().some((t) => t.url.endsWith(missing))).toBe(false)
  })

  it('passes tag listings through, pages and all: the Link leads back through the mirror to the same registry', async () => {
    const collect = async (first: string): Promise<{ tags: string[]; links: string[] }> => {
      const tags: string[] = []
      const links: string[] = []
      for (let next: string | undefined = first; next !== undefined;) {
        const r = await get(`${url}${next}`, { authorization: TOKEN })
        expect(r.status).toBe(200)
        expect(r.headers['docker-distribution-api-version']).toBe('registry/2.0')
        tags.push(...(JSON.parse(r.body.toString()) as { tags: string[] }).tags)
        const link = r.headers.link
        next = typeof link === 'string' ? /^<([^>]+)>/.exec(link)![1] : undefined
        if (next !== undefined) links.push(next)
      }
      return { tags, links }
    }
    const viaNs = await collect(`/v2/app/tags/list?n=2&ns=${host}`)
    expect(viaNs).toEqual({ tags: ['a', 'b', 'c'], links: [`/v2/app/tags/list?last=b&n=2&ns=${encodeURIComponent(host)}`] })
    const prefix = `/v2/naiad-ns/${host.replace(':', '_')}`
    const viaPrefix = await collect(`${prefix}/app/tags/list?n=2`)
    expect(viaPrefix).toEqual({ tags: ['a', 'b', 'c'], links: [`${prefix}/app/tags/list?last=b&n=2`] })
    // The registry saw the client's query, without the mirror's ns.
    expect(seen.filter((r) => r.url.startsWith('/v2/app/tags/list')).map((r) => r.url)).toContain('/v2/app/tags/list?last=b&n=2')
    const head = await get(`${url}/v2/app/tags/list?ns=${host}`, { authorization: TOKEN }, 'HEAD')
    expect({ status: head.status, body: head.body.length }).toEqual({ status: 200, body: 0 })
    const anonymous = await get(`${url}/v2/app/tags/list?ns=${host}`)
    expect({ status: anonymous.status, body: anonymous.body.toString() }).toEqual({ status: 401, body: UNAUTHORIZED })
    expect(anonymous.headers['www-authenticate']).toContain('Bearer realm=')
  })

  it('passes referrers (with the artifactType filter) and the catalog through as the registry answers them', async () => {
    const all = await get(`${url}/v2/app/referrers/${good.digest}?ns=${host}`, { authorization: TOKEN })
    expect(all.headers['content-type']).toBe('application/vnd.oci.image.index.v1+json')
    expect((JSON.parse(all.body.toString()) as { manifests: unknown[] }).manifests).toHaveLength(2)
    const sigs = await get(`${url}/v2/app/referrers/${good.digest}?ns=${host}&artifactType=${encodeURIComponent(SIG)}`, { authorization: TOKEN })
    expect(sigs.headers['oci-filters-applied']).toBe('artifactType')
    expect((JSON.parse(sigs.body.toString()) as { manifests: Array<{ artifactType: string }> }).manifests.map((m) => m.artifactType)).toEqual([SIG])
    const catalog = await get(`${url}/v2/_catalog?n=1&ns=${host}`, { authorization: TOKEN })
    expect(JSON.parse(catalog.body.toString())).toEqual({ repositories: ['app'] })
    expect(catalog.headers.link).toBe(`</v2/_catalog?last=app&n=1&ns=${encodeURIComponent(host)}>; rel="next"`)
  })

  it('refuses writes, on listings too, and names no other API', async () => {
    expect((await get(`${url}/v2/app/blobs/uploads/?ns=${host}`, {}, 'POST')).status).toBe(405)
    for (const path of ['/v2/app/tags/list', `/v2/app/referrers/${good.digest}`, '/v2/_catalog']) {
      const r = await get(`${url}${path}?ns=${host}`, { authorization: TOKEN }, 'DELETE')
      expect(r.status, path).toBe(405)
      expect(r.headers.allow).toBe('GET, HEAD')
      expect((JSON.parse(r.body.toString()) as { errors: Array<{ code: string }> }).errors[0].code).toBe('UNSUPPORTED')
    }
    expect(seen.some((r) => r.method === 'DELETE')).toBe(false)
    expect((await get(`${url}/v2/app/elsewhere/list?ns=${host}`)).status).toBe(404)
    expect((await get(`${url}/v2/app/manifests/v1?ns=bad%20host`)).status).toBe(400)
  })
})

describe('mirrorLink', () => {
  const origin = 'http://registry.internal:5000'
  it("points the registry's own links back through the mirror, and leaves links elsewhere alone", () => {
    expect(mirrorLink('</v2/a/tags/list?last=x&n=5>; rel="next"', origin, { prefix: '/v2/naiad-ns/registry.internal_5000' }))
      .toBe('</v2/naiad-ns/registry.internal_5000/a/tags/list?last=x&n=5>; rel="next"')
    expect(mirrorLink(`<${origin}/v2/_catalog?last=x>; rel="next"`, origin, { ns: 'registry.internal:5000' }))
      .toBe('</v2/_catalog?last=x&ns=registry.internal%3A5000>; rel="next"')
    expect(mirrorLink('</v2/a/tags/list?last=x>; rel="next"', origin, {})).toBe('</v2/a/tags/list?last=x>; rel="next"')
    expect(mirrorLink('<https://elsewhere.invalid/tags>; rel="help"', origin, { ns: 'registry.internal:5000' })).toBe('<https://elsewhere.invalid/tags>; rel="help"')
  })
})
