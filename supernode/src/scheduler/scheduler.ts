// The scheduler: which peer holds which pieces, and which parents a peer should fetch
// from. State lives in memory; the store persists it behind a short write-behind delay.

import { channel } from 'node:diagnostics_channel'

import {
  Bitmap, EVENTS, NaiadError,
  type GetParentsResponse, type Host, type Parent, type RegisterTaskRequest, type ReportPiecesRequest, type TaskInfo
} from '@naiad/proto'

import { scoreCandidate, type Candidate, type ParentFilter, type ParentScorer } from './scoring.ts'

export interface HostState {
  info: Host
  lastSeen: number
  /** Bytes per second measured from pieces children fetched from this host (EWMA); 0 while unknown. */
  bandwidth: number
  goodPieces: number
  badPieces: number
  failedPieces: number
  /** Failures since the host last announced or served a good piece. */
  consecutiveFailures: number
  gone: boolean
}

export interface PeerState {
  hostId: string
  state: 'running' | 'succeeded' | 'failed'
  bitmap: Bitmap
  /**
   * Parents this peer fetched pieces from while running, with when it last did. Recent
   * edges count as the parent's busy upload slots. They do not forbid the reverse edge:
   * pieces are verified one by one, so two peers swapping pieces (a cycle) is harmless and
   * is how a swarm multiplies the seed's bandwidth; a cycle rule starved whichever peer
   * served first of every parent but the seed.
   */
  parents: Map<string, number>
  /** Parents that sent this peer a corrupt piece. */
  blocked: Set<string>
  updatedAt: number
}

export interface TaskState {
  id: string
  url: string
  headers: Array<{ name: string; value: string }>
  digest: string
  range: string
  filter: string[]
  state: 'pending' | 'running' | 'succeeded' | 'failed'
  contentLength: number
  pieceSize: number
  pieceCount: number
  pieces: Map<number, { length: number; sha256: Uint8Array }>
  sha256: Uint8Array
  error: { code: string; message: string } | undefined
  /** The one peer whose piece digests are trusted: the seed, or the first peer without one. */
  backSourcePeer: string
  peers: Map<string, PeerState>
  createdAt: number
  updatedAt: number
}

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
  markHost(host: HostState): void
}

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
/** How long a parent edge counts towards its parent's children (its busy upload slots). */
const EDGE_WINDOW_MS = 2_000
/** Pieces only the seed holds (or is still fetching) that one child may be handed at a time, at least. */
const SEED_GRANTS_PER_CHILD = 2
/**
 * Seed-only bytes handed out at once over all children of a task (at least 16 pieces): a lone
 * child streams a window this deep from the seed (live, while the origin sends it), many
 * children share it.
 */
const SEED_WINDOW_BYTES = 64 * 1024 * 1024
const SEED_WINDOW_PIECES = 16
/** A grant lapses (and the piece goes to another child) after this long, or 4× the seed's measured piece time. */
const SEED_GRANT_MIN_MS = 2_000

/** A piece only the seed holds, handed to one child to fetch and then pass on. */
interface SeedGrant {
  hostId: string
  at: number
  /** When the seed came to hold the piece (for a piece granted while it was still coming). */
  availableAt?: number
}

export class Scheduler {
  readonly hosts = new Map<string, HostState>()
  readonly tasks = new Map<string, TaskState>()
  readonly filters: ParentFilter[] = []
  readonly scorers: ParentScorer[] = []
  private readonly options: SchedulerOptions
  private readonly persist: SchedulerPersistence
  /** Per task, which child may take which seed-only piece from the seed (see sharedSeedBitmap). */
  private readonly seedGrants = new WeakMap<TaskState, Map<number, SeedGrant>>()

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
    this.persist.markHost(host)
  }

  leaveHost(hostId: string): void {
    const host = this.hosts.get(hostId)
    if (host === undefined) return
    host.gone = true
    this.persist.markHost(host)
    for (const task of this.tasks.values()) {
      if (task.peers.delete(hostId)) this.persist.deletePeer(task.id, hostId)
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
    const peer = task.peers.get(hostId)
    if (peer === undefined || peer.state === 'failed') {
      task.peers.set(hostId, { hostId, state: 'running', bitmap: peer?.bitmap ?? new Bitmap(), parents: new Map(), blocked: peer?.blocked ?? new Set(), updatedAt: now })
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
      this.seedGrants.delete(task)
      for (const [id, p] of task.peers) {
        if (id !== hostId && p.state !== 'succeeded') {
          task.peers.delete(id)
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
        task.peers.set(this.options.seedHostId, seedPeer)
        this.persist.markPeer(task.id, seedPeer)
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

  reportPieces(hostId: string, req: ReportPiecesRequest): void {
    const task = this.tasks.get(req.taskId)
    if (task === undefined) throw new NaiadError('SN_ERR_TASK_NOT_FOUND', `no task ${req.taskId}`)
    const now = Date.now()
    this.touchHost(hostId)
    let peer = task.peers.get(hostId)
    if (peer === undefined) {
      peer = { hostId, state: 'running', bitmap: new Bitmap(), parents: new Map(), blocked: new Set(), updatedAt: now }
      task.peers.set(hostId, peer)
    }
    const trusted = hostId === task.backSourcePeer
    const limit = task.pieceCount >= 0 ? task.pieceCount : MAX_PIECES
    const beyond = req.results.find((r) => r.num >= limit)
    if (beyond !== undefined) throw new NaiadError('SN_ERR_BAD_REQUEST', `piece ${beyond.num} of task ${req.taskId.slice(0, 12)} is beyond its ${limit} pieces`)
    if (trusted && req.pieceSize > 0) {
      task.pieceSize = req.pieceSize
      task.contentLength = req.contentLength
      task.pieceCount = req.pieceCount
      if (task.state === 'pending') task.state = 'running'
    }
    const newPieces: number[] = []
    for (const r of req.results) {
      const parent = r.parentId === '' ? undefined : this.hosts.get(r.parentId)
      if (r.errorCode === '') {
        peer.bitmap.set(r.num)
        if (trusted && r.sha256.length === 32 && !task.pieces.has(r.num)) {
          task.pieces.set(r.num, { length: r.length, sha256: r.sha256 })
          newPieces.push(r.num)
        }
        if (parent !== undefined) {
          peer.parents.set(r.parentId, now)
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
      if (parent !== undefined) this.persist.markHost(parent)
    }
    if (req.state === 'succeeded') {
      peer.state = 'succeeded'
      peer.parents.clear()
      if (trusted) {
        task.state = 'succeeded'
        if (req.sha256.length === 32) task.sha256 = req.sha256
      }
    } else if (req.state === 'failed') {
      peer.state = 'failed'
      peer.parents.clear()
      if (trusted) {
        task.state = 'failed'
        task.error = req.error === undefined ? { code: 'DFD_ERR_TASK_FAILED', message: 'back-to-source failed' } : req.error
      }
    }
    peer.updatedAt = now
    task.updatedAt = now
    this.persist.markPeer(task.id, peer)
    if (newPieces.length > 0) this.persist.markPieces(task, newPieces)
    this.persist.markTask(task)
    reported.publish({ taskId: task.id, peerId: hostId, count: req.results.length })
  }

  getParents(hostId: string, taskId: string, limit: number, digestsFrom = 0): GetParentsResponse {
    const started = performance.now()
    const task = this.tasks.get(taskId)
    if (task === undefined) throw new NaiadError('SN_ERR_TASK_NOT_FOUND', `no task ${taskId}`)
    this.touchHost(hostId)
    const me = task.peers.get(hostId)
    const mine = me?.bitmap ?? new Bitmap()
    const now = Date.now()
    // How many peers hold each piece: rare pieces make a candidate more valuable. The
    // bitmaps are read byte by byte: this runs over every peer of the task on every call.
    let width = 0
    for (const p of task.peers.values()) width = Math.max(width, p.bitmap.view().length)
    const holders = new Uint32Array(width * 8)
    for (const p of task.peers.values()) {
      const bits = p.bitmap.view()
      for (let i = 0; i < bits.length; i++) {
        const b = bits[i]
        if (b === 0) continue
        for (let j = 0; j < 8; j++) if ((b & (1 << j)) !== 0) holders[i * 8 + j]++
      }
    }
    // Recent parent edges, counted per parent: how busy each one's upload is. (Cycles are
    // allowed: every piece is verified on its own, so two peers may swap pieces.)
    const children = new Map<string, number>()
    for (const p of task.peers.values()) {
      for (const [parent, at] of p.parents) {
        if (now - at >= EDGE_WINDOW_MS) continue
        children.set(parent, (children.get(parent) ?? 0) + 1)
      }
    }
    const mineBits = mine.view()
    const candidates: Candidate[] = []
    let maxBandwidth = 0
    for (const p of task.peers.values()) {
      if (p.hostId === hostId || p.state === 'failed') continue
      if (me?.blocked.has(p.hostId) === true) continue
      const host = this.hosts.get(p.hostId)
      if (host === undefined || host.gone) continue
      if (!host.info.isSeed && now - host.lastSeen > this.options.hostTtlMs) continue
      if (host.consecutiveFailures >= MAX_FAILURES) continue
      let useful = 0
      const bits = p.bitmap.view()
      for (let i = 0; i < bits.length; i++) {
        const b = bits[i] & ~(i < mineBits.length ? mineBits[i] : 0)
        if (b === 0) continue
        for (let j = 0; j < 8; j++) if ((b & (1 << j)) !== 0) useful += 1 / holders[i * 8 + j]
      }
      // The seed still fetching from the origin has pieces coming that a child can stream
      // from it as they arrive (see sharedSeedBitmap), before it has any to show.
      if (useful === 0 && !(host.info.isSeed && p.state === 'running' && task.state === 'running' && task.pieceCount > p.bitmap.count())) continue
      const c: Candidate = { peer: p, host, useful, children: children.get(p.hostId) ?? 0 }
      if (this.filters.some((f) => !f(c, task))) continue
      maxBandwidth = Math.max(maxBandwidth, host.bandwidth)
      candidates.push(c)
    }
    const requester = this.hosts.get(hostId)
    const missing = Math.max(1, (task.pieceCount >= 0 ? task.pieceCount : task.pieces.size) - mine.count())
    const parents = candidates
      .map((c) => {
        let score = scoreCandidate(c, { requester: requester?.info, maxBandwidth, missing })
        for (const s of this.scorers) score += s(c, task)
        return { c, score }
      })
      .sort((a, b) => b.score - a.score)
      .slice(0, Math.max(1, Math.min(limit === 0 ? 8 : limit, 32)))
    const offered = parents.map(({ c }) => c)
    const out: Parent[] = parents
      .map(({ c, score }) => ({
        id: c.peer.hostId,
        multiaddrs: c.host.info.multiaddrs,
        bitmap: (c.host.info.isSeed && this.seedNeeded(task, c, holders) ? this.sharedSeedBitmap(task, c, hostId, mine, offered, now) : c.peer.bitmap).toBytes(),
        score,
        isSeed: c.host.info.isSeed,
        dataPort: c.host.info.dataPort,
        dataTransport: c.host.info.dataTransport
      }))
    scheduled.publish({ taskId, peerId: hostId, parents: out.length, durationMs: performance.now() - started })
    return { task: this.taskInfo(task, digestsFrom), parents: out, grant: new Uint8Array(0) }
  }

  /**
   * Is the seed's uplink still on the swarm's critical path: is it still fetching, or does it
   * hold a piece no peer has yet? Once every piece is out, its spare uplink is offered in full,
   * as a fallback for pieces whose holders are slow (daemons still prefer peers).
   */
  private seedNeeded(task: TaskState, seed: Candidate, holders: Uint32Array): boolean {
    if (task.state !== 'succeeded' || seed.peer.state !== 'succeeded') return true
    for (const n of seed.peer.bitmap.pieces()) if ((holders[n] ?? 0) <= 1) return true
    return false
  }

  /**
   * The seed's pieces as offered to one child, while the seed is needed (seedNeeded). The seed's uplink is one link shared by every
   * child of the task, so it should send each piece about once and let the children pass it
   * on (BitTorrent's super-seeding). Offered in full, every child rushes for the same newest
   * piece, the only one nobody else has: with 8 hosts the seed sent 4× the blob. So a child
   * sees only the seed-only pieces granted to it (at most SEED_GRANTS_PER_CHILD at a time,
   * each to one child until that child reports it or the grant lapses); pieces another
   * offered parent holds it gets from that parent.
   */
  private sharedSeedBitmap(task: TaskState, seed: Candidate, hostId: string, mine: Bitmap, offered: Candidate[], now: number): Bitmap {
    let grants = this.seedGrants.get(task)
    if (grants === undefined) {
      grants = new Map()
      this.seedGrants.set(task, grants)
    }
    const pieceMs = seed.host.bandwidth > 0 && task.pieceSize > 0 ? (task.pieceSize / seed.host.bandwidth) * 1000 : 0
    const lapseMs = Math.max(SEED_GRANT_MIN_MS, 4 * pieceMs)
    const seedHas = seed.peer.bitmap
    const live = (g: SeedGrant, num: number): boolean => {
      const holder = task.peers.get(g.hostId)
      if (holder?.state !== 'running' || holder.bitmap.has(num)) return false
      // A piece the seed is still fetching is on its way to the child (streamed live): its
      // clock starts when the seed has it.
      if (!seedHas.has(num)) return true
      g.at = Math.max(g.at, g.availableAt ??= now)
      return now - g.at < lapseMs
    }
    const heldBy = new Map<string, number>()
    for (const [num, g] of grants) {
      if (!live(g, num)) grants.delete(num)
      else heldBy.set(g.hostId, (heldBy.get(g.hostId) ?? 0) + 1)
    }
    let held = heldBy.get(hostId) ?? 0
    let children = 0
    // The fewest grants another running child holds: a child is never handed a new one while
    // it is more than one ahead of it, so that the seed's pieces go round the children in
    // turn — each then has pieces the others lack, and every child's uplink works from the
    // start (handed out in blocks, the first child to ask got the first pieces and everyone
    // queued on its uplink).
    let fewestOther = Number.POSITIVE_INFINITY
    for (const p of task.peers.values()) {
      if (p.state !== 'running' || p.hostId === seed.peer.hostId) continue
      children++
      if (p.hostId !== hostId) fewestOther = Math.min(fewestOther, heldBy.get(p.hostId) ?? 0)
    }
    const window = Math.max(SEED_WINDOW_PIECES, task.pieceSize > 0 ? Math.floor(SEED_WINDOW_BYTES / task.pieceSize) : 0)
    const perChild = Math.max(SEED_GRANTS_PER_CHILD, Math.floor(window / Math.max(1, children)))
    // A lone child takes a whole window at once; among several, one new grant per call.
    let taken = 0
    const mayTake = (): boolean => held < perChild && (children <= 1 || (held <= fewestOther && taken === 0))
    const others = offered.filter((c) => c !== seed)
    // Pieces the seed holds, then (while it still fetches from the origin) the ones it will
    // have: both in ascending order, the order the seed reads the origin in.
    const coming = task.state === 'running' && seed.peer.state === 'running' && task.pieceCount > 0
    const shown = new Bitmap()
    const consider = (num: number): void => {
      if (mine.has(num) || others.some((c) => c.peer.bitmap.has(num))) return
      const g = grants.get(num)
      if (g === undefined) {
        if (!mayTake()) return
        grants.set(num, { hostId, at: now })
        held++
        taken++
      } else if (g.hostId !== hostId) {
        return
      }
      shown.set(num)
    }
    for (const num of seedHas.pieces()) consider(num)
    if (coming) {
      for (let num = 0; num < task.pieceCount && mayTake(); num++) if (!seedHas.has(num)) consider(num)
      // Grants already held on coming pieces are shown again even when the window is full.
      for (const [num, g] of grants) if (g.hostId === hostId && !seedHas.has(num)) shown.set(num)
    }
    return shown
  }

  leaveTask(hostId: string, taskId: string): void {
    const task = this.tasks.get(taskId)
    if (task?.peers.delete(hostId) === true) this.persist.deletePeer(taskId, hostId)
  }

  private touchHost(hostId: string): void {
    const host = this.hosts.get(hostId)
    if (host === undefined) return
    host.lastSeen = Date.now()
    this.persist.markHost(host)
  }

  /** What a peer learns of a task; piece digests from `digestsFrom` on (it holds the ones before). */
  taskInfo(task: TaskState, digestsFrom = 0): TaskInfo {
    const pieces: TaskInfo['pieces'] = []
    for (const [num, p] of task.pieces) if (num >= digestsFrom) pieces.push({ num, length: p.length, sha256: p.sha256 })
    return {
      id: task.id,
      url: task.url,
      state: task.state,
      contentLength: task.contentLength,
      pieceSize: task.pieceSize,
      pieceCount: task.pieceCount,
      pieces,
      sha256: task.sha256,
      error: task.error,
      backToSource: false,
      grant: new Uint8Array(0),
      sourcePeer: task.backSourcePeer
    }
  }
}
