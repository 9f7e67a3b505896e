// Preheat beyond the seed, against real processes: a docker-registry behind a counting
// proxy, a supernode with the preheat plugin, and labelled daemons that the supernode
// commands over the control service. A label scope reaches only the matching daemons;
// `all_peers` reaches all of them, after which every daemon pulls the image through its
// mirror from its own cache and the registry sends no body bytes.

import { createHash } from 'node:crypto'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { multiaddr } from '@multiformats/multiaddr'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { call, PROTOCOLS, SchedulerRequest, SchedulerResponse, type FabricNode } from '@naiad/proto'
import {
  apiHeaders, CountingProxy, getJson, makeBlob, metric, pushImage, startDaemon, startMemberNode, startRegistry, startSupernode, TestOrigin, waitFor,
  type DaemonHandle, type PushedImage, type RegistryHandle, type SupernodeHandle
} from '@naiad/testkit'

interface BlobView { url: string; digest: string | null; state: string; cached: boolean; bytes: number; error: { code: string; message: string } | null }
interface NodeView { node: string; peerId: string; hostname: string; labels?: Record<string, string>; state: string; error: { code: string; message: string } | null; blobs: BlobView[] }
interface JobView {
  id: number
  state: string
  args: Record<string, unknown>
  error: { code: string; message: string } | null
  progress: { blobs: number; succeeded: number; nodes: { total: number; succeeded: number; failed: number } }
  nodes: NodeView[]
  result: { job_states: Array<{ state: string; results: Array<{ success_tasks: Array<{ url: string; hostname: string }>; failure_tasks: Array<{ url: string; hostname: string; description: string }> }> }> }
}
interface StoredTask { id: string; url: string; complete: boolean; contentLength: number }

const MiB = 1024 * 1024
const TERMINAL = new Set(['SUCCESS', 'FAILURE', 'CANCELED'])
const sha256 = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`

async function post(url: string, body: unknown): Promise<{ status: number; json: unknown }> {
  const res = await fetch(url, { method: 'POST', headers: { ...apiHeaders(url), 'content-type': 'application/json' }, body: JSON.stringify(body) })
  return { status: res.status, json: await res.json() as unknown }
}

describe('preheat to peers', () => {
  let dir: string
  let registry: RegistryHandle
  let proxy: CountingProxy
  let origin: TestOrigin
  let sn: SupernodeHandle
  let daemons: DaemonHandle[] = []
  let api: string
  let configFile: string
  let slow: FabricNode | undefined

  const untilDone = async (base: string, id: number, timeoutMs = 120_000): Promise<JobView> => {
    let last: JobView | undefined
    await waitFor(async () => {
      last = await getJson<JobView>(`${base}/jobs/${id}`)
      return TERMINAL.has(last.state)
    }, timeoutMs, `preheat job ${id}`)
    return last!
  }
  const tasksOf = (d: DaemonHandle): Promise<StoredTask[]> => getJson<StoredTask[]>(`${d.apiUrl}/api/v1/tasks`)
  const blobUrl = (repo: string, digest: string): string => `http://${proxy.host}/v2/${repo}/blobs/${digest}`

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'naiad-preheat-peers-'))
    registry = await startRegistry(join(dir, 'registry'))
    proxy = await new CountingProxy(registry.url).start()
    origin = await new TestOrigin().start()
    const config = join(dir, 'supernode.yaml')
    await writeFile(config, ['plugins: [metrics, preheat]', 'plugin-config:', '  preheat:', `    insecureRegistries: ["${proxy.host}"]`, '    checkInterval: 200ms', ''].join('\n'))
    configFile = config
    sn = await startSupernode(join(dir, 'sn'), { args: ['--config', config] })
    api = `${sn.url}/api/v1`
    const args = ['--insecure-registry', proxy.host, '--default-registry', proxy.url]
    daemons = await Promise.all([{ zone: 'a' }, { zone: 'a', pool: 'gpu' }, { zone: 'b' }].map((labels, i) =>
      // A generous scheduler timeout: on a loaded machine a daemon that thinks its supernode
      // is gone relays blobs from the registry, which is not what this test is about.
      startDaemon(join(dir, `d${i + 1}`), sn.url, { args, env: { NAIAD_HOST_LABELS: JSON.stringify(labels), NAIAD_SCHEDULER_TIMEOUT: '10s' } })))
    await waitFor(async () => (await getJson<Array<{ isSeed: boolean }>>(`${api}/peers`)).filter((p) => !p.isSeed).length === 3, 20_000, 'the daemons to announce')
  })

  afterAll(async () => {
    await slow?.stop()
    await Promise.all(daemons.map((d) => d.process.stop()))
    await sn?.process.stop()
    await origin?.stop()
    await proxy?.stop()
    await registry?.stop()
    await rm(dir, { recursive: true, force: true })
  })

  it('a label scope preheats only the daemons carrying every label', async () => {
    const image = await pushImage(registry.url, 'team/gpu-only', 'v1', [3 * MiB, 2 * MiB])
    const digests = [image.config.digest, ...image.layers.map((l) => l.digest)]
    const created = await post(`${api}/jobs`, { type: 'preheat', args: { type: 'image', url: `${proxy.host}/team/gpu-only:v1`, scope: { labels: { zone: 'a', pool: 'gpu' } } } })
    expect(created.status, JSON.stringify(created.json)).toBe(201)
    const done = await untilDone(api, (created.json as JobView).id)
    expect(done.state, JSON.stringify(done.error)).toBe('SUCCESS')
    const peers = done.nodes.filter((n) => n.node === 'peer')
    expect(peers.map((p) => p.peerId)).toEqual([daemons[1].peerId])
    expect(peers[0]).toMatchObject({ state: 'SUCCESS', labels: { zone: 'a', pool: 'gpu' } })
    expect(peers[0].blobs.map((b) => b.digest).sort()).toEqual([...digests].sort())

    const urls = digests.map((d) => blobUrl('team/gpu-only', d))
    const held = await tasksOf(daemons[1])
    for (const u of urls) expect(held.find((t) => t.url === u)?.complete, u).toBe(true)
    // The daemons outside the selection have no task for any of the blobs.
    for (const d of [daemons[0], daemons[2]]) {
      const tasks = await tasksOf(d)
      expect(tasks.filter((t) => urls.includes(t.url))).toEqual([])
    }

    const none = await post(`${api}/jobs`, { type: 'preheat', args: { type: 'image', url: `${proxy.host}/team/gpu-only:v1`, scope: { labels: { zone: 'nowhere' } } } })
    const failed = await untilDone(api, (none.json as JobView).id)
    expect(failed.state).toBe('FAILURE')
    expect(failed.error?.code).toBe('SN_ERR_HOST_NOT_FOUND')
  })

  it('scope all_peers puts every blob on every daemon; pulls then cost the registry nothing and come from each daemon\'s own cache', async () => {
    const image: PushedImage = await pushImage(registry.url, 'team/app', 'v2', [9 * MiB, 4 * MiB, 1 * MiB])
    const blobs = [image.config, ...image.layers]
    const digests = blobs.map((b) => b.digest)
    // Harbor's provider: the open API, with Harbor's own name for the scope.
    const created = await post(`${sn.url}/oapi/v1/jobs`, {
      type: 'preheat', args: { type: 'image', url: `https://${proxy.host}/v2/team/app/manifests/v2`, headers: {}, scope: 'all_peers', parallelism: 2 }
    })
    expect(created.status, JSON.stringify(created.json)).toBe(200)
    const id = (created.json as JobView).id
    const seen = new Set<string>()
    await waitFor(async () => {
      const j = await getJson<JobView>(`${sn.url}/oapi/v1/jobs/${id}`)
      seen.add(j.state)
      return j.state === 'SUCCESS' || j.state === 'FAILURE'
    }, 120_000, 'the all_peers job')
    for (const s of seen) expect(['PENDING', 'SUCCESS']).toContain(s)
    const done = await getJson<JobView>(`${api}/jobs/${id}`)
    expect(done.state, JSON.stringify(done.error)).toBe('SUCCESS')
    expect(done.progress.nodes).toMatchObject({ total: 3, succeeded: 3, failed: 0 })
    const peers = done.nodes.filter((n) => n.node === 'peer')
    expect(peers.map((p) => p.peerId).sort()).toEqual(daemons.map((d) => d.peerId).sort())
    for (const p of peers) {
      expect(p.state).toBe('SUCCESS')
      expect(p.blobs.map((b) => b.digest).sort()).toEqual([...digests].sort())
      expect(p.blobs.every((b) => b.state === 'SUCCESS' && b.bytes > 0)).toBe(true)
    }
    const harbor = await getJson<JobView>(`${sn.url}/oapi/v1/jobs/${id}`)
    expect(harbor.result.job_states[0].results[0].success_tasks.length).toBe(digests.length * 4) // the seed and three daemons

    // Every daemon holds every blob, complete.
    for (const d of daemons) {
      const tasks = await tasksOf(d)
      for (const dg of digests) expect(tasks.find((t) => t.url === blobUrl('team/app', dg))?.complete, `${dg} on ${d.peerId}`).toBe(true)
    }
    const before = new Map(digests.map((dg) => [dg, proxy.bytesServed(dg)]))
    for (const d of daemons) {
      const stored = await metric(d.apiUrl, 'naiad_download_bytes_total')
      for (const b of blobs) {
        const res = await fetch(`${d.proxyUrl}/v2/team/app/blobs/${b.digest}?ns=${proxy.host}`)
        expect(res.status).toBe(200)
        expect(sha256(Buffer.from(await res.arrayBuffer()))).toBe(b.digest)
      }
      // Nothing new was stored: the pulls were served from the daemon's own cache.
      expect(await metric(d.apiUrl, 'naiad_download_bytes_total'), `bytes stored by ${d.peerId} during its pull`).toBe(stored)
    }
    for (const dg of digests) expect(proxy.bytesServed(dg), `registry body bytes for ${dg} during the pulls`).toBe(before.get(dg))
  })

  it('reports a daemon that cannot be reached as a failed node, with the reason, while the others succeed', async () => {
    // A daemon that announced itself and then died without leaving: the scheduler still lists it.
    const doomed = await startDaemon(join(dir, 'doomed'), sn.url, { env: { NAIAD_HOST_LABELS: '{"zone":"c"}' } })
    await waitFor(async () => (await getJson<Array<{ id: string }>>(`${api}/peers`)).some((p) => p.id === doomed.peerId), 20_000, 'the doomed daemon to announce')
    await doomed.process.kill('SIGKILL')
    const data = makeBlob(2 * MiB, 'to-all')
    origin.files.set('/to-all', { data })
    const created = await post(`${api}/jobs`, { type: 'preheat', args: { type: 'file', url: `${origin.url}/to-all`, scope: 'all_peers' } })
    const done = await untilDone(api, (created.json as JobView).id)
    expect(done.state).toBe('FAILURE')
    const dead = done.nodes.find((n) => n.peerId === doomed.peerId)!
    expect(dead.state).toBe('FAILURE')
    expect(dead.error?.code).toBe('PROTO_ERR_DIAL')
    expect(dead.blobs[0].error?.code).toBe('PROTO_ERR_DIAL')
    for (const d of daemons) expect(done.nodes.find((n) => n.peerId === d.peerId)?.state).toBe('SUCCESS')
    expect(done.error?.message).toContain('1 of 4 nodes failed')
    expect(done.error?.code).toBe('PROTO_ERR_DIAL')
    const harbor = await getJson<JobView>(`${sn.url}/oapi/v1/jobs/${done.id}`)
    expect(harbor.state).toBe('FAILURE')
    expect(harbor.result.job_states[0].results[0].failure_tasks).toEqual([expect.objectContaining({ url: `${origin.url}/to-all` })])
  })

  it('cancels a peer-scope job stuck on a daemon that never answers, and fails one that passes its deadline', async () => {
    // A cluster member that announces itself like a daemon but never answers a control command.
    slow = (await startMemberNode(join(dir, 'slow'), sn)).node
    let commands = 0
    let closed = 0
    await slow.handle(PROTOCOLS.control, (stream) => {
      commands++
      stream.addEventListener('close', () => { closed++ }, { once: true })
    })
    const info = await getJson<{ peerId: string; multiaddrs: string[] }>(`${api}/info`)
    const snAddrs = info.multiaddrs.map((a) => multiaddr(a.includes('/p2p/') ? a : `${a}/p2p/${info.peerId}`))
    const res = await call(slow, snAddrs, PROTOCOLS.scheduler, SchedulerRequest, SchedulerResponse, {
      announceHost: { id: slow.peerId.toString(), hostname: 'slow-node', ip: '', idc: '', location: '', multiaddrs: slow.getMultiaddrs().map(String), uploadSlots: 1, isSeed: false, labels: ['zone=slow'], dataPort: 0, dataTransport: '' }
    }, { timeoutMs: 10_000 })
    expect(res.error).toBeUndefined()

    origin.files.set('/to-slow', { data: makeBlob(MiB, 'to-slow') })
    const created = await post(`${api}/jobs`, { type: 'preheat', args: { type: 'file', url: `${origin.url}/to-slow`, scope: { labels: { zone: 'slow' } } } })
    const id = (created.json as JobView).id
    await waitFor(async () => (await getJson<JobView>(`${api}/jobs/${id}`)).nodes.find((n) => n.node === 'peer')?.state === 'RUNNING', 30_000, 'the slow node to be sent its blob')
    await waitFor(() => commands === 1, 10_000, 'the command to reach the slow node')
    const del = await fetch(`${api}/jobs/${id}`, { method: 'DELETE', headers: apiHeaders(api) })
    expect(del.status).toBe(200)
    const canceled = await getJson<JobView>(`${api}/jobs/${id}`)
    expect(canceled.state).toBe('CANCELED')
    const node = canceled.nodes.find((n) => n.node === 'peer')!
    expect(node.peerId).toBe(slow.peerId.toString())
    expect(node.blobs.map((b) => b.state)).toEqual(['SKIPPED'])
    expect((await getJson<JobView>(`${sn.url}/oapi/v1/jobs/${id}`)).state).toBe('FAILURE')
    // The supernode hung up on the node: its wait ended with the job.
    await waitFor(() => closed === 1, 10_000, 'the control stream to close')

    const late = await post(`${api}/jobs`, { type: 'preheat', args: { type: 'file', url: `${origin.url}/to-slow`, scope: { labels: { zone: 'slow' } }, deadline: '3s' } })
    const failed = await untilDone(api, (late.json as JobView).id, 30_000)
    expect(failed.state).toBe('FAILURE')
    expect(failed.error?.code).toBe('DFD_ERR_TIMEOUT')
    expect(commands).toBe(2)
  })

  it('resumes a peer-scope job that was running when the supernode stopped, and still reaches its daemons', async () => {
    const data = makeBlob(2 * MiB, 'resume-peers')
    origin.files.set('/resume-peers', { data })
    origin.faults.set('/resume-peers', { stallMs: 30_000 })
    const created = await post(`${api}/jobs`, { type: 'preheat', args: { type: 'file', url: `${origin.url}/resume-peers`, scope: { labels: { zone: 'b' } } } })
    const id = (created.json as JobView).id
    await waitFor(async () => (await getJson<JobView>(`${api}/jobs/${id}`)).state === 'RUNNING', 10_000, 'the job to run')
    await sn.process.stop()
    origin.faults.delete('/resume-peers')
    sn = await startSupernode(join(dir, 'sn'), { port: sn.port, args: ['--config', configFile] })
    const done = await untilDone(api, id)
    expect(done.state, JSON.stringify(done.error)).toBe('SUCCESS')
    expect(done.args).toMatchObject({ scope: 'labels', labels: { zone: 'b' } })
    expect(done.nodes.filter((n) => n.node === 'peer').map((n) => [n.peerId, n.state])).toEqual([[daemons[2].peerId, 'SUCCESS']])
    expect(sn.process.logs.some((l) => l.includes('resuming preheat job'))).toBe(true)
    const tasks = await tasksOf(daemons[2])
    expect(tasks.find((t) => t.url === `${origin.url}/resume-peers`)?.complete).toBe(true)
    for (const d of [daemons[0], daemons[1]]) expect((await tasksOf(d)).some((t) => t.url === `${origin.url}/resume-peers`)).toBe(false)
  })
})
