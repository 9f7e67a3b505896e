// The scheduler's state in SQLite: what a scheduler learned survives into a new one after
// a restart, and downloads that were in flight start over cleanly.

import { createHash } from 'node:crypto'
import { mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { Host, type PieceResult, type ReportPiecesRequest } from '@naiad/proto'

import { Scheduler, type TaskState } from '../src/scheduler/scheduler.ts'
import { StateStore } from '../src/state/store.ts'

const TTL = 30_000
const SEED = 'seed'
const PIECE = 4 * 1024 * 1024

const taskId = (name: string): string => createHash('sha256').update(name).digest('hex')
const digest = (num: number): Buffer => createHash('sha256').update(`piece ${num}`).digest()
const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex')

function hostInfo(id: string, extra: Partial<Host> = {}): Host {
  return { id, hostname: `${id}.example`, ip: '10.0.0.1', idc: 'dc1', location: 'eu|fr', multiaddrs: [`/dns4/${id}/tcp/65002`, `/ip4/10.0.0.1/tcp/65002`], uploadSlots: 6, isSeed: false, labels: ['zone=a'], dataPort: 0, dataTransport: '', ...extra }
}
const ok = (num: number, parentId = '', sha256: Uint8Array = new Uint8Array(0)): PieceResult =>
  ({ num, parentId, length: PIECE, costMs: 40, sha256, errorCode: '' })
function report(id: string, results: PieceResult[], extra: Partial<ReportPiecesRequest> = {}): ReportPiecesRequest {
  return { taskId: id, results, contentLength: -1, pieceSize: 0, pieceCount: -1, sha256: new Uint8Array(0), state: '', error: undefined, ...extra }
}

describe('StateStore', () => {
  let dir: string
  let store: StateStore | undefined
  let triggered: string[]

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'naiad-state-'))
    triggered = []
  })
  afterEach(async () => {
    store?.close()
    store = undefined
    await rm(dir, { recursive: true, force: true })
  })

  /** A scheduler over a store in `dir`, loaded with whatever the store holds. */
  function start(flushMs = 60_000, rowsPerFlush?: number): Scheduler {
    store = new StateStore(dir, flushMs, rowsPerFlush)
    const s = new Scheduler({ hostTtlMs: TTL, seedHostId: SEED, triggerSeed: (t) => triggered.push(t.id) }, store)
    store.load(s)
    return s
  }

  function restart(): Scheduler {
    store?.close()
    triggered = []
    return start()
  }

  function register(s: Scheduler, host: string, id: string, extra: { url?: string; digest?: string; range?: string; filter?: string[]; headers?: Array<{ name: string; value: string }> } = {}) {
    if (!s.hosts.has(host)) s.announceHost(host, hostInfo(host))
    return s.registerTask(host, { taskId: id, url: extra.url ?? `http://origin/${id.slice(0, 8)}`, headers: extra.headers ?? [], digest: extra.digest ?? '', range: extra.range ?? '', filter: extra.filter ?? [] })
  }

  it('a timed flush that fails is reported, not thrown, and its rows are written by a later turn', async () => {
    const s = start(20)
    const errors: unknown[] = []
    store!.onFlushError = (err) => errors.push(err)
    // A temporary trigger makes the host's INSERT fail the way a full disk would.
    store!.database.exec("CREATE TEMP TRIGGER refuse BEFORE INSERT ON hosts BEGIN SELECT RAISE(ABORT, 'disk is full'); END")
    s.announceHost('h1', hostInfo('h1'))
    const hosts = (): number => (store!.database.prepare("SELECT count(*) AS n FROM hosts WHERE id = 'h1'").get() as { n: number }).n
    for (let i = 0; i < 200 && errors.length === 0; i++) await new Promise((r) => setTimeout(r, 10))
    expect(String(errors[0])).toContain('disk is full')
    expect(hosts()).toBe(0)
    store!.database.exec('DROP TRIGGER refuse')
    for (let i = 0; i < 300 && hosts() === 0; i++) await new Promise((r) => setTimeout(r, 10))
    expect(hosts()).toBe(1)
  })

  const DONE = taskId('done')
  const RUNNING = taskId('running')
  const FAILED = taskId('failed')

  /** Three tasks in three states, four hosts. */
  function populate(s: Scheduler): void {
    s.announceHost(SEED, hostInfo(SEED))
    s.announceHost('a', hostInfo('a', { idc: 'dc2', location: 'us|ca', uploadSlots: 9 }))

    // done: fetched by the seed, then by a (from the seed) and b (from a, one piece corrupt from c).
    register(s, 'a', DONE, {
      url: 'https://cdn.example/blob?sig=1', digest: `sha256:${'ab'.repeat(32)}`, range: '0-12582911', filter: ['sig'],
      headers: [{ name: 'Authorization', value: 'Bearer x' }]
    })
    register(s, SEED, DONE)
    s.reportPieces(SEED, report(DONE, [0, 1, 2].map((n) => ok(n, '', digest(n))), {
      contentLength: 3 * PIECE, pieceSize: PIECE, pieceCount: 3, state: 'succeeded', sha256: digest(100)
    }))
    s.reportPieces('a', report(DONE, [ok(0, SEED), ok(1, SEED), ok(2, SEED)], { state: 'succeeded' }))
    register(s, 'c', DONE)
    register(s, 'b', DONE)
    s.reportPieces('b', report(DONE, [ok(0, 'a'), { ...ok(1, 'c'), errorCode: 'DFD_ERR_PIECE_DIGEST' }]))

    // running: the seed has published one of two pieces, a holds it too.
    register(s, 'a', RUNNING)
    register(s, SEED, RUNNING)
    s.reportPieces(SEED, report(RUNNING, [ok(0, '', digest(10))], { contentLength: 2 * PIECE, pieceSize: PIECE, pieceCount: 2 }))
    s.reportPieces('a', report(RUNNING, [ok(0, SEED)]))

    // failed: the seed gave up.
    register(s, 'b', FAILED)
    register(s, SEED, FAILED)
    s.reportPieces(SEED, report(FAILED, [], { state: 'failed', error: { code: 'DFD_ERR_ORIGIN_STATUS', message: 'origin answered 404' } }))

    s.leaveHost('c')
  }

  it('brings back tasks with their request (but never its headers), metadata and piece digests', async () => {
    const before = start()
    populate(before)
    const after = restart()
    // Request headers carry registry credentials: they stay in memory, never in the database (mode 0600).
    const files = (await readdir(dir)).filter((f) => f.startsWith('supernode.db'))
    expect(files.length).toBeGreaterThan(0)
    for (const f of files) {
      expect((await readFile(join(dir, f))).includes('Bearer x'), f).toBe(false)
      expect((await stat(join(dir, f))).mode & 0o077, f).toBe(0)
    }

    expect([...after.tasks.keys()].sort()).toEqual([DONE, FAILED, RUNNING].sort())
    const done = after.tasks.get(DONE)!
    const orig = before.tasks.get(DONE)!
    expect(done).toMatchObject({
      url: 'https://cdn.example/blob?sig=1', digest: `sha256:${'ab'.repeat(32)}`, range: '0-12582911', filter: ['sig'],
      headers: [], state: 'succeeded', contentLength: 3 * PIECE, pieceSize: PIECE,
      pieceCount: 3, backSourcePeer: SEED, error: undefined, createdAt: orig.createdAt, updatedAt: orig.updatedAt
    })
    expect(hex(done.sha256)).toBe(hex(digest(100)))
    expect([...done.pieces].map(([n, p]) => [n, p.length, hex(p.sha256)])).toEqual([0, 1, 2].map((n) => [n, PIECE, hex(digest(n))]))

    const failed = after.tasks.get(FAILED)!
    expect(failed.state).toBe('failed')
    expect(failed.error).toEqual({ code: 'DFD_ERR_ORIGIN_STATUS', message: 'origin answered 404' })

    // What a daemon is told about a reloaded task is what it was told before.
    const info = after.taskInfo(done)
    expect(info.pieces.map((p) => [p.num, p.length, hex(p.sha256)])).toEqual(before.taskInfo(orig).pieces.map((p) => [p.num, p.length, hex(p.sha256)]))
  })

  it('brings back hosts with their info and record', () => {
    const before = start()
    populate(before)
    const after = restart()

    expect([...after.hosts.keys()].sort()).toEqual(['a', 'b', 'c', SEED])
    for (const id of ['a', 'b', 'c', SEED]) {
      const was = before.hosts.get(id)!
      const is = after.hosts.get(id)!
      expect(is.info, id).toEqual(was.info)
      expect(is, id).toMatchObject({
        lastSeen: was.lastSeen, bandwidth: was.bandwidth, goodPieces: was.goodPieces, badPieces: was.badPieces,
        failedPieces: was.failedPieces, gone: was.gone
      })
    }
    expect(after.hosts.get(SEED)!.info.isSeed).toBe(true)
    expect(after.hosts.get('a')!.info).toMatchObject({ idc: 'dc2', location: 'us|ca', uploadSlots: 9 })
    expect(after.hosts.get('a')!.goodPieces).toBe(1)
    expect(after.hosts.get('a')!.bandwidth).toBeGreaterThan(0)
    expect(after.hosts.get('c')!.badPieces).toBe(1)
    expect(after.hosts.get('c')!.gone).toBe(true)
  })

  it('brings back peers with their bitmaps and blocked parents, and forgets peers that left', () => {
    const before = start()
    populate(before)
    const after = restart()

    const done = after.tasks.get(DONE)!
    expect([...done.peers.keys()].sort()).toEqual(['a', 'b', SEED])
    expect([...done.peers.get(SEED)!.bitmap.pieces()]).toEqual([0, 1, 2])
    expect([...done.peers.get('a')!.bitmap.pieces()]).toEqual([0, 1, 2])
    expect([...done.peers.get('b')!.bitmap.pieces()]).toEqual([0])
    expect([...done.peers.get('b')!.blocked]).toEqual(['c'])
    expect(done.peers.get('a')!.state).toBe('succeeded')
    expect(done.peers.get('a')!.updatedAt).toBe(before.tasks.get(DONE)!.peers.get('a')!.updatedAt)
    expect([...after.tasks.get(RUNNING)!.peers.get('a')!.bitmap.pieces()]).toEqual([0])
  })

  it('brings running tasks back as pending with no back-to-source peer, and running peers as failed', () => {
    const before = start()
    populate(before)
    expect(before.tasks.get(RUNNING)!.state).toBe('running')
    const after = restart()

    const running = after.tasks.get(RUNNING)!
    expect(running.state).toBe('pending')
    expect(running.backSourcePeer).toBe('')
    // What the seed published stays: a new fetch is checked against it.
    expect([...running.pieces.keys()]).toEqual([0])
    expect(running.peers.get(SEED)!.state).toBe('failed')
    expect(running.peers.get('a')!.state).toBe('failed')
    expect(running.peers.get('a')!.parents.size).toBe(0)
    // A peer still in the middle of DONE starts over too; finished ones stay finished.
    expect(after.tasks.get(DONE)!.peers.get('b')!.state).toBe('failed')
    expect(after.tasks.get(DONE)!.peers.get(SEED)!.state).toBe('succeeded')

    // The next registration starts the seed again; a finished task does not.
    after.announceHost('a', hostInfo('a'))
    const info = after.registerTask('a', { taskId: RUNNING, url: running.url, headers: [], digest: '', range: '', filter: [] })
    expect(triggered).toEqual([RUNNING])
    expect(info.state).toBe('running')
    expect(running.backSourcePeer).toBe(SEED)
    after.registerTask('a', { taskId: DONE, url: 'https://cdn.example/blob?sig=1', headers: [], digest: '', range: '', filter: [] })
    expect(triggered).toEqual([RUNNING])
  })

  it('a reloaded scheduler offers the parents it knew, once they are seen again', () => {
    const before = start()
    populate(before)
    const after = restart()
    after.announceHost('a', hostInfo('a'))
    after.announceHost('b', hostInfo('b'))
    const parents = after.getParents('b', DONE, 8).parents.map((p) => p.id).sort()
    expect(parents).toEqual(['a', SEED])
  })

  it('writes changes behind a short delay without being closed', async () => {
    const s = start(20)
    register(s, 'a', RUNNING)
    s.reportPieces(SEED, report(RUNNING, [ok(0, '', digest(1))], { contentLength: PIECE, pieceSize: PIECE, pieceCount: 1 }))

    const deadline = Date.now() + 5000
    let seen: TaskState | undefined
    while (seen === undefined && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 25))
      // A second store on the same database reads what the first has committed.
      const reader = new StateStore(dir)
      const other = new Scheduler({ hostTtlMs: TTL }, reader)
      reader.load(other)
      reader.close()
      seen = other.tasks.get(RUNNING)
      if (seen !== undefined) {
        expect(seen.pieces.size).toBe(1)
        expect(other.hosts.has('a')).toBe(true)
      }
    }
    expect(seen).toBeDefined()
  })

  it('keeps the last of several changes to one row, and a deletion after an update', () => {
    const s = start()
    register(s, 'a', RUNNING)
    register(s, 'b', RUNNING)
    s.reportPieces('b', report(RUNNING, [ok(0, SEED)]))
    s.reportPieces('b', report(RUNNING, [ok(1, SEED)], { state: 'succeeded' }))
    s.leaveTask('a', RUNNING)
    const after = restart()
    const peers = after.tasks.get(RUNNING)!.peers
    expect(peers.has('a')).toBe(false)
    expect(peers.get('b')!.state).toBe('succeeded')
    expect([...peers.get('b')!.bitmap.pieces()]).toEqual([0, 1])
  })

  it('writes a backlog a slice of rows per turn, and all of it by the last slice', () => {
    const before = start(60_000, 3)
    populate(before)
    const marked = store!.pending
    expect(marked).toBeGreaterThan(9)
    store!.flush()
    expect(store!.pending).toBe(marked - 3)
    let turns = 1
    while (store!.pending > 0 && turns < 100) {
      store!.flush()
      turns++
    }
    expect(turns).toBe(Math.ceil(marked / 3))
    // Written by the slices alone (close has nothing left): the state comes back whole.
    const after = restart()
    expect([...after.tasks.keys()].sort()).toEqual([DONE, FAILED, RUNNING].sort())
    expect([...after.tasks.get(DONE)!.pieces.keys()]).toEqual([0, 1, 2])
    expect([...after.tasks.get(DONE)!.peers.keys()].sort()).toEqual(['a', 'b', SEED])
    for (const id of ['a', 'b', 'c', SEED]) {
      const was = before.hosts.get(id)!
      expect(after.hosts.get(id)!.info, id).toEqual(was.info)
      expect(after.hosts.get(id), id).toMatchObject({ goodPieces: was.goodPieces, badPieces: was.badPieces, bandwidth: was.bandwidth, gone: was.gone })
    }
  })

  it('writes every kind of row in its turn while peers are marked faster than a slice drains them', () => {
    const s = start(60_000, 4)
    const children = ['b', 'c', 'd', 'e', 'f', 'g']
    for (const id of ['a', ...children]) register(s, id, RUNNING)
    store!.flush(true)
    const goodOfA = (): number => store!.database.prepare<[string], { good_pieces: number }>('SELECT good_pieces FROM hosts WHERE id = ?').get('a')!.good_pieces
    for (let turn = 0; turn < 10; turn++) {
      for (const c of children) s.reportPieces(c, report(RUNNING, [ok(turn, 'a')]))
      store!.flush()
    }
    // Six peers and the task marked every turn, four rows a turn: a fixed order (tasks,
    // pieces, peers, hosts, counters) never reached a's counters.
    expect(goodOfA()).toBeGreaterThan(0)
    expect(store!.pending).toBeGreaterThan(0)
  })

  it("writes a parent's counters alone, not its info, and they survive a restart", () => {
    const s = start()
    register(s, 'a', RUNNING)
    register(s, 'b', RUNNING)
    store!.flush()
    // Another info in the row than in memory: a narrow UPDATE leaves it, a rewrite of the host would not.
    store!.database.prepare('UPDATE hosts SET info = ? WHERE id = ?').run(Buffer.from(Host.encode(hostInfo('a', { idc: 'dc9' }))), 'a')
    s.reportPieces('b', report(RUNNING, [ok(0, 'a'), { ...ok(1, 'a'), errorCode: 'DFD_ERR_PIECE_DIGEST' }]))
    store!.flush()
    expect(store!.pending).toBe(0)
    const after = restart()
    const a = after.hosts.get('a')!
    expect(a.info.idc).toBe('dc9')
    expect(a).toMatchObject({ goodPieces: 1, badPieces: 1, bandwidth: s.hosts.get('a')!.bandwidth })
    expect(a.bandwidth).toBeGreaterThan(0)
    // Announcing again writes the host whole.
    after.announceHost('a', hostInfo('a'))
    const again = restart()
    expect(again.hosts.get('a')!.info.idc).toBe('dc1')
    expect(again.hosts.get('a')!.goodPieces).toBe(1)
  })

  it('starts empty on a fresh directory, and survives an empty flush', () => {
    const s = start()
    expect(s.tasks.size).toBe(0)
    expect(s.hosts.size).toBe(0)
    store!.flush()
    const again = restart()
    expect(again.tasks.size).toBe(0)
  })
})
