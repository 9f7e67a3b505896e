// The scheduler's incremental swarm index (holder counts, candidate sets, children, running
// peers) against a brute-force reference: the getParents of before the index, which walked
// every peer's bitmap per call, kept here as the specification. Random swarms are built
// through the scheduler's own calls (registrations, reports with parents and failures,
// leaves, hosts going silent), then both answer the same questions.

import { createHash } from 'node:crypto'

import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { Bitmap, type Host, type PieceResult, type ReportPiecesRequest } from '@naiad/proto'
import { prng } from '@naiad/testkit'

import { CANDIDATE_POOL, Scheduler, type PeerState, type SchedulerPersistence, type TaskState } from '../src/scheduler/scheduler.ts'
import { scoreCandidate, type Candidate } from '../src/scheduler/scoring.ts'
import { EDGE_WINDOW_MS, HostRows, Swarm } from '../src/scheduler/swarm.ts'

const TTL = 30_000
const SEED = 'seed'
const PIECE = 4 * 1024 * 1024
const T = createHash('sha256').update('blob').digest('hex')
const URL = 'http://origin/blob'

const none: SchedulerPersistence = { markTask() {}, markPieces() {}, markPeer() {}, deletePeer() {}, markHost() {} }


function hostInfo(id: string, extra: Partial<Host> = {}): Host {
  return { id, hostname: id, ip: '10.0.0.1', idc: '', location: '', multiaddrs: [`/dns4/${id}/tcp/65002`], uploadSlots: 4, isSeed: false, labels: [], dataPort: 0, dataTransport: '', ...extra }
}

const result = (num: number, parentId: string, extra: Partial<PieceResult> = {}): PieceResult =>
  ({ num, parentId, length: PIECE, costMs: 0, sha256: new Uint8Array(0), errorCode: '', ...extra })

function report(results: PieceResult[], extra: Partial<ReportPiecesRequest> = {}): ReportPiecesRequest {
  return { taskId: T, results, contentLength: -1, pieceSize: 0, pieceCount: -1, sha256: new Uint8Array(0), state: '', error: undefined, ...extra }
}

/** A scheduler in which each of `ids` announced itself and registered task T. */
function registeredOn(ids: string[]): { s: Scheduler; task: TaskState } {
  const s = new Scheduler({ hostTtlMs: TTL }, none)
  for (const id of ids) {
    s.announceHost(id, hostInfo(id))
    s.registerTask(id, { taskId: T, url: URL, headers: [], digest: '', range: '', filter: [] })
  }
  return { s, task: s.tasks.get(T)! }
}

/** getParents as it was before the index: every bitmap and every edge read on each call. Parents' ids and scores, best first. */
function reference(s: Scheduler, hostId: string, limit: number, now: number, cap = 32): Array<{ id: string; score: number }> {
  const task = s.tasks.get(T)!
  const me = task.peers.get(hostId)
  const mine = me?.bitmap ?? new Bitmap()
  let width = 0
  for (const p of task.peers.values()) width = Math.max(width, p.bitmap.view().length)
  const holders = new Uint32Array(width * 8)
  for (const p of task.peers.values()) for (const n of p.bitmap.pieces()) holders[n]++
  const children = new Map<string, number>()
  for (const p of task.peers.values()) {
    for (const [parent, at] of p.parents) if (now - at < EDGE_WINDOW_MS) children.set(parent, (children.get(parent) ?? 0) + 1)
  }
  const candidates: Candidate[] = []
  let maxBandwidth = 0
  for (const p of task.peers.values()) {
    if (p.hostId === hostId || p.state === 'failed' || me?.blocked.has(p.hostId) === true) continue
    const host = s.hosts.get(p.hostId)
    if (host === undefined || host.gone) continue
    if (!host.info.isSeed && now - host.lastSeen > TTL) continue
    if (host.consecutiveFailures >= 3) continue
    let useful = 0
    for (const n of p.bitmap.pieces()) if (!mine.has(n)) useful += 1 / holders[n]
    if (useful === 0 && !(host.info.isSeed && p.state === 'running' && task.state === 'running' && task.pieceCount > p.bitmap.count())) continue
    const c: Candidate = { peer: p, host, useful, children: children.get(p.hostId) ?? 0 }
    if (s.filters.some((f) => !f(c, task))) continue
    maxBandwidth = Math.max(maxBandwidth, host.bandwidth)
    candidates.push(c)
  }
  const requester = s.hosts.get(hostId)
  const missing = Math.max(1, (task.pieceCount >= 0 ? task.pieceCount : task.pieces.size) - mine.count())
  return candidates
    .map((c) => ({ id: c.peer.hostId, score: scoreCandidate(c, { requester: requester?.info, maxBandwidth, missing }) + s.scorers.reduce((a, f) => a + f(c, task), 0) }))
    .sort((a, b) => b.score - a.score)
    .slice(0, Math.max(1, Math.min(limit === 0 ? 8 : limit, cap)))
}

describe('swarm index against the brute-force reference', () => {
  let now: number
  beforeEach(() => {
    vi.useFakeTimers({ toFake: ['Date'] })
    now = Date.UTC(2025, 0, 1)
    vi.setSystemTime(now)
  })
  afterEach(() => {
    vi.useRealTimers()
  })
  const advance = (ms: number): void => {
    now += ms
    vi.setSystemTime(now)
  }

  interface Options {
    peers: number
    pieces: number
    /** Every host's bandwidth the same: scores then do not depend on which candidates a call considered. */
    flatBandwidth?: boolean
    seed?: boolean
  }

  /**
   * A random swarm built through the scheduler's calls: peers register and report pieces
   * (from the seed or each other, some failing, a few corrupt), some fail, succeed, leave
   * or go silent; edges are spread over more than the edge window.
   */
  function randomSwarm(seed: number, o: Options): { s: Scheduler; ids: string[]; rnd: () => number } {
    const rnd = prng(seed)
    const pick = <V>(xs: V[]): V => xs[Math.floor(rnd() * xs.length)]
    const withSeed = o.seed ?? true
    const s = new Scheduler({ hostTtlMs: TTL, ...(withSeed ? { seedHostId: SEED, triggerSeed: () => {} } : {}) }, none)
    const announce = (id: string): void => {
      s.announceHost(id, hostInfo(id, { idc: `dc${Math.floor(rnd() * 3)}`, location: `eu|z${Math.floor(rnd() * 2)}|r${Math.floor(rnd() * 3)}`, uploadSlots: 1 + Math.floor(rnd() * 6) }))
    }
    const source = withSeed ? SEED : 'p0'
    announce(source)
    s.registerTask(source, { taskId: T, url: URL, headers: [], digest: '', range: '', filter: [] })
    const ids = Array.from({ length: o.peers }, (_, i) => `p${i}`).filter((id) => id !== source)
    for (const id of ids) {
      announce(id)
      s.registerTask(id, { taskId: T, url: URL, headers: [], digest: '', range: '', filter: [] })
    }
    if (withSeed) s.registerTask(SEED, { taskId: T, url: URL, headers: [], digest: '', range: '', filter: [] })
    // The source publishes a random prefix of the pieces (still running) or all of them.
    const published = rnd() < 0.3 ? 1 + Math.floor((o.pieces - 1) * rnd()) : o.pieces
    s.reportPieces(source, report(Array.from({ length: published }, (_, n) => result(n, '', { sha256: createHash('sha256').update(`p${n}`).digest() })), {
      contentLength: o.pieces * PIECE, pieceSize: PIECE, pieceCount: o.pieces, state: published === o.pieces && rnd() < 0.5 ? 'succeeded' : ''
    }))
    const everyone = [source, ...ids]
    const rounds = (count: number, step: number): void => {
    for (let round = 0; round < count; round++) {
      for (const id of ids) {
        if (s.hosts.get(id)?.gone === true) continue
        if (rnd() < 0.4) continue
        const results: PieceResult[] = []
        const n = Math.floor(rnd() * 6)
        for (let k = 0; k < n && published > 0; k++) {
          const parent = rnd() < 0.2 ? source : pick(everyone)
          const num = Math.floor(rnd() * published)
          const roll = rnd()
          if (parent === id) continue
          if (roll < 0.05) results.push(result(num, parent, { errorCode: 'DFD_ERR_PIECE_DIGEST' }))
          else if (roll < 0.12) results.push(result(num, parent, { errorCode: 'DFD_ERR_TIMEOUT' }))
          else results.push(result(num, parent, { costMs: 10 + Math.floor(rnd() * 500) }))
        }
        const state = rnd() < 0.03 ? 'failed' : rnd() < 0.03 ? 'succeeded' : ''
        s.reportPieces(id, report(results, { state }))
      }
      advance(Math.floor(rnd() * step))
    }
    }
    rounds(6, 900)
    for (const id of ids) {
      const roll = rnd()
      if (roll < 0.03) s.leaveHost(id)
      else if (roll < 0.06) s.leaveTask(id, T)
      else if (roll < 0.1) s.registerTask(id, { taskId: T, url: URL, headers: [], digest: '', range: '', filter: [] }) // a failed one comes back
    }
    // Some hosts fall silent past the TTL, the others keep announcing.
    advance(TTL - 200)
    for (const id of ids) if (rnd() < 0.85 && s.hosts.get(id)?.gone === false) s.announceHost(id, s.hosts.get(id)!.info)
    advance(400)
    // Recent edges: parents serving children now (their upload slots count as busy).
    rounds(2, 700)
    if (o.flatBandwidth === true) for (const h of s.hosts.values()) h.bandwidth = 1_000_000
    return { s, ids, rnd }
  }

  /** Holder counts, running peers and children from the index against a count over every peer. */
  function expectIndexMatches(task: TaskState, swarm: Swarm): void {
    const holders = new Map<number, number>()
    for (const p of task.peers.values()) for (const n of p.bitmap.pieces()) holders.set(n, (holders.get(n) ?? 0) + 1)
    for (let n = 0; n < swarm.holders.length; n++) expect(swarm.holders[n], `holders of piece ${n}`).toBe(holders.get(n) ?? 0)
    for (const n of holders.keys()) expect(n).toBeLessThan(swarm.holders.length)
    expect(swarm.running).toBe([...task.peers.values()].filter((p) => p.state === 'running').length)
    const children = new Map<string, number>()
    for (const p of task.peers.values()) {
      for (const [parent, at] of p.parents) if (now - at < EDGE_WINDOW_MS) children.set(parent, (children.get(parent) ?? 0) + 1)
    }
    for (const id of new Set([...task.peers.keys(), ...children.keys()])) expect(swarm.children(id, now), `children of ${id}`).toBe(children.get(id) ?? 0)
  }

  it.each(Array.from({ length: 12 }, (_, i) => [i + 1]))('swarm %i of up to CANDIDATE_POOL peers: the same parents, in the same order, with the same scores', (seed) => {
    const { s, ids, rnd } = randomSwarm(seed, { peers: 8 + Math.floor(prng(seed)() * (CANDIDATE_POOL - 10)), pieces: 8 + Math.floor(prng(seed * 7)() * 64), seed: seed % 3 !== 0 })
    expect(s.tasks.get(T)!.peers.size).toBeLessThanOrEqual(CANDIDATE_POOL)
    let compared = 0
    for (const id of ids) {
      if (!s.tasks.get(T)!.peers.has(id) || rnd() < 0.5) continue
      const limit = [0, 4, 32][Math.floor(rnd() * 3)]
      const want = reference(s, id, limit, now)
      const got = s.getParents(id, T, limit).parents
      expect(got.map((p) => p.id)).toEqual(want.map((p) => p.id))
      got.forEach((p, i) => expect(p.score).toBeCloseTo(want[i].score, 12))
      compared += got.length
    }
    expect(compared).toBeGreaterThan(3)
  })

  it.each([[101], [102], [103], [104]])('swarm %i, larger than the pool: every parent offered is one the reference would take, scored the same, and among the best', (seed) => {
    const { s, ids, rnd } = randomSwarm(seed, { peers: 400, pieces: 96, flatBandwidth: true })
    const task = s.tasks.get(T)!
    expect(task.peers.size).toBeGreaterThan(CANDIDATE_POOL)
    let asked = 0
    for (const id of ids) {
      if (!task.peers.has(id) || rnd() < 0.8) continue
      const everyone = new Map(reference(s, id, Infinity, now, Infinity).map((c) => [c.id, c.score]))
      const got = s.getParents(id, T, 32).parents
      if (everyone.size === 0) {
        expect(got).toEqual([])
        continue
      }
      asked++
      for (const p of got) {
        expect(everyone.has(p.id), `${p.id} is a candidate`).toBe(true)
        expect(p.score).toBeCloseTo(everyone.get(p.id)!, 12)
      }
      expect(got.map((p) => p.score)).toEqual([...got.map((p) => p.score)].sort((a, b) => b - a))
      expect(got.length).toBeGreaterThanOrEqual(Math.min(8, everyone.size))
      // The best parent offered ranks with the best candidates of the whole swarm.
      const sorted = [...everyone.values()].sort((a, b) => b - a)
      expect(got[0].score).toBeGreaterThanOrEqual(sorted[Math.floor(sorted.length * 0.2)])
    }
    expect(asked).toBeGreaterThan(0)
  })

  /** src holds and published pieces 0..11 (succeeded), peers p0..p(count-1) hold 0..9. */
  function tenOfTwelve(count: number): { s: Scheduler; register: (id: string) => void } {
    const s = new Scheduler({ hostTtlMs: TTL }, none)
    const register = (id: string): void => {
      if (!s.hosts.has(id)) s.announceHost(id, hostInfo(id))
      s.registerTask(id, { taskId: T, url: URL, headers: [], digest: '', range: '', filter: [] })
    }
    register('src')
    s.reportPieces('src', report(Array.from({ length: 12 }, (_, n) => result(n, '', { sha256: createHash('sha256').update(`p${n}`).digest() })), { contentLength: 12 * PIECE, pieceSize: PIECE, pieceCount: 12, state: 'succeeded' }))
    for (let i = 0; i < count; i++) {
      register(`p${i}`)
      s.reportPieces(`p${i}`, report(Array.from({ length: 10 }, (_, n) => result(n, 'src'))))
    }
    return { s, register }
  }

  it('in a swarm of 2,000, the one peer holding a piece the requester lacks is offered first', () => {
    const { s, register } = tenOfTwelve(2000)
    s.reportPieces('p1234', report([result(10, 'src')]))
    advance(EDGE_WINDOW_MS) // the edges to src no longer count
    s.announceHost('src', hostInfo('src'))
    for (let i = 0; i < 2000; i++) s.hosts.get(`p${i}`)!.lastSeen = now
    register('me')
    s.reportPieces('me', report(Array.from({ length: 10 }, (_, n) => result(n, 'src'))))
    const parents = s.getParents('me', T, 8).parents.map((p) => p.id)
    // Piece 10 is held by src and p1234, piece 11 by src alone: src first, then p1234.
    expect(parents.slice(0, 2)).toEqual(['src', 'p1234'])
    expect(parents).toHaveLength(2)
  })

  it('in a swarm larger than the pool, a holder\'s host and peer state changes reach gather at once (its typed rows)', () => {
    const { s, register } = tenOfTwelve(100)
    // r alone besides src holds piece 10; me holds 0..9 and asks.
    register('r')
    s.reportPieces('r', report(Array.from({ length: 11 }, (_, n) => result(n, 'src'))))
    register('me')
    s.reportPieces('me', report(Array.from({ length: 10 }, (_, n) => result(n, 'src'))))
    expect(s.tasks.get(T)!.peers.size).toBeGreaterThan(CANDIDATE_POOL)
    // getParents checks every pooled peer against the HostStates again, which would hide a row
    // that kept a peer in; so the scheduler's rows are also compared with rows filled afresh.
    const rows = (s as unknown as { hostRows: HostRows }).hostRows
    const offered = (asker = 'me'): string[] => {
      const fresh = new HostRows(s.hosts)
      for (const id of ['r', 'src', 'me', 'p0']) {
        const [a, b] = [rows.rowFor(id), fresh.rowFor(id)]
        expect([rows.flags[a], rows.lastSeen[a], rows.failures[a]], `row of ${id}`).toEqual([fresh.flags[b], fresh.lastSeen[b], fresh.failures[b]])
      }
      return s.getParents(asker, T, 8).parents.map((p) => p.id)
    }
    expect(offered().sort()).toEqual(['r', 'src'])

    // Silent past the TTL, then heard from again.
    advance(TTL + 1)
    s.announceHost('src', hostInfo('src'))
    expect(offered()).toEqual(['src'])
    s.announceHost('r', hostInfo('r'))
    expect(offered().sort()).toEqual(['r', 'src'])
    // Three failures in a row as a parent, then a good piece served.
    for (let i = 0; i < 3; i++) s.reportPieces('p0', report([result(10, 'r', { errorCode: 'DFD_ERR_TIMEOUT' })]))
    expect(offered()).toEqual(['src'])
    s.reportPieces('p1', report([result(10, 'r')]))
    expect(offered()).toContain('r')
    // Failed, then running again (keeping its pieces).
    s.reportPieces('r', report([], { state: 'failed' }))
    expect(offered()).not.toContain('r')
    register('r')
    expect(offered()).toContain('r')
    // Blocked by one requester only.
    s.reportPieces('me', report([result(10, 'r', { errorCode: 'DFD_ERR_PIECE_DIGEST' })]))
    expect(offered()).not.toContain('r')
    expect(offered('p2')).toContain('r')
    // Gone.
    s.leaveHost('r')
    expect(offered('p2')).not.toContain('r')
  })

  it('gather takes from the holder lists only live, eligible holders: rows and peer states as the rule says', () => {
    const s = new Scheduler({ hostTtlMs: TTL, seedHostId: 'g' }, none)
    const ids = ['a', 'b', 'c', 'd', 'e', 'f', 'g']
    for (const id of ids) {
      s.announceHost(id, hostInfo(id))
      s.registerTask(id, { taskId: T, url: URL, headers: [], digest: '', range: '', filter: [] })
      if (id !== 'a') s.reportPieces(id, report([result(0, '')]))
    }
    const task = s.tasks.get(T)!
    const hostRows = new HostRows(s.hosts)
    const swarm = new Swarm(task, hostRows)
    const rule = { now, ttlMs: TTL, maxFailures: 3, blocked: new Set(['f']) }
    const take = (): string[] => swarm.gather(task.peers.get('a')!.bitmap, 'a', 64, 512, rule).map((p) => p.hostId).sort()
    expect(take()).toEqual(['b', 'c', 'd', 'e', 'g'])
    swarm.setState(task.peers.get('b')!, 'failed')
    s.hosts.get('c')!.consecutiveFailures = 3
    s.hosts.get('d')!.gone = true
    s.hosts.get('e')!.lastSeen = now - TTL - 1
    s.hosts.get('g')!.lastSeen = now - TTL - 1 // a seed: no TTL
    for (const id of ids) hostRows.sync(id)
    expect(take()).toEqual(['g'])
    // A departed peer's slot, reused by one without the piece, is not a holder of it.
    swarm.remove('g')
    swarm.put({ hostId: 'h', state: 'running', bitmap: new Bitmap(), parents: new Map(), blocked: new Set(), updatedAt: now })
    s.announceHost('h', hostInfo('h'))
    hostRows.sync('h')
    expect(take()).toEqual([])
    expect(swarm.holders[0]).toBe(5)
  })

  it('counts a parent\'s children within the edge window while expired edges are kept, dropped and added again', () => {
    const ids = Array.from({ length: 30 }, (_, i) => `p${i}`)
    const { task } = registeredOn(ids)
    const swarm = new Swarm(task)
    const child = (i: number): PeerState => task.peers.get(ids[i])!
    // 20 children at t0, 3 of them again later; then the edges expire in turn.
    for (let i = 1; i <= 20; i++) swarm.addEdge(child(i), 'p0', now)
    expect(swarm.children('p0', now)).toBe(20)
    for (let i = 1; i <= 3; i++) swarm.addEdge(child(i), 'p0', now + 1_500)
    expect(swarm.children('p0', now + EDGE_WINDOW_MS)).toBe(3)
    expect(swarm.children('p0', now + EDGE_WINDOW_MS + 1_500)).toBe(0)
    // A child coming back after its edge expired (kept or dropped) counts once.
    for (let i = 1; i <= 25; i++) swarm.addEdge(child(i), 'p0', now + 5_000)
    swarm.addEdge(child(1), 'p0', now + 5_500)
    expect(swarm.children('p0', now + 5_600)).toBe(25)
    swarm.clearEdges(child(2))
    expect(swarm.children('p0', now + 5_600)).toBe(24)
    expect(swarm.children('p0', now + 5_000 + EDGE_WINDOW_MS)).toBe(1)
  })

  it('keeps its counts through random operations, and a swarm rebuilt from the same peers has the same', () => {
    const { s, ids, rnd } = randomSwarm(7, { peers: 120, pieces: 40 })
    const task = s.tasks.get(T)!
    // The scheduler's own index, reached through a call that reads it.
    for (const id of ids.slice(0, 10)) if (task.peers.has(id)) s.getParents(id, T, 8)
    const rebuilt = new Swarm(task)
    expectIndexMatches(task, rebuilt)
    // A swarm index maintained through its own calls agrees with a count at every step.
    const copy: TaskState = { ...task, peers: new Map() }
    const live = new Swarm(copy)
    const peers = [...task.peers.values()]
    for (let step = 0; step < 600; step++) {
      const p = peers[Math.floor(rnd() * peers.length)]
      const roll = rnd()
      const mine = copy.peers.get(p.hostId)
      if (mine === undefined) {
        live.put({ hostId: p.hostId, state: 'running', bitmap: new Bitmap(), parents: new Map(), blocked: new Set(), updatedAt: now })
      } else if (roll < 0.55) {
        live.setPiece(mine, Math.floor(rnd() * 40))
      } else if (roll < 0.75) {
        live.addEdge(mine, peers[Math.floor(rnd() * peers.length)].hostId, now - Math.floor(rnd() * 2 * EDGE_WINDOW_MS))
      } else if (roll < 0.85) {
        live.setState(mine, (['running', 'succeeded', 'failed'] as const)[Math.floor(rnd() * 3)])
      } else if (roll < 0.9) {
        live.put({ ...mine, state: 'running', parents: new Map(), bitmap: rnd() < 0.5 ? mine.bitmap : Bitmap.from(mine.bitmap.toBytes()) })
      } else {
        live.remove(p.hostId)
      }
      if (step % 50 === 49) expectIndexMatches(copy, live)
    }
    expectIndexMatches(copy, live)
    expectIndexMatches(copy, new Swarm(copy))
  })

  it('keeps a holder list in the same array while downloads start over, and still finds every holder', () => {
    const ids = Array.from({ length: 30 }, (_, i) => `h${i}`)
    const { s, task } = registeredOn(ids)
    const swarm = new Swarm(task, new HostRows(s.hosts))
    const join = (id: string): void => {
      swarm.put({ hostId: id, state: 'running', bitmap: new Bitmap(), parents: new Map(), blocked: new Set(), updatedAt: now })
      swarm.setPiece(task.peers.get(id)!, 0)
    }
    for (const id of ids) join(id)
    const listOf = (): Float64Array | undefined => (swarm as unknown as { lists: Array<Float64Array | undefined> }).lists[0]
    const rule = { now, ttlMs: TTL, maxFailures: 3, blocked: undefined }
    let first: Float64Array | undefined
    for (let round = 0; round < 40; round++) {
      // Every peer leaves and comes back with the piece again: its old entry goes stale.
      for (const id of ids) {
        swarm.remove(id)
        join(id)
      }
      // Its array (no JS array: compacting one shrank its store, and the pushes after copied it).
      if (round === 5) first = listOf()
      if (round > 5) {
        expect(listOf()).toBeInstanceOf(Float64Array)
        expect(listOf()).toBe(first)
      }
      expect(swarm.holders[0]).toBe(ids.length)
      const found = swarm.gather(new Bitmap(), 'h0', 64, 10_000, rule).map((p) => p.hostId).sort()
      expect(found).toEqual(ids.slice(1).sort())
    }
  })

  it('a scheduler rebuilt from the peers re-announcing what they hold gives the same parents', () => {
    const { s, ids } = randomSwarm(11, { peers: 40, pieces: 30, seed: false })
    const task = s.tasks.get(T)!
    // A fresh scheduler (another owner, or this one restarted without state): the source
    // registers first, then every peer registers again and reports its bitmap, as a daemon
    // that holds pieces does when its scheduler does not know it.
    const fresh = new Scheduler({ hostTtlMs: TTL }, none)
    const order = [task.backSourcePeer, ...[...task.peers.keys()].filter((id) => id !== task.backSourcePeer)]
    for (const id of order) {
      fresh.announceHost(id, s.hosts.get(id)!.info)
      fresh.registerTask(id, { taskId: T, url: URL, headers: [], digest: '', range: '', filter: [] })
      const p = task.peers.get(id)!
      const trusted = id === task.backSourcePeer
      fresh.reportPieces(id, report([...p.bitmap.pieces()].map((n) => result(n, '', trusted ? { sha256: task.pieces.get(n)?.sha256 ?? new Uint8Array(0) } : {})), {
        ...(trusted ? { contentLength: task.contentLength, pieceSize: task.pieceSize, pieceCount: task.pieceCount } : {}),
        state: p.state === 'running' ? '' : p.state
      }))
    }
    // What the old owner measured about hosts (bandwidth, failures) is not part of the swarm: equalise it.
    for (const [id, h] of fresh.hosts) Object.assign(h, { ...s.hosts.get(id)!, info: h.info })
    // Nor are its recent edges (nobody fetched from anybody under the new owner yet): let them expire.
    advance(EDGE_WINDOW_MS)
    // Nor are the corrupt parents a peer caught: it finds them again.
    for (const p of task.peers.values()) p.blocked.clear()
    for (const id of ids) {
      if (!task.peers.has(id)) continue
      const a = s.getParents(id, T, 32).parents
      const b = fresh.getParents(id, T, 32).parents
      expect(b.map((p) => [p.id, Buffer.from(p.bitmap).toString('hex')])).toEqual(a.map((p) => [p.id, Buffer.from(p.bitmap).toString('hex')]))
      b.forEach((p, i) => expect(p.score).toBeCloseTo(a[i].score, 12))
    }
  })
})

describe('digests sent once', () => {
  it('getParents sends only the digests published after those the caller names, and all of them after a reset', () => {
    const s = new Scheduler({ hostTtlMs: TTL }, none)
    const register = (id: string): ReturnType<Scheduler['registerTask']> => {
      s.announceHost(id, hostInfo(id))
      return s.registerTask(id, { taskId: T, url: URL, headers: [], digest: '', range: '', filter: [] })
    }
    register('src')
    const first = register('a')
    expect(first.digestEpoch).toBeGreaterThan(0)
    const publish = (from: number, to: number, extra: Partial<ReportPiecesRequest> = {}): void => {
      s.reportPieces('src', report(Array.from({ length: to - from }, (_, k) => result(from + k, '', { sha256: createHash('sha256').update(`p${from + k}`).digest() })), { contentLength: 8 * PIECE, pieceSize: PIECE, pieceCount: 8, ...extra }))
    }
    publish(0, 3)
    const all = s.getParents('a', T, 8).task!
    expect(all.pieces.map((p) => p.num)).toEqual([0, 1, 2])
    expect(all.piecesFrom).toBe(0)
    publish(3, 5)
    const delta = s.getParents('a', T, 8, { epoch: all.digestEpoch, count: 3 }).task!
    expect(delta.piecesFrom).toBe(3)
    expect(delta.pieces.map((p) => p.num)).toEqual([3, 4])
    // Nothing new: nothing sent.
    expect(s.getParents('a', T, 8, { epoch: all.digestEpoch, count: 5 }).task!.pieces).toEqual([])
    // An unknown epoch, or more digests than were published, gets everything.
    expect(s.getParents('a', T, 8, { epoch: all.digestEpoch + 1, count: 5 }).task!.pieces).toHaveLength(5)
    expect(s.getParents('a', T, 8, { epoch: all.digestEpoch, count: 6 }).task!.piecesFrom).toBe(0)
    // The source fails: the task starts over under a new epoch, and the old digests are void.
    s.reportPieces('src', report([], { state: 'failed' }))
    register('b')
    const after = s.getParents('a', T, 8, { epoch: all.digestEpoch, count: 5 }).task!
    expect(after.digestEpoch).not.toBe(all.digestEpoch)
    expect(after.piecesFrom).toBe(0)
    expect(after.pieces).toEqual([])
  })
})
