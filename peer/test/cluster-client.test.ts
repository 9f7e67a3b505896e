// The daemon's client of several supernodes: each task's calls go to its owner (rendezvous
// hashing over the live set), a task whose owner dies moves to the next owner with the pieces
// the daemon holds, a supernode whose view of the live set lags is waited for, and a
// supernode that comes back gets its finished tasks back and new ones at once. Stub
// supernodes, in process: the real fabric path is supernode/test/cluster.test.ts.

import pino from 'pino'
import { describe, expect, it } from 'vitest'
import {
  NaiadError, ownerOf,
  type GetParentsResponse, type Host, type RegisterTaskRequest, type ReportPiecesRequest, type TaskInfo
} from '@naiad/proto'

import { ClusterSchedulerClient, type LiveSupernode, type MemberClient } from '../src/scheduler/cluster-client.ts'

const TASK_INFO: TaskInfo = {
  id: '', url: '', state: 'running', contentLength: -1, pieceSize: 0, pieceCount: -1, pieces: [], sha256: new Uint8Array(0),
  error: undefined, backToSource: false, grant: new Uint8Array(0), sourcePeer: '', digestEpoch: 0, piecesFrom: 0
}

/** A supernode as the client sees it: what it was asked, whether it is up, whom it thinks owns a task. */
class StubSupernode implements MemberClient {
  available = true
  dead = false
  /** The supernode's own view of the live set (it refuses registrations of tasks it does not own by it). */
  view: string[] = []
  readonly tasks = new Set<string>()
  readonly calls: string[] = []
  readonly reports: Array<Partial<ReportPiecesRequest>> = []
  readonly id: string
  readonly url: string

  constructor(id: string, url = `http://${id}.test:8002`) {
    this.id = id
    this.url = url
  }

  get supernodeId(): string {
    return this.id
  }

  private check(what: string): void {
    this.calls.push(what)
    if (this.dead) {
      this.available = false
      throw new NaiadError('PROTO_ERR_DIAL', `${this.id} is gone`)
    }
  }

  async announceHost(_host: Host): Promise<void> {
    this.calls.push('announce')
    if (this.dead) {
      this.available = false
      throw new NaiadError('PROTO_ERR_DIAL', `${this.id} is gone`)
    }
    this.available = true
  }

  async registerTask(req: RegisterTaskRequest): Promise<TaskInfo> {
    this.check(`register ${req.taskId}`)
    if (!this.tasks.has(req.taskId) && ownerOf(req.taskId, this.view) !== this.id) throw new NaiadError('SN_ERR_NOT_OWNER', `not ${this.id}'s`)
    this.tasks.add(req.taskId)
    return { ...TASK_INFO, id: req.taskId }
  }

  async reportPieces(req: Partial<ReportPiecesRequest> & { taskId: string }): Promise<void> {
    this.check(`report ${req.taskId}`)
    if (!this.tasks.has(req.taskId)) throw new NaiadError('SN_ERR_TASK_NOT_FOUND', 'no such task')
    this.reports.push(req)
  }

  async getParents(taskId: string): Promise<GetParentsResponse> {
    this.check(`parents ${taskId}`)
    if (!this.tasks.has(taskId)) throw new NaiadError('SN_ERR_TASK_NOT_FOUND', 'no such task')
    return { task: undefined, parents: [], grant: new Uint8Array(0) }
  }

  async leaveTask(taskId: string): Promise<void> { this.check(`leave ${taskId}`) }
  async leaveHost(): Promise<void> { this.check('leave-host') }
}

const HOST: Host = { id: 'd', hostname: 'd', ip: '', idc: '', location: '', multiaddrs: [], uploadSlots: 1, isSeed: false, labels: [], dataPort: 1, dataTransport: 'tcp' }
const taskIds = Array.from({ length: 40 }, (_, i) => i.toString(16).padStart(64, '0'))
const req = (taskId: string): RegisterTaskRequest => ({ taskId, url: `http://origin.test/${taskId}`, headers: [], digest: '', range: '', filter: [] })

function cluster(n: number, urls?: string[]): { sns: StubSupernode[]; live: StubSupernode[]; client: ClusterSchedulerClient; setLive: (ids: StubSupernode[]) => void } {
  const sns = Array.from({ length: n }, (_, i) => new StubSupernode(`sn${i}`))
  const state = { live: [...sns] }
  const setLive = (list: StubSupernode[]): void => {
    state.live = list
    for (const s of sns) s.view = list.map((l) => l.id)
  }
  setLive(sns)
  const byUrl = new Map(sns.map((s) => [s.url, s]))
  const client = new ClusterSchedulerClient(undefined, { supernodeUrls: urls ?? [sns[0].url], timeoutMs: 1000, logger: pino({ level: 'silent' }) }, {
    connect: (url) => byUrl.get(url) ?? Object.assign(new StubSupernode(`unknown ${url}`), { dead: true, available: false }),
    fetchLive: async (url): Promise<LiveSupernode[]> => {
      const s = byUrl.get(url)
      if (s === undefined || s.dead) throw new Error(`${url} does not answer`)
      return state.live.map((l) => ({ id: l.id, apiUrl: l.url }))
    },
    lookup: async () => []
  })
  return { sns, get live() { return state.live }, client, setLive }
}

describe('cluster scheduler client', () => {
  it('announces to every live supernode and sends each task to its owner', async () => {
    const { sns, client } = cluster(3)
    await client.announceHost(HOST)
    for (const s of sns) expect(s.calls).toContain('announce')
    for (const t of taskIds) {
      await client.registerTask(req(t))
      await client.getParents(t, 8)
      const owner = ownerOf(t, sns.map((s) => s.id))
      expect(client.ownerOf(t)).toBe(owner)
      for (const s of sns) expect(s.calls.includes(`parents ${t}`)).toBe(s.id === owner)
    }
    // Several owners were used: the tasks spread over the cluster.
    expect(sns.filter((s) => s.tasks.size > 0).length).toBe(3)
    expect(client.isSupernode('sn1')).toBe(true)
    expect(client.isSupernode('d')).toBe(false)
  })

  it('moves a task to the next owner when its owner dies, with the pieces it holds, once that owner\'s view drops the dead one', async () => {
    const { sns, client, setLive } = cluster(3)
    await client.announceHost(HOST)
    const t = taskIds.find((id) => ownerOf(id, sns.map((s) => s.id)) === 'sn0')!
    await client.registerTask(req(t))
    await client.reportPieces({ taskId: t, results: [0, 1, 2].map((num) => ({ num, parentId: 'p', length: 100, costMs: 1, sha256: new Uint8Array(0), errorCode: '' })) })
    const next = ownerOf(t, ['sn1', 'sn2'])!
    const nextSn = sns.find((s) => s.id === next)!

    sns[0].dead = true
    // The survivors still count sn0 live for a moment: the move waits for them, then lands.
    setTimeout(() => setLive([sns[1], sns[2]]), 700)
    const started = Date.now()
    await client.getParents(t, 8, AbortSignal.timeout(10_000))
    expect(Date.now() - started).toBeLessThan(5_000)
    expect(client.ownerOf(t)).toBe(next)
    expect(nextSn.calls).toContain(`register ${t}`)
    const moved = nextSn.reports.at(-1)!
    expect(moved.results!.map((r) => r.num).sort()).toEqual([0, 1, 2])
    // Never a digest from a daemon: the new owner's seed publishes them.
    expect(moved.results!.every((r) => r.sha256.length === 0)).toBe(true)
    expect(nextSn.calls.at(-1)).toBe(`parents ${t}`)
  })

  it('moves finished tasks at the next announcement, and hands them back when their owner returns; running ones stay', async () => {
    const { sns, client, setLive } = cluster(2)
    await client.announceHost(HOST)
    const done = taskIds.find((id) => ownerOf(id, ['sn0', 'sn1']) === 'sn0')!
    const running = taskIds.filter((id) => ownerOf(id, ['sn0', 'sn1']) === 'sn0')[1]
    for (const t of [done, running]) await client.registerTask(req(t))
    await client.reportPieces({ taskId: done, results: [{ num: 0, parentId: '', length: 5, costMs: 1, sha256: new Uint8Array(0), errorCode: '' }], state: 'succeeded' })

    sns[0].dead = true
    setLive([sns[1]])
    await client.announceHost(HOST).catch(() => {})
    await waitFor(() => client.ownerOf(done) === 'sn1')
    expect(sns[1].reports.find((r) => r.taskId === done)?.state).toBe('succeeded')

    // The running download goes over on its next call.
    await client.getParents(running, 8)
    expect(client.ownerOf(running)).toBe('sn1')

    // sn0 comes back (restarted: it knows nothing).
    sns[0].dead = false
    sns[0].tasks.clear()
    setLive(sns)
    await client.announceHost(HOST)
    await waitFor(() => client.ownerOf(done) === 'sn0')
    expect(sns[0].reports.find((r) => r.taskId === done)?.state).toBe('succeeded')
    // The download in flight finishes where it runs; a new task goes to its owner at once.
    await client.getParents(running, 8)
    expect(client.ownerOf(running)).toBe('sn1')
    const fresh = taskIds.filter((id) => ownerOf(id, ['sn0', 'sn1']) === 'sn0')[2]
    await client.registerTask(req(fresh))
    expect(client.ownerOf(fresh)).toBe('sn0')
  })

  it('keeps a task, running or finished, with an owner that still answers while reads of the live set leave it out', async () => {
    // On a loaded machine a heartbeat lands late and a supernode's view drops a live member
    // for a moment: a task moved on such a read was seeded from the origin again by the other.
    const { sns, client, setLive } = cluster(3)
    await client.announceHost(HOST)
    const mine = taskIds.filter((id) => ownerOf(id, sns.map((s) => s.id)) === 'sn1')
    const [running, done] = mine
    for (const t of [running, done]) await client.registerTask(req(t))
    await client.reportPieces({ taskId: done, results: [{ num: 0, parentId: '', length: 5, costMs: 1, sha256: new Uint8Array(0), errorCode: '' }], state: 'succeeded' })
    // Two reads in a row without sn1 (the others' views drop it; it answers all along).
    for (let read = 0; read < 2; read++) {
      setLive([sns[0], sns[2]])
      await client.announceHost(HOST)
      await new Promise((r) => setTimeout(r, 20))
      await client.getParents(running, 8)
    }
    for (const t of [running, done]) expect(client.ownerOf(t)).toBe('sn1')
    for (const other of [sns[0], sns[2]]) expect(other.calls.filter((c) => c.startsWith('register') || c.startsWith('report'))).toEqual([])
    // Once it fails to answer, the running one moves at its next call, the finished one at the next announcement.
    sns[1].dead = true
    await client.getParents(running, 8)
    await client.announceHost(HOST)
    await waitFor(() => client.ownerOf(done) !== 'sn1')
    expect(client.ownerOf(running)).toBe(ownerOf(running, ['sn0', 'sn2']))
  })

  it('counts a supernode missing from one read of the live set still a candidate owner for new tasks', async () => {
    const { sns, client, setLive } = cluster(3)
    await client.announceHost(HOST)
    const t = taskIds.find((id) => ownerOf(id, sns.map((s) => s.id)) === 'sn1')!
    // One daemon's read, from a supernode whose view dropped sn1 for a moment; sn1's own view holds.
    setLive([sns[0], sns[2]])
    sns[1].view = sns.map((s) => s.id)
    await client.announceHost(HOST)
    await client.registerTask(req(t))
    expect(client.ownerOf(t)).toBe('sn1')
    // Left out of a second read in a row, it is gone for new tasks.
    await client.announceHost(HOST)
    const u = taskIds.filter((id) => ownerOf(id, sns.map((s) => s.id)) === 'sn1')[1]
    await client.registerTask(req(u))
    expect(client.ownerOf(u)).toBe(ownerOf(u, ['sn0', 'sn2']))
  })

  it('learns the live set through any configured supernode, a name standing for each of its addresses', async () => {
    // sn0 does not answer the live set yet (starting): sn1 does, for both.
    const sns = [new StubSupernode('sn0', 'http://10.0.0.1:8002'), new StubSupernode('sn1', 'http://10.0.0.2:8002')]
    const asked: string[] = []
    const client = new ClusterSchedulerClient(undefined, { supernodeUrls: ['http://supernodes.test:8002'], timeoutMs: 1000, logger: pino({ level: 'silent' }) }, {
      connect: (url) => sns.find((s) => s.url === url) ?? Object.assign(new StubSupernode(url), { dead: true }),
      fetchLive: async (url) => {
        asked.push(url)
        if (url !== 'http://10.0.0.2:8002') throw new Error('refused')
        return sns.map((s) => ({ id: s.id, apiUrl: s.url }))
      },
      lookup: async (host) => host === 'supernodes.test' ? ['10.0.0.1', '10.0.0.2'] : []
    })
    await client.announceHost(HOST)
    expect(asked).toContain('http://10.0.0.1:8002')
    expect(asked).toContain('http://10.0.0.2:8002')
    for (const s of sns) expect(s.calls).toContain('announce')
    expect(client.available).toBe(true)
  })

  it('sends a host\'s plugin calls to one supernode chosen by its host ID, so hosts spread over the cluster', async () => {
    const chosen = new Set<string>()
    for (let h = 0; h < 12; h++) {
      const { sns, client } = cluster(3)
      const asked: string[] = []
      for (const s of sns) Object.assign(s, { supernodeAddrs: async () => { asked.push(s.id); return [] } })
      const host = { ...HOST, id: `host-${h}` }
      await client.announceHost(host)
      await client.supernodeAddrs()
      await client.supernodeAddrs()
      expect(asked).toEqual([ownerOf(host.id, sns.map((s) => s.id)), ownerOf(host.id, sns.map((s) => s.id))])
      chosen.add(asked[0])
    }
    expect(chosen.size).toBeGreaterThan(1)
  })

  it('keeps a host\'s plugin calls with its owner while that one is marked down, and moves them once the live set drops it', async () => {
    const { sns, client, setLive } = cluster(3)
    const asked: string[] = []
    for (const s of sns) Object.assign(s, { supernodeAddrs: async () => { asked.push(s.id); return [] } })
    await client.announceHost(HOST)
    const owner = sns.find((s) => s.id === ownerOf(HOST.id, sns.map((x) => x.id)))!
    // A timeout on a loaded machine marked the owner down; it is still in the live set, and
    // still the one that judges this host.
    owner.available = false
    await client.supernodeAddrs()
    expect(asked).toEqual([owner.id])
    // Gone from the live set (two reads in a row): the host's calls go to the owner among the rest.
    const rest = sns.filter((s) => s !== owner)
    setLive(rest)
    owner.dead = true
    await client.announceHost(HOST)
    await client.announceHost(HOST)
    asked.length = 0
    await client.supernodeAddrs()
    expect(asked).toEqual([ownerOf(HOST.id, rest.map((s) => s.id))])
  })

  it('forgets the client of a supernode that left the live set once no task routes to it', async () => {
    const { sns, client, setLive } = cluster(3)
    const closed: string[] = []
    for (const s of sns) Object.assign(s, { close: async () => { closed.push(s.id) } })
    await client.announceHost(HOST)
    const t = taskIds.find((id) => ownerOf(id, sns.map((s) => s.id)) === 'sn2')!
    await client.registerTask(req(t))
    await client.reportPieces({ taskId: t, results: [] })
    // sn2 leaves while a task routes to it: its client stays until the task has moved.
    setLive([sns[0], sns[1]])
    sns[2].dead = true
    await client.announceHost(HOST)
    await waitFor(() => client.ownerOf(t) !== 'sn2')
    await client.announceHost(HOST)
    expect(closed).toEqual(['sn2'])
    // sn0 is configured: it stays even when it is out of the live set.
    setLive([sns[1]])
    await client.announceHost(HOST)
    expect(closed).toEqual(['sn2'])
  })

  it('is unavailable, and says so at once, when no supernode can be reached', async () => {
    const { sns, client } = cluster(2)
    await client.announceHost(HOST)
    for (const s of sns) s.dead = true
    await expect(client.announceHost(HOST)).rejects.toMatchObject({ code: 'PROTO_ERR_DIAL' })
    expect(client.available).toBe(false)
    await expect(client.registerTask(req(taskIds[0]))).rejects.toMatchObject({ code: 'PROTO_ERR_DIAL' })
  })
})

async function waitFor(check: () => boolean, timeoutMs = 5_000): Promise<void> {
  const until = Date.now() + timeoutMs
  while (!check()) {
    if (Date.now() > until) throw new Error('timed out')
    await new Promise((r) => setTimeout(r, 20))
  }
}
