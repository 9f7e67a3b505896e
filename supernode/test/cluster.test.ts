// Several supernodes, one cluster: each task is scheduled by its owner (rendezvous hashing
// over the live supernodes), daemons given several supernodes (or one, learning the rest)
// send each task there, and when the owner crashes mid-download its tasks move to the next
// owner and every download completes with the right bytes; when it comes back, new tasks go
// to it at once and finished ones move back. A preheat job warms the seed of each task's
// owner, whichever supernode runs the job.
//
// The supernodes run in this process and share one in-memory membership store (until the
// shared database lands, no store is shared across processes); the daemons are real
// processes, so everything between daemon and supernode crosses a process boundary.

import { copyFile, mkdir, mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import pino from 'pino'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { multiaddr } from '@multiformats/multiaddr'
import { callSeedFetch, ClusterSigner, ClusterVerifier, createFabricNode, loadOptions, loadPeerId, MemberGuard, ownerOf, taskIdOf } from '@naiad/proto'
import {
  createToken, downloadVia, makeBlob, sha256Hex, startDaemon, TestOrigin, waitFor,
  type DaemonHandle, type DoneEvent, type ProgressEvent
} from '@naiad/testkit'

import { loadClusterKey } from '../src/admission/cluster-key.ts'
import { MemoryMembership, type MembershipStore, type SupernodeMember } from '../src/cluster/membership.ts'
import { SUPERNODE_COMMAND } from '../src/config/options.ts'
import { supernodeOptionsFromConfig } from '../src/config/from-config.ts'
import { preheatPlugin } from '../src/plugins/preheat/index.ts'
import { createSupernode, type Supernode } from '../src/supernode.ts'

const MiB = 1024 * 1024

/** The shared store, where a crashed supernode neither beats nor leaves: the others drop it after the TTL. */
class CrashableMembership implements MembershipStore {
  readonly crashed = new Set<string>()
  private readonly inner = new MemoryMembership()
  async heartbeat(self: Omit<SupernodeMember, 'seenAt'>): Promise<void> { if (!this.crashed.has(self.id)) await this.inner.heartbeat(self) }
  live(ttlMs: number): Promise<SupernodeMember[]> { return this.inner.live(ttlMs) }
  async leave(id: string): Promise<void> { if (!this.crashed.has(id)) await this.inner.leave(id) }
}

interface Tasks { id: string; state: string; peers: number }

describe('several supernodes, one cluster', () => {
  let dir: string
  let origin: TestOrigin
  const membership = new CrashableMembership()
  const sns: Supernode[] = []
  const daemons: DaemonHandle[] = []
  const blobs = { '/a': makeBlob(8 * MiB, 'a'), '/b': makeBlob(16 * MiB, 'b'), '/p': makeBlob(4 * MiB, 'p') }

  const startSn = async (i: number): Promise<Supernode> => {
    const dataDir = join(dir, `sn${i}`)
    const v = loadOptions(SUPERNODE_COMMAND, ['--data-dir', dataDir, '--listen', '127.0.0.1:0', '--p2p-listen', '/ip4/127.0.0.1/tcp/0'], {}).values
    const options = supernodeOptionsFromConfig(v, pino({ level: 'silent' }))
    const sn = await createSupernode({
      ...options, sourceAllow: ['127.0.0.1'], publicRead: true, plugins: [preheatPlugin], pluginSettings: { preheat: { checkInterval: '200ms' } },
      cluster: { membership, heartbeatMs: 300, ttlMs: 1500 }
    })
    await sn.start()
    return sn
  }
  const ids = (): string[] => sns.map((s) => s.node.peerId.toString())
  const tasksOf = async (sn: Supernode): Promise<Tasks[]> => (await fetch(`${sn.url}/api/v1/tasks`)).json() as Promise<Tasks[]>

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'naiad-cluster-'))
    origin = await new TestOrigin().start()
    for (const [path, data] of Object.entries(blobs)) origin.files.set(path, { data })
    // One cluster key for all: the operator copies it to every supernode's data dir.
    await loadClusterKey(join(dir, 'sn0'))
    for (const i of [1, 2]) {
      await mkdir(join(dir, `sn${i}`), { recursive: true, mode: 0o700 })
      await copyFile(join(dir, 'sn0', 'cluster.key'), join(dir, `sn${i}`, 'cluster.key'))
    }
    for (const i of [0, 1, 2]) sns.push(await startSn(i))
    const joinToken = await createToken(join(dir, 'sn0'), 'join')
    const env = { NAIAD_SCHEDULER_KEEPALIVE: '1s' }
    // d0 is given every supernode; d1 and d2 one each, and learn the others from it.
    daemons.push(await startDaemon(join(dir, 'd0'), sns[0].url, { joinToken, env, args: ['--supernode', sns[1].url, '--supernode', sns[2].url] }))
    daemons.push(await startDaemon(join(dir, 'd1'), sns[1].url, { joinToken, env }))
    daemons.push(await startDaemon(join(dir, 'd2'), sns[2].url, { joinToken, env }))
  }, 60_000)

  afterAll(async () => {
    for (const d of daemons) await d.process.stop()
    for (const sn of sns) await sn.stop().catch(() => {})
    await origin?.stop()
    if (dir !== undefined) await rm(dir, { recursive: true, force: true })
  })

  it('lists the live supernodes to daemons, and schedules each task at its owner only', async () => {
    const live = await (await fetch(`${sns[1].url}/api/v1/supernodes`)).json() as { members: Array<{ id: string; apiUrl: string }> }
    expect(live.members.map((m) => m.id).sort()).toEqual([...ids()].sort())
    expect(live.members.map((m) => m.apiUrl).sort()).toEqual(sns.map((s) => s.url).sort())

    const url = `${origin.url}/a`
    const first = await downloadVia(daemons[1].apiUrl, { url }) as DoneEvent
    expect(first.event, JSON.stringify(first)).toBe('done')
    expect(first.taskId).toBe(taskIdOf({ url }))
    expect(first.sha256).toBe(sha256Hex(blobs['/a']))
    expect(first.fromOrigin).toBe(0) // from the owner's seed
    const second = await downloadVia(daemons[2].apiUrl, { url }) as DoneEvent
    expect(second.sha256).toBe(sha256Hex(blobs['/a']))
    expect(second.fromOrigin).toBe(0)
    expect(origin.bytesServed('/a')).toBe(blobs['/a'].length)

    const owner = ownerOf(first.taskId, ids())
    for (const sn of sns) {
      const known = (await tasksOf(sn)).find((t) => t.id === first.taskId)
      if (sn.node.peerId.toString() === owner) expect(known?.peers).toBeGreaterThanOrEqual(3) // its seed and both daemons
      else expect(known).toBeUndefined()
    }
  })

  it('preheats into the seed of the task\'s owner, not of the supernode that runs the job', async () => {
    const url = `${origin.url}/p`
    const taskId = taskIdOf({ url })
    const owner = sns.find((s) => s.node.peerId.toString() === ownerOf(taskId, ids()))!
    const creator = sns.find((s) => s !== owner)!
    const auth = { authorization: `Bearer ${await createToken(join(dir, 'sn0'), 'api')}`, 'content-type': 'application/json' }
    const created = await fetch(`${creator.url}/api/v1/jobs`, { method: 'POST', headers: auth, body: JSON.stringify({ type: 'preheat', args: { type: 'file', urls: [url], scope: 'seed' } }) })
    expect(created.status, await created.clone().text()).toBe(201)
    const { id } = await created.json() as { id: number }
    let job: { state: string; nodes: Array<{ blobs: Array<{ task_id: string; error: unknown }> }> } | undefined
    await waitFor(async () => {
      job = await (await fetch(`${creator.url}/api/v1/jobs/${id}`, { headers: auth })).json() as typeof job
      return ['SUCCESS', 'FAILURE', 'CANCELED'].includes(job!.state)
    }, 30_000, 'the preheat job to finish')
    expect(job!.state, JSON.stringify(job)).toBe('SUCCESS')
    expect(job!.nodes[0].blobs[0].task_id).toBe(taskId)
    // The owner's seed holds it; the creator never took the task on.
    expect((await tasksOf(owner)).find((t) => t.id === taskId)?.state).toBe('succeeded')
    expect((await tasksOf(creator)).find((t) => t.id === taskId)).toBeUndefined()
    expect(origin.bytesServed('/p')).toBe(blobs['/p'].length)

    const pulled = await downloadVia(daemons[1].apiUrl, { url }) as DoneEvent
    expect(pulled.event, JSON.stringify(pulled)).toBe('done')
    expect(pulled.sha256).toBe(sha256Hex(blobs['/p']))
    expect(pulled.fromOrigin).toBe(0)
    // Served by the origin exactly once, to the owner's seed at preheat.
    expect(origin.bytesServed('/p')).toBe(blobs['/p'].length)
  })

  it('serves seed fetches to the supernodes of the cluster only, not to its daemons', async () => {
    // A member of the cluster with the role node (what every daemon holds).
    const signer = ClusterSigner.fromPem(await readFile(join(dir, 'sn0', 'cluster.key')))
    const nodeDir = join(dir, 'member-node')
    const peerId = await loadPeerId(nodeDir)
    const verifier = new ClusterVerifier(signer.publicKey)
    const node = await createFabricNode({
      dataDir: nodeDir, listen: ['/ip4/127.0.0.1/tcp/0'],
      guard: new MemberGuard({ verifier: () => verifier, credential: () => signer.membershipFor(peerId, 'node', 60_000), revoked: () => false })
    })
    try {
      const target = sns[0].node.getMultiaddrs().map((a) => multiaddr(a.toString()))
      await expect(callSeedFetch(node, target, { url: `${origin.url}/a` }, { timeoutMs: 10_000 })).rejects.toMatchObject({ code: 'PROTO_ERR_FORBIDDEN' })
    } finally {
      await node.stop()
    }
  })

  it('moves a task to the next owner when its owner crashes mid-download, and every download completes', async () => {
    const url = `${origin.url}/b`
    const taskId = taskIdOf({ url })
    const ownerIndex = ids().indexOf(ownerOf(taskId, ids())!)
    const ownerId = ids()[ownerIndex]
    // Slow enough that the crash lands mid-download.
    origin.faults.set('/b', { bytesPerSec: 4 * MiB })
    let progressed = false
    const onProgress = (e: ProgressEvent): void => { if (e.completedBytes >= 4 * MiB) progressed = true }
    const downloads = daemons.map((d) => downloadVia(d.apiUrl, { url }, onProgress))
    await waitFor(() => progressed, 30_000, 'a first piece to arrive')

    membership.crashed.add(ownerId)
    await sns[ownerIndex].stop()
    const crashedAt = Date.now()
    origin.faults.delete('/b')

    const results = await Promise.all(downloads) as DoneEvent[]
    for (const r of results) {
      expect(r.event, JSON.stringify(r)).toBe('done')
      expect(r.sha256).toBe(sha256Hex(blobs['/b']))
    }
    const served = origin.bytesServed('/b') / blobs['/b'].length
    if (served > 2) for (const d of daemons) console.log(d.process.logs.filter((l) => !l.includes('"level":20')).slice(-30).join('\n'))
    // The old owner's seed fetched the blob (in part), the new owner's seed fetched it again to
    // publish trusted digests: at most twice, never once per daemon.
    expect(served).toBeLessThanOrEqual(2)
    console.log(`cluster failover: origin served ${served.toFixed(2)}x of /b; downloads done ${((Date.now() - crashedAt) / 1000).toFixed(1)} s after the crash`)

    const survivors = sns.filter((_, i) => i !== ownerIndex)
    const next = ownerOf(taskId, survivors.map((s) => s.node.peerId.toString()))!
    const nextSn = survivors.find((s) => s.node.peerId.toString() === next)!
    const moved = (await tasksOf(nextSn)).find((t) => t.id === taskId)
    expect(moved?.peers).toBeGreaterThanOrEqual(2)

    // It comes back (same identity, a new address: daemons learn it from the live set).
    membership.crashed.delete(ownerId)
    const back = await startSn(ownerIndex)
    sns[ownerIndex] = back
    // A task it owns is registered with it at once…
    const path = Array.from({ length: 200 }, (_, i) => `/c${i}`).find((p) => ownerOf(taskIdOf({ url: `${origin.url}${p}` }), ids()) === ownerId)!
    origin.files.set(path, { data: blobs['/a'] })
    await waitFor(async () => {
      const live = await (await fetch(`${back.url}/api/v1/supernodes`)).json() as { members: unknown[] }
      return live.members.length === 3
    }, 10_000, 'the returned supernode to be live')
    await new Promise((r) => setTimeout(r, 2_500)) // the daemons' next keep-alive reads the live set
    const fresh = await downloadVia(daemons[0].apiUrl, { url: `${origin.url}${path}` }) as DoneEvent
    expect(fresh.event, JSON.stringify(fresh)).toBe('done')
    expect((await tasksOf(back)).some((t) => t.id === fresh.taskId)).toBe(true)
    // …and the finished /b goes back to it with the daemons that hold it.
    await waitFor(async () => ((await tasksOf(back)).find((t) => t.id === taskId)?.peers ?? 0) >= 3, 15_000, 'the finished task to move back')
  }, 120_000)
})
