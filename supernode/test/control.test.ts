// The control service (`/naiad/control/1.0.0`) against real processes: a supernode whose
// test plugin calls its context's `control`, two labelled daemons (one with a plugin that
// adds a command), and a foreign libp2p node that must be refused.

import { createHash } from 'node:crypto'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

import { multiaddr } from '@multiformats/multiaddr'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { call, ControlRequest, ControlResponse, createFabricNode, PROTOCOLS, type FabricNode } from '@naiad/proto'
import {
  apiHeaders, BINS, contentOf, getJson, makeBlob, run, startDaemon, startSupernode, TestOrigin, waitFor,
  type DaemonHandle, type SupernodeHandle
} from '@naiad/testkit'

const PROBE = fileURLToPath(new URL('./fixtures/control-probe-supernode.ts', import.meta.url))
const DAEMON_PROBE = fileURLToPath(new URL('./fixtures/control-probe-daemon.ts', import.meta.url))
const MiB = 1024 * 1024

interface SendReply { ok: boolean; result?: unknown; code?: string; message?: string }
interface PeerView { id: string; hostname: string; labels: Record<string, string>; multiaddrs: string[]; isSeed: boolean }

async function post<T>(url: string, body: unknown): Promise<T> {
  const res = await fetch(url, { method: 'POST', headers: { ...apiHeaders(url), 'content-type': 'application/json' }, body: JSON.stringify(body) })
  if (!res.ok) throw new Error(`${url}: HTTP ${res.status} ${await res.text()}`)
  return await res.json() as T
}

describe('control service', () => {
  let dir: string
  let origin: TestOrigin
  let sn: SupernodeHandle
  let zoneA: DaemonHandle
  let zoneB: DaemonHandle
  let foreign: FabricNode | undefined
  const send = (body: { hostId: string; command: string; args?: unknown; timeoutMs?: number; abortAfterMs?: number }): Promise<SendReply> =>
    post<SendReply>(`${sn.url}/test/control/send`, body)

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'naiad-control-'))
    origin = await new TestOrigin().start()
    await writeFile(join(dir, 'sn.yaml'), `plugins: [metrics, ${JSON.stringify(PROBE)}]\n`)
    sn = await startSupernode(join(dir, 'sn'), { args: ['--config', join(dir, 'sn.yaml')] })
    // Labels from the config file on one daemon, from the environment on the other.
    await writeFile(join(dir, 'a.yaml'), `plugins: [metrics, ${JSON.stringify(DAEMON_PROBE)}]\nhost:\n  labels:\n    zone: a\n    gpu: true\n`)
    ;[zoneA, zoneB] = await Promise.all([
      startDaemon(join(dir, 'a'), sn.url, { args: ['--config', join(dir, 'a.yaml')] }),
      startDaemon(join(dir, 'b'), sn.url, { env: { NAIAD_HOST_LABELS: '{"zone":"b"}' } })
    ])
    await waitFor(async () => (await getJson<PeerView[]>(`${sn.url}/api/v1/peers`)).filter((p) => !p.isSeed).length === 2, 20_000, 'both daemons to announce')
  })

  afterAll(async () => {
    await foreign?.stop()
    await Promise.all([zoneA, zoneB].map((d) => d?.process.stop()))
    await sn?.process.stop()
    await origin?.stop()
    await rm(dir, { recursive: true, force: true })
  })

  it('shows host labels in /api/v1/peers and selects hosts by them', async () => {
    const peers = await getJson<PeerView[]>(`${sn.url}/api/v1/peers`)
    expect(peers.find((p) => p.id === zoneA.peerId)?.labels).toEqual({ zone: 'a', gpu: 'true' })
    expect(peers.find((p) => p.id === zoneB.peerId)?.labels).toEqual({ zone: 'b' })

    const all = await post<PeerView[]>(`${sn.url}/test/control/hosts`, {})
    expect(all.map((h) => h.id).sort()).toEqual([zoneA.peerId, zoneB.peerId].sort())
    expect((await post<PeerView[]>(`${sn.url}/test/control/hosts`, { zone: 'a' })).map((h) => h.id)).toEqual([zoneA.peerId])
    expect((await post<PeerView[]>(`${sn.url}/test/control/hosts`, { zone: 'a', gpu: 'true' })).map((h) => h.id)).toEqual([zoneA.peerId])
    expect(await post<PeerView[]>(`${sn.url}/test/control/hosts`, { zone: 'b', gpu: 'true' })).toEqual([])
  })

  it('runs info, download and a plugin command on a daemon from the supernode', async () => {
    const info = await send({ hostId: zoneA.peerId, command: 'info', timeoutMs: 5000 })
    expect(info.ok, JSON.stringify(info)).toBe(true)
    expect(info.result).toMatchObject({ hostId: zoneA.peerId, labels: { zone: 'a', gpu: 'true' } })
    expect((info.result as { version: string }).version).toMatch(/^\d+\.\d+\.\d+/)

    const data = makeBlob(6 * MiB, 'control-download')
    origin.files.set('/ctl', { data })
    const digest = `sha256:${createHash('sha256').update(data).digest('hex')}`
    const dl = await send({ hostId: zoneB.peerId, command: 'download', args: { url: `${origin.url}/ctl`, digest, priority: 'preheat' }, timeoutMs: 60_000 })
    expect(dl.ok, JSON.stringify(dl)).toBe(true)
    const r = dl.result as { taskId: string; contentLength: number; fromPeers: number; fromOrigin: number }
    expect(r.contentLength).toBe(data.length)
    expect(r.fromPeers + r.fromOrigin).toBe(data.length)
    // The daemon holds the verified content: the command resolved only once it was complete.
    expect((await contentOf(zoneB.apiUrl, r.taskId)).equals(data)).toBe(true)
    // Joining it again answers from the cache.
    const again = await send({ hostId: zoneB.peerId, command: 'download', args: { url: `${origin.url}/ctl`, digest } })
    expect(again.result).toMatchObject({ taskId: r.taskId, fromPeers: 0, fromOrigin: 0 })

    // A command a daemon plugin registered through ctx.extensions.control.
    expect(await send({ hostId: zoneA.peerId, command: 'echo', args: { n: 1 } })).toEqual({ ok: true, result: { echoed: { n: 1 } } })
  })

  it('answers typed errors: unknown command, bad arguments, unknown host, timeout and abort', async () => {
    // zoneB has no probe plugin, so it does not know `echo`.
    expect(await send({ hostId: zoneB.peerId, command: 'echo' })).toMatchObject({ ok: false, code: 'DFD_ERR_CONTROL_UNKNOWN' })
    expect(await send({ hostId: zoneB.peerId, command: 'download', args: { url: 'ftp://x/y' } })).toMatchObject({ ok: false, code: 'DFD_ERR_BAD_REQUEST' })
    expect(await send({ hostId: zoneB.peerId, command: 'download', args: { url: `${origin.url}/x`, priority: 'urgent' } })).toMatchObject({ ok: false, code: 'DFD_ERR_BAD_REQUEST' })
    expect(await send({ hostId: '12D3KooWNoSuchHostNoSuchHostNoSuchHostNoSuchHost', command: 'info' })).toMatchObject({ ok: false, code: 'SN_ERR_HOST_NOT_FOUND' })
    const seedId = (await getJson<{ peerId: string }>(`${sn.url}/api/v1/info`)).peerId
    expect(await send({ hostId: seedId, command: 'info' })).toMatchObject({ ok: false, code: 'SN_ERR_HOST_NOT_FOUND' })

    origin.files.set('/stall', { data: makeBlob(MiB, 'stall') })
    origin.faults.set('/stall', { stallMs: 30_000 })
    const late = await send({ hostId: zoneA.peerId, command: 'download', args: { url: `${origin.url}/stall` }, timeoutMs: 1000 })
    expect(late).toMatchObject({ ok: false, code: 'DFD_ERR_TIMEOUT' })

    origin.files.set('/stall2', { data: makeBlob(MiB, 'stall2') })
    origin.faults.set('/stall2', { stallMs: 30_000 })
    const aborted = await send({ hostId: zoneA.peerId, command: 'download', args: { url: `${origin.url}/stall2` }, timeoutMs: 60_000, abortAfterMs: 1000 })
    expect(aborted).toMatchObject({ ok: false, code: 'PROTO_ERR_ABORTED' })
    // The daemon stopped waiting as soon as the supernode gave up, well before its 60 s timeout.
    await waitFor(() => zoneA.process.logs.some((l) => l.includes('the caller closed the control stream')), 10_000, 'the daemon to see the abort')
  })

  it('rejects bad host.labels at start-up, naming the key', async () => {
    const r = await run(BINS.dfdaemon, ['--supernode', sn.url, '--data-dir', join(dir, 'bad')], { env: { NAIAD_HOST_LABELS: '{"bad key":"x"}' }, timeoutMs: 30_000 })
    expect(r.code).toBe(2)
    expect(r.stderr).toContain('host.labels')
  })

  it('refuses a control call from a libp2p node that is not the supernode', async () => {
    // A node outside the cluster does not get past the fabric's membership check (the
    // outsider suite, testkit/test/outsider.test.ts, tries a member that is not the supernode).
    foreign = await createFabricNode({ dataDir: join(dir, 'foreign'), listen: ['/ip4/127.0.0.1/tcp/0'] })
    const peers = await getJson<PeerView[]>(`${sn.url}/api/v1/peers`)
    const target = peers.find((p) => p.id === zoneA.peerId)!
    const addrs = target.multiaddrs.map((a) => multiaddr(a.includes('/p2p/') ? a : `${a}/p2p/${target.id}`))
    for (const command of ['info', 'download']) {
      await expect(call(foreign, addrs, PROTOCOLS.control, ControlRequest, ControlResponse, {
        command, argsJson: JSON.stringify({ url: `${origin.url}/ctl` }), timeoutMs: 5000
      }, { timeoutMs: 10_000 })).rejects.toMatchObject({ code: 'PROTO_ERR_DIAL' })
    }
    // The refused download never started a task on the daemon.
    const tasks = await getJson<Array<{ url: string }>>(`${zoneA.apiUrl}/api/v1/tasks`)
    expect(tasks.some((t) => t.url === `${origin.url}/ctl`)).toBe(false)
  })
})
