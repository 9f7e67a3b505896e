// The outsider suite: real processes on loopback — a supernode with the preheat,
// health, slo and doctor plugins, two daemons, a private registry (Basic auth), a public
// origin, a loopback service nobody may fetch and an origin that redirects to it — probed
// by a stranger (a libp2p node that never joined), a node of another cluster, a revoked
// node and an admitted node without grants. Every attempt fails and nothing is lost; the
// legitimate pulls of the same run succeed; no password reaches a data directory.
//
// Pieces are read over the daemons' data channels (TLS, each side proven by its identity
// key): a stranger and a node of another cluster are refused at the handshake, a revoked
// node from the moment its revocation reaches the daemon, and a member gets a task's
// pieces only with the supernode's grant for it and that task.

import { createHash, generateKeyPairSync } from 'node:crypto'
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { createServer, type Server } from 'node:http'
import { connect, type AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  call, ClusterSigner, ClusterVerifier, ControlRequest, ControlResponse, createFabricNode, joinRequest, MemberGuard, mintToken, parseToken,
  HEALTH_PROTOCOL, PROTOCOLS, SchedulerRequest, SchedulerResponse, SLO_TRACE_PROTOCOL, taskIdOf, type FabricNode
} from '@naiad/proto'

import {
  apiHeaders, BINS, downloadVia, getJson, makeBlob, pushImage, readPieceAs, run, runTool, startDaemon, startMemberNode, startRegistry, startSupernode,
  TestOrigin, waitFor, type DaemonHandle, type MemberNode, type PushedImage, type RegistryHandle, type SupernodeHandle
} from '../src/index.ts'

const MiB = 1024 * 1024
const PASSWORD = 'outsider-Pa55-7f3a91'
const BASIC = `Basic ${Buffer.from(`naiad:${PASSWORD}`).toString('base64')}`
const API_KEY = 'x-api-key-value-5d1e'
const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex')

/** A loopback server that counts requests; `redirect` sends everything to another URL. */
async function listen(handler: (path: string) => { status: number; location?: string; body?: string }): Promise<{ server: Server; url: string; host: string; hits: string[] }> {
  const hits: string[] = []
  const server = createServer((req, res) => {
    hits.push(req.url ?? '')
    const r = handler(req.url ?? '/')
    res.writeHead(r.status, r.location === undefined ? {} : { location: r.location }).end(r.body ?? '')
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const host = `127.0.0.1:${(server.address() as AddressInfo).port}`
  return { server, url: `http://${host}`, host, hits }
}

function rssKiB(pid: number): Promise<number> {
  return readFile(`/proc/${pid}/status`, 'utf8').then((s) => Number(/VmRSS:\s+(\d+)/.exec(s)?.[1] ?? NaN))
}

async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = []
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) if (e.isFile()) out.push(join(e.parentPath, e.name))
  return out
}

function addrsOf(peerId: string, multiaddrs: string[]): Multiaddr[] {
  return multiaddrs.map((a) => multiaddr(a.includes('/p2p/') ? a : `${a}/p2p/${peerId}`))
}

describe('outsider suite', () => {
  let dir: string
  let registry: RegistryHandle
  let image: PushedImage
  let origin: TestOrigin
  let internal: Awaited<ReturnType<typeof listen>>
  let redirector: Awaited<ReturnType<typeof listen>>
  let sn: SupernodeHandle
  let d1: DaemonHandle
  let d2: DaemonHandle
  let snAddrs: Multiaddr[]
  let stranger: FabricNode
  let foreign: FabricNode
  let member: MemberNode
  let revoked: MemberNode
  const publicData = makeBlob(6 * MiB, 'outsider-public')
  const privateUrl = (): string => `http://${registry.host}/v2/private/app/blobs/${image.layers[0].digest}`
  const daemonAddrs = async (d: DaemonHandle): Promise<Multiaddr[]> => {
    const peers = await getJson<Array<{ id: string; multiaddrs: string[] }>>(`${sn.url}/api/v1/peers`)
    return addrsOf(d.peerId, peers.find((p) => p.id === d.peerId)!.multiaddrs)
  }
  const schedule = (from: FabricNode, req: Partial<SchedulerRequest>): Promise<SchedulerResponse> =>
    call(from, snAddrs, PROTOCOLS.scheduler, SchedulerRequest, SchedulerResponse, req, { timeoutMs: 10_000 })
  const register = (from: FabricNode, url: string, headers: Record<string, string> = {}, taskId = taskIdOf({ url })): Promise<SchedulerResponse> =>
    schedule(from, { registerTask: { taskId, url, headers: Object.entries(headers).map(([name, value]) => ({ name, value })), digest: '', range: '', filter: [] } })
  /** Piece 0 of a task over a daemon's data channel, as `from` (its identity, credential and a grant): the byte count, or the refusal. */
  const tryPieces = (from: FabricNode, d: DaemonHandle, taskId: string, grant?: Uint8Array): Promise<number> =>
    readPieceAs(from, credentialOf(from), { peerId: d.peerId, port: d.dataPort }, taskId, { grant })
  /** The membership credential a node presents: a member's own, the other cluster's for `foreign`, none for a stranger. */
  const credentialOf = (node: FabricNode): Uint8Array =>
    node === member?.node ? member.credential : node === revoked?.node ? revoked.credential : node === foreign ? foreignCredential : new Uint8Array(0)
  let foreignCredential: Uint8Array = new Uint8Array(0)
  const codeOf = (p: Promise<unknown>): Promise<string> => p.then(() => 'served', (err: unknown) => (err as { code?: string }).code ?? String(err))

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'naiad-outsider-'))
    const ht = await runTool('htpasswd', ['-Bbn', 'naiad', PASSWORD])
    expect(ht.code).toBe(0)
    await writeFile(join(dir, 'htpasswd'), ht.stdout)
    registry = await startRegistry(join(dir, 'registry'), { htpasswd: join(dir, 'htpasswd') })
    image = await pushImage(registry.url, 'private/app', 'v1', [5 * MiB], { auth: BASIC })
    origin = await new TestOrigin().start()
    origin.files.set('/public', { data: publicData })
    internal = await listen(() => ({ status: 200, body: 'internal secret' }))
    redirector = await listen((path) => ({ status: 302, location: `${internal.url}${path}` }))
    // Only these may be fetched: not loopback as a whole, not the internal service, not the supernode itself.
    const allow = [registry.host, new URL(origin.url).host, redirector.host].join(',')
    await writeFile(join(dir, 'sn.yaml'), [
      'plugins: [metrics, preheat, health, slo, doctor]',
      'plugin-config:',
      `  preheat: { insecureRegistries: ["${registry.host}"] }`
    ].join('\n'))
    sn = await startSupernode(join(dir, 'sn'), { args: ['--config', join(dir, 'sn.yaml')], env: { NAIAD_SOURCE_ALLOW: allow } })
    const info = await getJson<{ peerId: string; multiaddrs: string[] }>(`${sn.url}/api/v1/info`)
    snAddrs = addrsOf(info.peerId, info.multiaddrs)
    // Forward-proxied registry blob URLs go through the swarm: the path that must check the registry first.
    await writeFile(join(dir, 'd.yaml'), 'proxy:\n  rules: ["/v2/.+/blobs/sha256:"]\n')
    const daemon = (name: string, zone: string): Promise<DaemonHandle> => startDaemon(join(dir, name), sn.url, {
      args: ['--config', join(dir, 'd.yaml'), '--insecure-registry', registry.host],
      env: { NAIAD_SOURCE_ALLOW: allow, NAIAD_HOST_LABELS: JSON.stringify({ zone }) }
    })
    ;[d1, d2] = await Promise.all([daemon('d1', 'a'), daemon('d2', 'b')])
    stranger = await createFabricNode({ dataDir: join(dir, 'stranger'), listen: ['/ip4/127.0.0.1/tcp/0'] })
    // A Naiad node of another cluster: a genuine credential, signed by the wrong key.
    const other = new ClusterSigner(generateKeyPairSync('ed25519').privateKey)
    let foreignId = ''
    foreign = await createFabricNode({
      dataDir: join(dir, 'foreign'), listen: ['/ip4/127.0.0.1/tcp/0'],
      guard: new MemberGuard({ verifier: () => new ClusterVerifier(other.publicKey), credential: () => other.membershipFor(foreignId, 'node', 60_000), revoked: () => false })
    })
    foreignId = foreign.peerId.toString()
    foreignCredential = other.membershipFor(foreignId, 'node', 60_000)
    member = await startMemberNode(join(dir, 'member'), sn)
    revoked = await startMemberNode(join(dir, 'revoked'), sn)
    await waitFor(async () => (await getJson<Array<{ isSeed: boolean }>>(`${sn.url}/api/v1/peers`)).filter((p) => !p.isSeed).length === 2, 20_000, 'both daemons to announce')
  })

  afterAll(async () => {
    await Promise.all([stranger, foreign, member?.node, revoked?.node].map((n) => n?.stop()))
    await Promise.all([d1, d2].map((d) => d?.process.stop()))
    await sn?.process.stop()
    await origin?.stop()
    await registry?.stop()
    for (const s of [internal, redirector]) s?.server.closeAllConnections()
    await Promise.all([internal, redirector].map((s) => s === undefined ? undefined : new Promise((r) => s.server.close(r))))
    await rm(dir, { recursive: true, force: true })
  })

  it('serves the legitimate pulls: a private blob to clients with credentials, a public file through the local API', async () => {
    const layer = image.layers[0]
    for (const d of [d1, d2]) {
      const res = await fetch(`${d.proxyUrl}/v2/private/app/blobs/${layer.digest}?ns=${registry.host}`, { headers: { authorization: BASIC } })
      expect(res.status).toBe(200)
      expect(sha256(Buffer.from(await res.arrayBuffer()))).toBe(layer.digest.slice(7))
    }
    for (const d of [d1, d2]) {
      const done = await downloadVia(d.apiUrl, { url: `${origin.url}/public` })
      expect(done.event, JSON.stringify(done)).toBe('done')
    }
    expect(origin.bytesServed('/public')).toBeLessThanOrEqual(publicData.length * 1.5)
  })

  it('refuses a stranger and a node of another cluster on every protocol of the supernode and the daemons', async () => {
    const supernodeProtocols = [PROTOCOLS.scheduler, PROTOCOLS.schedulerSession, PROTOCOLS.doctor, HEALTH_PROTOCOL, SLO_TRACE_PROTOCOL, PROTOCOLS.membership, PROTOCOLS.seedFetch]
    for (const node of [stranger, foreign]) {
      for (const protocol of supernodeProtocols) {
        await expect(call(node, snAddrs, protocol, SchedulerRequest, SchedulerResponse, {
          announceHost: { id: node.peerId.toString(), hostname: 'rogue', ip: '', idc: '', location: '', multiaddrs: [], uploadSlots: 1, isSeed: false, labels: ['zone=a'], dataPort: 0, dataTransport: '' }
        }, { timeoutMs: 10_000 }), `${protocol} from ${node === stranger ? 'a stranger' : 'another cluster'}`).rejects.toThrow()
      }
      for (const d of [d1, d2]) {
        const to = await daemonAddrs(d)
        await expect(call(node, to, PROTOCOLS.control, ControlRequest, ControlResponse, { command: 'download', argsJson: JSON.stringify({ url: `${origin.url}/public` }) }, { timeoutMs: 10_000 })).rejects.toThrow()
        // Refused at the data channel's handshake, before any request is read.
        expect(await codeOf(tryPieces(node, d, taskIdOf({ url: privateUrl(), digest: image.layers[0].digest })))).not.toMatch(/^(served|DFD_ERR_PIECE_FORBIDDEN)$/)
      }
    }
    // Nothing it said reached the scheduler: no rogue host, no zone=a it claimed.
    const peers = await getJson<Array<{ id: string; hostname: string }>>(`${sn.url}/api/v1/peers`)
    expect(peers.map((p) => p.id)).not.toContain(stranger.peerId.toString())
    expect(peers.map((p) => p.id)).not.toContain(foreign.peerId.toString())
  })

  it('refuses a revoked node everywhere from then on, and never lets it join again', async () => {
    const id = revoked.node.peerId.toString()
    // Admitted until now: the supernode and the daemons answer it.
    expect((await schedule(revoked.node, { leaveTask: { taskId: 'a'.repeat(64) } })).error).toBeUndefined()
    // The daemons admit it (a request without a grant is refused per task, not at the handshake).
    expect(await codeOf(tryPieces(revoked.node, d1, 'a'.repeat(64)))).toBe('DFD_ERR_PIECE_FORBIDDEN')
    const r = await run(BINS.supernode, ['node', 'revoke', id, '--data-dir', sn.dataDir])
    expect(r.code, r.stderr).toBe(0)
    // The running supernode reads the revocation from its database within seconds, and tells its daemons.
    await waitFor(async () => schedule(revoked.node, { leaveTask: { taskId: 'a'.repeat(64) } }).then(() => false, () => true), 20_000, 'the supernode to refuse the revoked node')
    for (const d of [d1, d2]) {
      const to = await daemonAddrs(d)
      await waitFor(async () => !['served', 'DFD_ERR_PIECE_FORBIDDEN'].includes(await codeOf(tryPieces(revoked.node, d, 'a'.repeat(64)))), 20_000, 'the daemons to refuse the revoked node at the handshake')
      await expect(call(revoked.node, to, PROTOCOLS.control, ControlRequest, ControlResponse, { command: 'info' }, { timeoutMs: 10_000 })).rejects.toThrow()
    }
    const again = await fetch(`${sn.url}/api/v1/join`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(joinRequest(parseToken(sn.joinToken), id))
    })
    expect(again.status).toBe(403)
    expect(await again.json()).toMatchObject({ code: 'SN_ERR_NODE_REVOKED' })
    const list = await run(BINS.supernode, ['node', 'list', '--json', '--data-dir', sn.dataDir])
    const nodes = JSON.parse(list.stdout) as Array<{ id: string; revokedAt: number | null }>
    expect(nodes.find((n) => n.id === id)?.revokedAt).not.toBeNull()
    expect(nodes.find((n) => n.id === d1.peerId)?.revokedAt).toBeNull()
  })

  it('gives an admitted node nothing for a task ID alone: no squatting, no parents or grant, no private task without credentials', async () => {
    const node = member.node
    const publicUrl = `${origin.url}/public`
    // Squatting: the public file's ID under another URL.
    const squat = await register(node, `${origin.url}/elsewhere`, {}, taskIdOf({ url: publicUrl }))
    expect(squat.error?.code).toBe('SN_ERR_TASK_ID_MISMATCH')
    // The private blob's ID is computable, but worth nothing.
    const privateId = taskIdOf({ url: privateUrl(), digest: image.layers[0].digest })
    const parents = await schedule(node, { getParents: { taskId: privateId, limit: 8, digestEpoch: 0, digests: 0 } })
    expect(parents.error?.code).toBe('SN_ERR_FORBIDDEN')
    expect(parents.parents).toBeUndefined()
    for (const headers of [{}, { authorization: `Basic ${Buffer.from('naiad:wrong').toString('base64')}` }]) {
      const reg = await schedule(node, { registerTask: { taskId: privateId, url: privateUrl(), headers: Object.entries(headers).map(([name, value]) => ({ name, value })), digest: image.layers[0].digest, range: '', filter: [] } })
      expect(reg.error?.code).toBe('SN_ERR_FORBIDDEN')
    }
    expect((await schedule(node, { reportPieces: { taskId: privateId, results: [{ num: 0, parentId: '', length: 1, costMs: 1, sha256: new Uint8Array(0), errorCode: '' }], contentLength: -1, pieceSize: 0, pieceCount: -1, sha256: new Uint8Array(0), state: '', error: undefined } })).error?.code).toBe('SN_ERR_FORBIDDEN')
    // A public task it may join: with a grant bound to it and that task, and nothing beyond the task's pieces.
    const pub = await register(node, publicUrl)
    expect(pub.error).toBeUndefined()
    const grant = new ClusterVerifier(parseToken(sn.joinToken).claims.cluster!).grant(pub.task!.grant, node.peerId.toString(), taskIdOf({ url: publicUrl }))
    expect(grant.expiresAt).toBeGreaterThan(Date.now())
    const far = await schedule(node, { reportPieces: { taskId: taskIdOf({ url: publicUrl }), results: [{ num: 2 ** 31, parentId: '', length: 1, costMs: 1, sha256: new Uint8Array(0), errorCode: '' }], contentLength: -1, pieceSize: 0, pieceCount: -1, sha256: new Uint8Array(0), state: '', error: undefined } })
    expect(far.error?.code).toBe('SN_ERR_BAD_REQUEST')
    // Announced addresses other than its connection's are dropped; labels come from members only.
    const own = node.getMultiaddrs().map(String)
    expect((await schedule(node, { announceHost: { id: '', hostname: 'member', ip: '', idc: '', location: '', multiaddrs: ['/ip4/10.9.8.7/tcp/4001', ...own], uploadSlots: 1, isSeed: false, labels: ['zone=c'], dataPort: 0, dataTransport: '' } })).error).toBeUndefined()
    const seen = (await getJson<Array<{ id: string; multiaddrs: string[]; labels: Record<string, string> }>>(`${sn.url}/api/v1/peers`)).find((p) => p.id === node.peerId.toString())!
    expect(seen.multiaddrs.some((a) => a.includes('10.9.8.7'))).toBe(false)
    expect(seen.multiaddrs.length).toBeGreaterThan(0)
    // Over the data channel: nothing without a grant, the piece with the one it was given; and
    // nothing of the private blob d2 holds, for which it has no grant at all.
    expect(await codeOf(tryPieces(node, d1, taskIdOf({ url: publicUrl })))).toBe('DFD_ERR_PIECE_FORBIDDEN')
    expect(await tryPieces(node, d1, taskIdOf({ url: publicUrl }), pub.task!.grant)).toBeGreaterThan(0)
    expect(await codeOf(tryPieces(node, d2, privateId, pub.task!.grant))).toBe('DFD_ERR_PIECE_FORBIDDEN')
    // It is a member, not the supernode: daemons take no control command from it.
    const cmd = await call(node, await daemonAddrs(d1), PROTOCOLS.control, ControlRequest, ControlResponse, { command: 'download', argsJson: JSON.stringify({ url: publicUrl }) }, { timeoutMs: 10_000 })
    expect(cmd).toMatchObject({ ok: false, code: 'DFD_ERR_CONTROL_FORBIDDEN' })
  })

  it('fetches nothing the operator did not allow: loopback services, the supernode itself, redirects to them', async () => {
    const node = member.node
    const viaProxy = (url: string): Promise<number> => new Promise<number>((resolve, reject) => {
      const s = connect(Number(new URL(d1.proxyUrl).port), '127.0.0.1', () => s.write(`GET ${url} HTTP/1.1\r\nhost: ${new URL(url).host}\r\nconnection: close\r\n\r\n`))
      let head = ''
      s.on('data', (b: Buffer) => { head += b.toString() })
      s.on('end', () => resolve(Number(/^HTTP\/1\.1 (\d+)/.exec(head)?.[1])))
      s.on('error', reject)
    })
    for (const url of [`${internal.url}/secret`, `${sn.url}/api/v1/peers`, `${redirector.url}/secret`]) {
      expect((await register(node, url)).error?.code, url).toBe('PROTO_ERR_DESTINATION_DENIED')
      const local = await downloadVia(d1.apiUrl, { url, timeoutMs: 20_000 })
      expect(local, url).toMatchObject({ event: 'error', code: 'PROTO_ERR_DESTINATION_DENIED' })
    }
    // The forward proxy relays only where the policy allows, and follows no redirect itself.
    for (const url of [`${internal.url}/secret`, `${sn.url}/api/v1/peers`]) expect(await viaProxy(url), url).toBe(403)
    expect(await viaProxy(`${redirector.url}/secret`)).toBe(302)
    for (const path of ['/api/v1/jobs', '/oapi/v1/jobs']) {
      const direct = await fetch(`${sn.url}${path}`, {
        method: 'POST', headers: { ...apiHeaders(sn.url), 'content-type': 'application/json' },
        body: JSON.stringify({ type: 'preheat', args: { type: 'file', urls: [`${internal.url}/secret`, `${sn.url}/api/v1/peers`] } })
      })
      expect(direct.status).toBe(403)
      expect(await direct.json()).toMatchObject({ code: 'PROTO_ERR_DESTINATION_DENIED' })
    }
    const redirected = await (await fetch(`${sn.url}/api/v1/jobs`, {
      method: 'POST', headers: { ...apiHeaders(sn.url), 'content-type': 'application/json' },
      body: JSON.stringify({ type: 'preheat', args: { type: 'file', url: `${redirector.url}/secret` } })
    })).json() as { id: number }
    await waitFor(async () => (await getJson<{ state: string }>(`${sn.url}/api/v1/jobs/${redirected.id}`)).state === 'FAILURE', 30_000, 'the redirected preheat to fail')
    expect(JSON.stringify(await getJson(`${sn.url}/api/v1/jobs/${redirected.id}`))).toContain('PROTO_ERR_DESTINATION_DENIED')
    expect(internal.hits).toEqual([])
  })

  it('answers 401 without an API token on every endpoint but the probes and metrics', async () => {
    const other = mintToken(new ClusterSigner(generateKeyPairSync('ed25519').privateKey), 'api', 60_000)
    const closed: Array<[string, string]> = [
      ['GET', '/api/v1/tasks'], ['GET', '/api/v1/peers'], ['GET', '/api/v1/nodes'], ['GET', '/api/v1/jobs'], ['GET', '/oapi/v1/jobs'],
      ['POST', '/api/v1/jobs'], ['POST', '/oapi/v1/jobs'], ['POST', `/api/v1/nodes/${d1.peerId}/revoke`], ['GET', '/api/v1/traces'], ['GET', '/api/v1/doctor'], ['GET', '/api/v1/no-such-route']
    ]
    for (const [method, path] of closed) {
      for (const authorization of [undefined, `Bearer ${sn.joinToken}`, `Bearer ${other}`, 'Basic Zm9vOmJhcg==']) {
        const res = await fetch(`${sn.url}${path}`, { method, headers: { 'content-type': 'application/json', ...(authorization === undefined ? {} : { authorization }) }, body: method === 'POST' ? '{"type":"preheat","args":{"type":"file","url":"http://example.invalid/x"}}' : undefined })
        expect(res.status, `${method} ${path} with ${authorization?.slice(0, 12) ?? 'nothing'}`).toBe(401)
        expect(res.headers.get('www-authenticate')).toMatch(/^Bearer /)
        expect(await res.json()).toMatchObject({ code: 'SN_ERR_UNAUTHORIZED', errors: [{ code: 'UNAUTHORIZED' }] })
      }
    }
    for (const path of ['/healthz', '/readyz', '/healthy', '/metrics', '/api/v1/info']) expect((await fetch(`${sn.url}${path}`)).status, path).toBe(200)
    // The console's page holds no data (its API calls carry the token): open, built or not.
    expect((await fetch(`${sn.url}/`)).status).not.toBe(401)
    // The operator's way to a token: the last line of `supernode token create`, while the supernode runs.
    const created = await run(BINS.supernode, ['token', 'create', '--data-dir', sn.dataDir, '--scope', 'api', '--ttl', '10m'])
    expect(created.code, created.stderr).toBe(0)
    const token = created.stdout.trim().split('\n').at(-1)!
    const nodes = await fetch(`${sn.url}/api/v1/nodes`, { headers: { authorization: `Bearer ${token}` } })
    expect(nodes.status).toBe(200)
    expect((await nodes.json() as unknown[]).length).toBeGreaterThanOrEqual(3)
    // Strict IDs and bounded bodies, with the token.
    for (const id of ['0x1', '1e3', '01', '+1', '1.0', `${2 ** 60}`]) {
      const res = await fetch(`${sn.url}/api/v1/jobs/${id}`, { headers: apiHeaders(sn.url) })
      expect(res.status, id).toBe(400)
    }
    // A 50 MiB body is refused before it is read: the answer comes after its first bytes.
    const big = await new Promise<string>((resolve, reject) => {
      const s = connect(sn.port, '127.0.0.1', () => {
        s.write(`POST /api/v1/jobs HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: ${apiHeaders(sn.url).authorization}\r\ncontent-type: application/json\r\ncontent-length: ${50 * MiB}\r\n\r\n{"type":"preheat","args":{"url":"`)
      })
      let answer = ''
      s.on('data', (b: Buffer) => { answer += b.toString(); if (answer.includes('}')) s.destroy() })
      s.on('close', () => resolve(answer))
      s.on('error', reject)
    })
    expect(big).toMatch(/^HTTP\/1\.1 413 /)
    expect(big).toContain('SN_ERR_BODY_TOO_LARGE')
  })

  it('sends preheat credentials only to admitted daemons carrying the label, and shows none of them', async () => {
    const created = await fetch(`${sn.url}/oapi/v1/jobs`, {
      method: 'POST', headers: { ...apiHeaders(sn.url), 'content-type': 'application/json' },
      body: JSON.stringify({ type: 'preheat', args: { type: 'image', url: `${registry.host}/private/app:v1`, username: 'naiad', password: PASSWORD, headers: { 'X-Api-Key': API_KEY, Accept: '*/*' }, scope: { labels: { zone: 'a' } } } })
    })
    expect(created.status).toBe(200)
    const id = (await created.json() as { id: number }).id
    type Job = { state: string; args: { password?: string; headers: Record<string, string> }; nodes: Array<{ node: string; peerId?: string }> }
    await waitFor(async () => ['SUCCESS', 'FAILURE'].includes((await getJson<Job>(`${sn.url}/api/v1/jobs/${id}`)).state), 60_000, 'the preheat job to finish')
    const job = await getJson<Job>(`${sn.url}/oapi/v1/jobs/${id}`)
    expect(job.state, JSON.stringify(job)).toBe('SUCCESS')
    expect(job.nodes.filter((n) => n.node === 'peer').map((n) => n.peerId)).toEqual([d1.peerId])
    expect(job.args.password).toBe('<redacted>')
    expect(job.args.headers).toEqual({ 'X-Api-Key': '<redacted>', Accept: '*/*' })
    expect(JSON.stringify(await getJson(`${sn.url}/api/v1/jobs`))).not.toContain(API_KEY)
  })

  it('checks the registry before the forward proxy serves a private blob, and relays no CONNECT', async () => {
    const get = (headers: Record<string, string>): Promise<{ status: number; body: Buffer }> => new Promise((resolve, reject) => {
      const s = connect(Number(new URL(d2.proxyUrl).port), '127.0.0.1', () => {
        s.write(`GET ${privateUrl()} HTTP/1.1\r\nhost: ${registry.host}\r\nconnection: close\r\n${Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join('')}\r\n`)
      })
      const chunks: Buffer[] = []
      s.on('data', (b: Buffer) => chunks.push(b))
      s.on('end', () => {
        const all = Buffer.concat(chunks)
        const split = all.indexOf('\r\n\r\n')
        resolve({ status: Number(/^HTTP\/1\.1 (\d+)/.exec(all.subarray(0, split).toString())?.[1]), body: all.subarray(split + 4) })
      })
      s.on('error', reject)
    })
    // d2 holds the blob (it pulled it with credentials); a client without them gets none of it.
    const denied = await get({})
    expect(denied.status).toBe(403)
    expect(JSON.parse(denied.body.toString())).toMatchObject({ code: 'DFD_ERR_BLOB_DENIED' })
    expect((await get({ authorization: `Basic ${Buffer.from('naiad:wrong').toString('base64')}` })).status).toBe(403)
    const ok = await get({ authorization: BASIC })
    expect(ok.status).toBe(200)
    expect(ok.body.includes(image.layers[0].data.subarray(0, 4096))).toBe(true)
    for (const target of [internal.host, 'example.com:443', `127.0.0.1:${sn.port}`]) {
      const head = await new Promise<string>((resolve, reject) => {
        const s = connect(Number(new URL(d2.proxyUrl).port), '127.0.0.1', () => s.write(`CONNECT ${target} HTTP/1.1\r\nhost: ${target}\r\n\r\n`))
        let h = ''
        s.on('data', (b: Buffer) => { h += b.toString() })
        s.on('end', () => resolve(h))
        s.on('error', reject)
      })
      expect(head, target).toMatch(/^HTTP\/1\.1 403 /)
    }
    expect(internal.hits).toEqual([])
  })

  it('keeps its memory and database bounded under oversized and repeated requests', async () => {
    const rssBefore = await rssKiB(d2.process.pid)
    const dbBefore = (await stat(join(sn.dataDir, 'supernode.db-wal')).catch(() => ({ size: 0 }))).size + (await stat(join(sn.dataDir, 'supernode.db'))).size
    const huge = 'f'.repeat(1024 * 1024)
    let refused = 0
    // A stranger is refused at the handshake; a member's 1 MB task ID is an oversized frame, and
    // its unknown (well-formed) task IDs leave nothing behind.
    for (let i = 0; i < 100; i++) refused += await tryPieces(stranger, d2, `${huge}${i}`).then(() => 0, () => 1)
    for (let i = 0; i < 100; i++) refused += await tryPieces(member.node, d2, `${huge}${i}`).then(() => 0, () => 1)
    for (let i = 0; i < 100; i++) refused += await tryPieces(member.node, d2, createHash('sha256').update(`unknown ${i}`).digest('hex')).then(() => 0, () => 1)
    expect(refused).toBe(300)
    const bigHeaders = { 'x-filler': 'h'.repeat(1024 * 1024) }
    for (let i = 0; i < 50; i++) {
      expect((await register(member.node, `${origin.url}/public?n=${i}`, bigHeaders)).error?.code).toBe('SN_ERR_BAD_REQUEST')
    }
    // New tasks per node are rate limited (the origin answers 404: never public, never a seed download).
    const codes = new Map<string, number>()
    for (let batch = 0; batch < 8; batch++) {
      const answers = await Promise.all(Array.from({ length: 50 }, (_, i) => register(member.node, `${origin.url}/missing/${batch}-${i}`)))
      for (const a of answers) codes.set(a.error?.code ?? 'ok', (codes.get(a.error?.code ?? 'ok') ?? 0) + 1)
    }
    expect([...codes.keys()].sort()).toEqual(['SN_ERR_FORBIDDEN', 'SN_ERR_RATE_LIMITED'])
    const rssAfter = await rssKiB(d2.process.pid)
    expect(rssAfter - rssBefore, `daemon RSS ${rssBefore} → ${rssAfter} KiB`).toBeLessThan(64 * 1024)
    await new Promise((r) => setTimeout(r, 500)) // one write-behind flush
    const dbAfter = (await stat(join(sn.dataDir, 'supernode.db-wal')).catch(() => ({ size: 0 }))).size + (await stat(join(sn.dataDir, 'supernode.db'))).size
    expect(dbAfter - dbBefore, `supernode database ${dbBefore} → ${dbAfter} bytes`).toBeLessThan(4 * MiB)
    // Both still serve.
    expect((await downloadVia(d2.apiUrl, { url: `${origin.url}/public` })).event).toBe('done')
  })

  it('keeps no credential at rest: no password in any data directory, 0700 directories, 0600 keys and databases', async () => {
    const needles = [PASSWORD, Buffer.from(`naiad:${PASSWORD}`).toString('base64'), API_KEY]
    for (const root of [sn.dataDir, join(dir, 'd1'), join(dir, 'd2')]) {
      expect((await stat(root)).mode & 0o777, root).toBe(0o700)
      for (const file of await filesUnder(root)) {
        const bytes = await readFile(file)
        for (const n of needles) expect(bytes.includes(n), `${file} holds a credential`).toBe(false)
      }
    }
    for (const f of ['cluster.key', 'identity.key', 'supernode.db']) expect((await stat(join(sn.dataDir, f))).mode & 0o077, f).toBe(0)
    for (const d of ['d1', 'd2']) for (const f of ['identity.key', 'membership.json']) expect((await stat(join(dir, d, f))).mode & 0o077, `${d}/${f}`).toBe(0)
    // Nor in the logs.
    for (const p of [sn.process, d1.process, d2.process]) for (const n of needles) expect(p.logs.some((l) => l.includes(n))).toBe(false)
  })

  it('lets a daemon restart without its join token: it kept its credential', async () => {
    await d2.process.stop()
    d2 = await startDaemon(join(dir, 'd2'), sn.url, {
      joinToken: null, args: ['--config', join(dir, 'd.yaml'), '--insecure-registry', registry.host],
      env: { NAIAD_SOURCE_ALLOW: [registry.host, new URL(origin.url).host, redirector.host].join(','), NAIAD_HOST_LABELS: '{"zone":"b"}' }
    })
    expect(d2.process.logs.some((l) => l.includes('joined the cluster'))).toBe(false)
    const done = await downloadVia(d2.apiUrl, { url: `${origin.url}/public` })
    expect(done.event).toBe('done')
    // Without a credential or a token, a daemon does not start.
    const bare = await run(BINS.dfdaemon, ['--supernode', sn.url, '--data-dir', join(dir, 'bare')], { timeoutMs: 30_000 })
    expect(bare.code).toBe(2)
    expect(bare.stderr).toContain('--join-token')
  })
})
