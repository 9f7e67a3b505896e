// The scheduler: which peer holds which pieces, and which parents a peer should fetch
// from. State lives in memory; the store persists it behind a short write-behind delay.

import { channel } from 'node:diagnostics_channel'

import {
  Bitmap, EVENTS, NaiadError,
  type GetParentsResponse, type Host, type Parent, type RegisterTaskRequest, type ReportPiecesRequest, type TaskInfo
} from '@naiad/proto'

import { scoreOf, type Candidate, type ParentFilter, type ParentScorer } from './scoring.ts'
import { SeedGrants } from './seed-grants.ts'
import type { HostState, PeerState, TaskState } from './state.ts'
import { HostRows, Swarm } from './swarm.ts'

export type { HostState, PeerState, TaskState } from './state.ts'

export interface SchedulerOptions {
  /** Hosts silent for longer are not offered as parents. */
  hostTtlMs: number
  /** The embedded seed's host ID, when there is one. */
  seedHostId?: string
  /** Starts the seed on a task; called once per task (again after the task failed). */
  triggerSeed?: (task: TaskState) => void
}

/** Where the scheduler persists what it learns; see state/store.ts. */
export interface SchedulerPersistence {
  markTask(task: TaskState): void
  markPieces(task: TaskState, nums: number[]): void
  markPeer(taskId: string, peer: PeerState): void
  deletePeer(taskId: string, hostId: string): void
  /** `counters`: only the host's last-seen time, bandwidth and piece counts changed (the store may write just those). */
  markHost(host: HostState, change?: HostChange): void
}

/** How much of a host changed since it was last marked. */
export type HostChange = 'all' | 'counters'

const scheduled = channel(EVENTS.parentsScheduled)
const reported = channel(EVENTS.piecesReported)
const TASK_ID = /^[0-9a-f]{64}$/
const MAX_FAILURES = 3
/**
 * Highest piece number a report may name (while a task's piece count is unknown): a bitmap
 * is as large as its highest bit, so an unbounded number would let a report allocate
 * without limit. 2^20 pieces of the 64 MiB maximum is 64 TiB.
 */
export const MAX_PIECES = 1 << 20
/**
 * Peers scored per getParents call, at most. A task with no more peers than this is read in
 * full; in a larger one the candidates are holders of the pieces the requester lacks, rarest
 * first (Swarm.gather), so that a call costs the same with 100 peers or 10,000.
 */
export const CANDIDATE_POOL = 64
/** Holder-list entries one gather may read (skipping peers that cannot be parents now). */
const GATHER_BUDGET = 8 * CANDIDATE_POOL
/** A host's last-seen time alone is persisted at most this often (it changes on every call). */
const TOUCH_PERSIST_MS = 10_000

/** What a caller already holds of a task's published digests (GetParentsRequest.digest_epoch, .digests). */
export interface KnownDigests {
  epoch: number
  count: number
}

const EMPTY = new Bitmap()

export class Scheduler {
  readonly hosts = new Map<string, HostState>()
  readonly tasks = new Map<string, TaskState>()
  readonly filters: ParentFilter[] = []
  readonly scorers: ParentScorer[] = []
  private readonly options: SchedulerOptions
  private readonly persist: SchedulerPersistence
  private readonly seedGrants = new SeedGrants()
  /** What gather reads of each host, in typed arrays: synced wherever lastSeen, gone, isSeed or consecutiveFailures change. */
  private readonly hostRows = new HostRows(this.hosts)
  /** Each task's index (holder counts, candidate sets, children): built on first use from the task's peers. */
  private readonly swarms = new WeakMap<TaskState, Swarm>()
  /** When each host's last-seen time was last handed to the store. */
  private readonly touchedAt = new WeakMap<HostState, number>()
  /** Scratch for getParents (weightsFor). */
  private weights = new Float64Array(256)
  /** getParents's candidates, kept across calls. */
  private readonly picks = new Picks(CANDIDATE_POOL + 1)

  constructor(options: SchedulerOptions, persist: SchedulerPersistence) {
    this.options = options
    this.persist = persist
  }

  announceHost(hostId: string, info: Host): void {
    const existing = this.hosts.get(hostId)
    const host: HostState = existing ?? { info, lastSeen: 0, bandwidth: 0, goodPieces: 0, badPieces: 0, failedPieces: 0, consecutiveFailures: 0, gone: false }
    host.info = { ...info, id: hostId, isSeed: hostId === this.options.seedHostId }
    host.lastSeen = Date.now()
    host.gone = false
    host.consecutiveFailures = 0
    this.hosts.set(hostId, host)
    this.hostRows.sync(hostId, host)
    this.persist.markHost(host)
    this.touchedAt.set(host, host.lastSeen)
  }

  leaveHost(hostId: string): void {
    const host = this.hosts.get(hostId)
    if (host === undefined) return
    host.gone = true
    this.hostRows.sync(hostId, host)
    this.persist.markHost(host)
    for (const task of this.tasks.values()) {
      if (task.peers.has(hostId) && this.swarmOf(task).remove(hostId)) this.persist.deletePeer(task.id, hostId)
    }
  }

  registerTask(hostId: string, req: RegisterTaskRequest): TaskInfo {
    if (!TASK_ID.test(req.taskId)) throw new NaiadError('SN_ERR_BAD_REQUEST', `bad task ID "${req.taskId}"`)
    if (req.url === '') throw new NaiadError('SN_ERR_BAD_REQUEST', 'registerTask without a URL')
    const now = Date.now()
    let task = this.tasks.get(req.taskId)
    if (task === undefined) {
      task = {
        id: req.taskId, url: req.url, headers: req.headers, digest: req.digest, range: req.range, filter: req.filter,
        state: 'pending', contentLength: -1, pieceSize: 0, pieceCount: -1, pieces: new Map(), sha256: new Uint8Array(0),
        error: undefined, backSourcePeer: '', peers: new Map(), createdAt: now, updatedAt: now
      }
      this.tasks.set(task.id, task)
    }
    this.touchHost(hostId)
    const swarm = this.swarmOf(task)
    const peer = task.peers.get(hostId)
    if (peer === undefined || peer.state === 'failed') {
      swarm.put({ hostId, state: 'running', bitmap: peer?.bitmap ?? new Bitmap(), parents: new Map(), blocked: peer?.blocked ?? new Set(), updatedAt: now })
    }
    this.persist.markPeer(task.id, task.peers.get(hostId)!)

    // A failed task gets a fresh start; so does one whose back-to-source peer vanished.
    const source = task.backSourcePeer === '' ? undefined : task.peers.get(task.backSourcePeer)
    if (task.state === 'failed' || (task.state !== 'succeeded' && (source === undefined || source.state === 'failed'))) {
      // What the failed attempt published (digests of possibly bad bytes, bitmaps of
      // pieces its peers have since dropped) must not outlive it.
      task.state = 'pending'
      task.error = undefined
      task.backSourcePeer = ''
      task.pieces.clear()
      task.contentLength = -1
      task.pieceSize = 0
      task.pieceCount = -1
      task.sha256 = new Uint8Array(0)
      this.seedGrants.reset(task)
      swarm.resetDigests()
      for (const [id, p] of [...task.peers]) {
        if (id !== hostId && p.state !== 'succeeded') {
          swarm.remove(id)
          this.persist.deletePeer(task.id, id)
        }
      }
    }
    let backToSource = false
    if (hostId === this.options.seedHostId) {
      task.backSourcePeer = hostId
      backToSource = true
    } else if (task.backSourcePeer === hostId && task.state !== 'succeeded') {
      // The trusted peer registering again (a restarted daemon) still has to fetch from the origin.
      backToSource = true
    } else if (task.backSourcePeer === '' && task.state !== 'succeeded') {
      if (this.options.triggerSeed !== undefined && this.options.seedHostId !== undefined) {
        task.backSourcePeer = this.options.seedHostId
        task.state = 'running'
        const seedPeer: PeerState = { hostId: this.options.seedHostId, state: 'running', bitmap: task.peers.get(this.options.seedHostId)?.bitmap ?? new Bitmap(), parents: new Map(), blocked: new Set(), updatedAt: now }
        swarm.put(seedPeer)
        this.persist.markPeer(task.id, seedPeer)
        // Pieces children failed to get from the seed while an earlier read of its failed
        // belong to that read: left standing, they kept the seed out of every child's
        // parents (it never serves a good piece to reset them, nor announces itself again),
        // and each child waited for its stall timeout and went to the origin.
        const seedHost = this.hosts.get(this.options.seedHostId)
        if (seedHost !== undefined) {
          seedHost.consecutiveFailures = 0
          this.hostRows.sync(this.options.seedHostId, seedHost)
        }
        this.options.triggerSeed(task)
      } else {
        // No seed: the first peer fetches from the origin and its digests are the reference.
        task.backSourcePeer = hostId
        backToSource = true
      }
    }
    task.updatedAt = now
    this.persist.markTask(task)
    return { ...this.taskInfo(task), backToSource }
  }

  /** Adds a task whose state was kept elsewhere (the store, at start); its index is built from its peers. */
  adoptTask(task: TaskState): void {
    this.tasks.set(task.id, task)
    this.swarms.set(task, new Swarm(task, this.hostRows))
  }

  /** The task's swarm index, built from its peers when the task is new to it. */
  private swarmOf(task: TaskState): Swarm {
    let swarm = this.swarms.get(task)
    if (swarm === undefined) {
      swarm = new Swarm(task, this.hostRows)
      this.swarms.set(task, swarm)
    }
    return swarm
  }

  reportPieces(hostId: string, req: ReportPiecesRequest): void {
    const task = this.tasks.get(req.taskId)
    if (task === undefined) throw new NaiadError('SN_ERR_TASK_NOT_FOUND', `no task ${req.taskId}`)
    const now = Date.now()
    this.touchHost(hostId)
    const swarm = this.swarmOf(task)
    let peer = task.peers.get(hostId)
    if (peer === undefined) {
      peer = { hostId, state: 'running', bitmap: new Bitmap(), parents: new Map(), blocked: new Set(), updatedAt: now }
      swarm.put(peer)
    }
    const trusted = hostId === task.backSourcePeer
    const limit = task.pieceCount >= 0 ? task.pieceCount : MAX_PIECES
    for (const r of req.results) {
      if (r.num >= limit) throw new NaiadError('SN_ERR_BAD_REQUEST', `piece ${r.num} of task ${req.taskId.slice(0, 12)} is beyond its ${limit} pieces`)
    }
    if (trusted && req.pieceSize > 0) {
      task.pieceSize = req.pieceSize
      task.contentLength = req.contentLength
      task.pieceCount = req.pieceCount
      if (task.state === 'pending') task.state = 'running'
    }
    // Allocated only for the few reports that publish digests (20,000 reports a second are garbage enough).
    let newPieces: number[] | undefined
    for (const r of req.results) {
      const parent = r.parentId === '' ? undefined : this.hosts.get(r.parentId)
      if (r.errorCode === '') {
        swarm.setPiece(peer, r.num)
        if (trusted && r.sha256.length === 32 && !task.pieces.has(r.num)) {
          task.pieces.set(r.num, { length: r.length, sha256: r.sha256 })
          swarm.addDigest({ num: r.num, length: r.length, sha256: r.sha256 })
          newPieces ??= []
          newPieces.push(r.num)
        }
        if (parent !== undefined) {
          swarm.addEdge(peer, r.parentId, now)
          parent.goodPieces++
          parent.consecutiveFailures = 0
          if (r.costMs > 0) {
            const bw = (r.length / r.costMs) * 1000
            parent.bandwidth = parent.bandwidth === 0 ? bw : parent.bandwidth * 0.8 + bw * 0.2
          }
        }
      } else if (parent !== undefined) {
        if (r.errorCode === 'DFD_ERR_PIECE_DIGEST') {
          peer.blocked.add(r.parentId)
          parent.badPieces++
        } else {
          parent.failedPieces++
          parent.consecutiveFailures++
        }
      }
      if (parent !== undefined) {
        this.hostRows.sync(r.parentId, parent)
        this.persist.markHost(parent, 'counters')
      }
    }
    if (req.state === 'succeeded') {
      swarm.setState(peer, 'succeeded')
      swarm.clearEdges(peer)
      if (trusted) {
        task.state = 'succeeded'
        if (req.sha256.length === 32) task.sha256 = req.sha256
      }
    } else if (req.state === 'failed') {
      swarm.setState(peer, 'failed')
      swarm.clearEdges(peer)
      if (trusted) {
        task.state = 'failed'
        task.error = req.error === undefined ? { code: 'DFD_ERR_TASK_FAILED', message: 'back-to-source failed' } : req.error
      }
    }
    peer.updatedAt = now
    task.updatedAt = now
    this.persist.markPeer(task.id, peer)
    if (newPieces !== undefined) this.persist.markPieces(task, newPieces)
    this.persist.markTask(task)
    if (reported.hasSubscribers) reported.publish({ taskId: task.id, peerId: hostId, count: req.results.length })
  }

  /**
   * Up to `limit` parents for `hostId`, best first. The cost is bounded: holder counts are
   * kept as pieces are reported, and a large swarm is sampled (CANDIDATE_POOL peers, holders
   * of the rarest pieces the requester lacks) rather than read in full. `known` leaves out of
   * the answer the digests the caller already holds.
   */
  getParents(hostId: string, taskId: string, limit: number, known?: KnownDigests): GetParentsResponse {
    const started = performance.now()
    const task = this.tasks.get(taskId)
    if (task === undefined) throw new NaiadError('SN_ERR_TASK_NOT_FOUND', `no task ${taskId}`)
    this.touchHost(hostId)
    const swarm = this.swarmOf(task)
    const me = task.peers.get(hostId)
    const mine = me?.bitmap ?? EMPTY
    const now = Date.now()
    // Rare pieces make a candidate more valuable: each piece it could give counts 1 / holders.
    // The weights are worked out once per call (0 for the pieces the requester holds), not
    // once per candidate and bit: up to 64 candidates are read against the same pieces.
    const holders = swarm.holders
    const mineBits = mine.view()
    const weights = this.weightsFor(holders.length)
    for (let n = 0; n < holders.length; n++) {
      const byte = n >> 3
      weights[n] = holders[n] !== 0 && !(byte < mineBits.length && (mineBits[byte] & (1 << (n & 7))) !== 0) ? 1 / holders[n] : 0
    }
    const ttl = this.options.hostTtlMs
    const eligible = (p: PeerState): boolean => {
      if (p.hostId === hostId || p.state === 'failed') return false
      if (me?.blocked.has(p.hostId) === true) return false
      const host = this.hosts.get(p.hostId)
      if (host === undefined || host.gone) return false
      if (!host.info.isSeed && now - host.lastSeen > ttl) return false
      return host.consecutiveFailures < MAX_FAILURES
    }
    // The candidates go into scratch arrays kept across calls (see Picks), not an object each:
    // at 10,000 peers the per-call candidates were the largest share of what outlived the
    // young generation (bench/README.md). Plugins and the seed's grants still get Candidates.
    const picks = this.picks
    const plugins = this.filters.length > 0 || this.scorers.length > 0
    let n = 0
    const consider = (p: PeerState): void => {
      if (!eligible(p)) return
      const host = this.hosts.get(p.hostId)!
      let useful = 0
      const bits = p.bitmap.view()
      for (let i = 0; i < bits.length; i++) {
        const b = bits[i]
        if (b === 0) continue
        for (let j = 0; j < 8; j++) if ((b & (1 << j)) !== 0) useful += weights[i * 8 + j]
      }
      // The seed still fetching from the origin has pieces coming that a child can stream
      // from it as they arrive (see SeedGrants), before it has any to show.
      if (useful === 0 && !(host.info.isSeed && p.state === 'running' && task.state === 'running' && task.pieceCount > p.bitmap.count())) return
      // Cycles are allowed: every piece is verified on its own, so two peers may swap pieces.
      const children = swarm.children(p.hostId, now)
      let c: Candidate | undefined
      if (plugins) {
        c = { peer: p, host, useful, children }
        if (this.filters.some((f) => !f(c!, task))) return
      }
      picks.set(n++, p, host, useful, children, c)
    }
    if (task.peers.size <= CANDIDATE_POOL) {
      for (const p of task.peers.values()) consider(p)
    } else {
      // The same test as `eligible`, read from typed arrays (consider applies `eligible` again).
      const pool = swarm.gather(mine, hostId, CANDIDATE_POOL, GATHER_BUDGET, { now, ttlMs: ttl, maxFailures: MAX_FAILURES, blocked: me?.blocked })
      // The seed is always a candidate: it may have pieces coming that nobody holds yet.
      const seed = this.options.seedHostId === undefined ? undefined : task.peers.get(this.options.seedHostId)
      if (seed !== undefined && !pool.includes(seed)) pool.push(seed)
      for (const p of pool) consider(p)
    }
    const requester = this.hosts.get(hostId)?.info
    const missing = Math.max(1, (task.pieceCount >= 0 ? task.pieceCount : task.pieces.size) - mine.count())
    // Worked out here, not in consider: a double written in the closure's context was a new heap number each time.
    let maxBandwidth = 0
    for (let i = 0; i < n; i++) maxBandwidth = Math.max(maxBandwidth, picks.hosts[i]!.bandwidth)
    for (let i = 0; i < n; i++) {
      let score = scoreOf(picks.hosts[i]!, picks.useful[i], picks.children[i], requester, maxBandwidth, missing)
      if (plugins) for (const s of this.scorers) score += s(picks.cands[i]!, task)
      picks.score[i] = score
    }
    const m = picks.best(n, Math.max(1, Math.min(limit === 0 ? 8 : limit, 32)))
    const order = picks.order
    // The seed's children: the task's running peers other than the seed.
    const seedChildren = (): number => swarm.running - (this.seedRunning(task) ? 1 : 0)
    const out: Parent[] = []
    for (let r = 0; r < m; r++) {
      const i = order[r]
      const peer = picks.peers[i]!
      const info = picks.hosts[i]!.info
      let bitmap = peer.bitmap
      if (info.isSeed) {
        const c = picks.candidate(i)
        if (this.seedGrants.needed(task, c, holders)) {
          const offered = Array.from(order.subarray(0, m), (k) => picks.candidate(k))
          bitmap = this.seedGrants.bitmapFor(task, c, hostId, mine, offered, seedChildren(), now)
        }
      }
      out.push({ id: peer.hostId, multiaddrs: info.multiaddrs, bitmap: bitmap.toBytes(), score: picks.score[i], isSeed: info.isSeed, dataPort: info.dataPort, dataTransport: info.dataTransport })
    }
    picks.clear(n)
    if (scheduled.hasSubscribers) scheduled.publish({ taskId, peerId: hostId, parents: out.length, durationMs: performance.now() - started })
    const from = known !== undefined && known.epoch === swarm.epoch && known.count <= swarm.published ? known.count : 0
    return { task: this.taskInfo(task, from), parents: out, grant: new Uint8Array(0) }
  }

  /**
   * getParents's per-piece weights, in one array kept for every call (each call writes the
   * task's whole range first). A new Float64Array per call was a kilobyte outside V8's heap
   * each time, the kind of churn that started the supernode's major GCs (bench/README.md).
   */
  private weightsFor(pieces: number): Float64Array {
    if (this.weights.length < pieces) this.weights = new Float64Array(Math.max(pieces, this.weights.length * 2))
    // A view of the task's range: a piece past it reads as before, undefined, not another task's weight.
    return this.weights.subarray(0, pieces)
  }

  private seedRunning(task: TaskState): boolean {
    const id = this.options.seedHostId
    return id !== undefined && task.peers.get(id)?.state === 'running'
  }

  leaveTask(hostId: string, taskId: string): void {
    const task = this.tasks.get(taskId)
    if (task?.peers.has(hostId) === true && this.swarmOf(task).remove(hostId)) this.persist.deletePeer(taskId, hostId)
  }

  /**
   * The host was heard from. Its last-seen time changes on every call; it goes to the store
   * at most every TOUCH_PERSIST_MS (any other change to the host is persisted at once).
   */
  private touchHost(hostId: string): void {
    const host = this.hosts.get(hostId)
    if (host === undefined) return
    host.lastSeen = Date.now()
    this.hostRows.sync(hostId, host)
    if (host.lastSeen - (this.touchedAt.get(host) ?? 0) < TOUCH_PERSIST_MS) return
    this.touchedAt.set(host, host.lastSeen)
    this.persist.markHost(host, 'counters')
  }

  /** The task as peers see it; `from` leaves out the first digests of the current epoch (the caller holds them). */
  taskInfo(task: TaskState, from = 0): TaskInfo {
    const swarm = this.swarmOf(task)
    return {
      id: task.id,
      url: task.url,
      state: task.state,
      contentLength: task.contentLength,
      pieceSize: task.pieceSize,
      pieceCount: task.pieceCount,
      pieces: swarm.publishedFrom(from),
      sha256: task.sha256,
      error: task.error,
      backToSource: false,
      grant: new Uint8Array(0),
      sourcePeer: task.backSourcePeer,
      digestEpoch: swarm.epoch,
      piecesFrom: from
    }
  }
}

/**
 * One getParents call's candidates in arrays kept across calls: the peer, its host, the
 * figures it is scored on, and its score, by position; a Candidate object only where a
 * plugin or the seed's grants need one. Not reentrant (a plugin must not call getParents).
 */
class Picks {
  readonly peers: Array<PeerState | undefined>
  readonly hosts: Array<HostState | undefined>
  readonly useful: Float64Array
  readonly children: Float64Array
  readonly score: Float64Array
  readonly cands: Array<Candidate | undefined>
  /** Positions of the best, best first (see best). */
  readonly order: Int32Array

  /** `size`: the most candidates one call considers (the pool and the seed). */
  constructor(size: number) {
    this.peers = new Array<PeerState | undefined>(size).fill(undefined)
    this.hosts = new Array<HostState | undefined>(size).fill(undefined)
    this.useful = new Float64Array(size)
    this.children = new Float64Array(size)
    this.score = new Float64Array(size)
    this.cands = new Array<Candidate | undefined>(size).fill(undefined)
    this.order = new Int32Array(size)
  }

  set(i: number, peer: PeerState, host: HostState, useful: number, children: number, c: Candidate | undefined): void {
    this.peers[i] = peer
    this.hosts[i] = host
    this.useful[i] = useful
    this.children[i] = children
    this.cands[i] = c
  }

  candidate(i: number): Candidate {
    return this.cands[i] ??= { peer: this.peers[i]!, host: this.hosts[i]!, useful: this.useful[i], children: this.children[i] }
  }

  /**
   * Puts the positions of the `k` best of the first `n` scores in `order`, best first, ties
   * in position order (what a stable sort by score would give); returns how many (≤ k).
   */
  best(n: number, k: number): number {
    const { order, score } = this
    let m = 0
    for (let i = 0; i < n; i++) {
      const s = score[i]
      if (m === k && !(s > score[order[m - 1]])) continue
      let j = m < k ? m++ : m - 1
      while (j > 0 && s > score[order[j - 1]]) {
        order[j] = order[j - 1]
        j--
      }
      order[j] = i
    }
    return m
  }

  /** Lets go of the call's peers and candidates (a peer that leaves is not kept alive here). */
  clear(n: number): void {
    this.peers.fill(undefined, 0, n)
    this.cands.fill(undefined, 0, n)
    this.hosts.fill(undefined, 0, n)
  }
}
