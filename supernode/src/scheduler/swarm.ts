// One task's swarm, indexed for getParents: how many peers hold each piece, which peers
// hold it (the candidate sets), how many children each parent serves now, how many peers
// are still downloading, and the piece digests in the order they were published. Every
// change to a task's peers goes through here, so a call to getParents reads these counts
// instead of walking every peer's bitmap.
//
// Everything here is derived from what peers announced (registrations, piece reports) and
// from the task's published digests: it lives in the memory of the supernode that owns the
// task and is rebuilt from the peers' state (`new Swarm(task)`), e.g. after they re-announce
// to a new owner. Nothing in it needs to be persisted or shared.

import { randomInt } from 'node:crypto'

import type { Bitmap, PieceDigest } from '@naiad/proto'

import type { HostState, PeerState, TaskState } from './state.ts'

/** How long a parent edge counts towards its parent's children (its busy upload slots). */
export const EDGE_WINDOW_MS = 2_000

/** Expired edges a parent's children map may keep beyond its live ones (see Swarm.children). */
const EDGE_SLACK = 8

/** Piece numbers stay below this in a sort key (MAX_PIECES of the scheduler is 2^20). */
const PIECE_KEY = 2 ** 21

/** A holder list's first array, in entries (it doubles when full). */
const LIST_START = 16

/** A holder list is compacted when it holds this many more entries than live holders (and twice as many). */
const COMPACT_SLACK = 16

/**
 * A holder-list entry is `generation * SLOT_SPAN + slot`: the entry is live while its slot's
 * generation is unchanged, so the walk decides that from two contiguous arrays instead of
 * reading the peer's bitmap (a cache miss per entry at 10,000 peers). Exact in a double
 * while a slot's generation stays below 2^29 (one step per departure or replaced bitmap).
 */
const SLOT_SPAN = 2 ** 24

/** HostRows flags: the host is known and has not left; the host is a seed (no last-seen limit). */
const HOST_PRESENT = 1
const HOST_SEED = 2

/**
 * What gather's eligibility test reads of each host (present, seed, last seen, failures in a
 * row), one row per host in typed arrays shared by every task's swarm. The HostState objects
 * stay the truth: a row is filled from one when first asked for and refreshed by `sync`,
 * which the scheduler calls wherever it changes one of those fields. The scheduler checks
 * every candidate against the HostState again, so a row that lagged could only leave a peer
 * out of one pool, never offer an ineligible one.
 */
export class HostRows {
  lastSeen = new Float64Array(64)
  flags = new Uint8Array(64)
  failures = new Uint32Array(64)
  private readonly hosts: ReadonlyMap<string, HostState>
  private readonly rowOf = new Map<string, number>()

  constructor(hosts: ReadonlyMap<string, HostState>) {
    this.hosts = hosts
  }

  /** The host's row, filled from its current state when new. */
  rowFor(hostId: string): number {
    let row = this.rowOf.get(hostId)
    if (row === undefined) {
      row = this.rowOf.size
      this.rowOf.set(hostId, row)
      if (row >= this.flags.length) this.grow(row + 1)
      this.fill(row, this.hosts.get(hostId))
    }
    return row
  }

  /** The host's fields changed (or it was added); a host no swarm has asked for yet is filled later. */
  sync(hostId: string, host: HostState | undefined = this.hosts.get(hostId)): void {
    const row = this.rowOf.get(hostId)
    if (row !== undefined) this.fill(row, host)
  }

  private fill(row: number, host: HostState | undefined): void {
    this.flags[row] = host === undefined || host.gone ? 0 : HOST_PRESENT | (host.info.isSeed ? HOST_SEED : 0)
    this.lastSeen[row] = host?.lastSeen ?? 0
    this.failures[row] = host?.consecutiveFailures ?? 0
  }

  private grow(min: number): void {
    const size = Math.max(min, this.flags.length * 2)
    this.lastSeen = grown(this.lastSeen, new Float64Array(size))
    this.flags = grown(this.flags, new Uint8Array(size))
    this.failures = grown(this.failures, new Uint32Array(size))
  }
}

/** Which peers gather may take, besides the requester itself (the scheduler's eligibility test). */
export interface GatherRule {
  now: number
  /** Hosts silent for longer are left out (seeds excepted). */
  ttlMs: number
  /** Hosts with this many failures in a row are left out. */
  maxFailures: number
  /** Hosts the requester blocked (it got a corrupt piece from them). */
  blocked: ReadonlySet<string> | undefined
}

export class Swarm {
  /** Peers holding each piece: every peer of the task, whatever its state (getParents's rarity weights). */
  holders = new Uint32Array(64)
  /** Peers of the task in state running (the seed included when it runs). */
  running = 0
  /**
   * Names the current set of published digests: a random number, new whenever the task's
   * digests start over (a fresh task, a reset after failure, a restarted supernode). A daemon
   * that names the epoch and how many digests it holds is sent only the ones after them.
   */
  epoch = 0

  private readonly task: TaskState
  private readonly rows: HostRows
  /**
   * Per piece, the entries (generation and slot, see SLOT_SPAN) of the peers that set its
   * bit, `lists[n][0 .. listLength[n])`; may hold stale ones. A list's array only grows:
   * compaction works in place. As JS arrays, each compaction shrank a list to its live
   * entries and the pushes after it copied the list into a larger array twice before the
   * next one: copies of long-lived lists, which outlived the young generation.
   */
  private readonly lists: Array<Float64Array | undefined> = []
  private listLength = new Uint32Array(64)
  private readonly slots: Array<PeerState | undefined> = []
  private readonly slotOf = new Map<string, number>()
  private readonly free: number[] = []
  /** Per slot, the stamp of the last gather that took it (each peer once per call). */
  private seen = new Uint32Array(64)
  /** Per slot, its generation: a step when the peer leaves or its bitmap is replaced (older entries go stale). */
  private gen = new Float64Array(64)
  /** Per slot, 1 while its peer is failed. */
  private failed = new Uint8Array(64)
  /** Per slot, its host's row in `rows`. */
  private hostRow = new Int32Array(64)
  private stamp = 0
  /** gather's sort keys. */
  private keys = new Float64Array(64)
  /** Parent → child → when the child last fetched a piece from it (the reverse of each peer's `parents`). */
  private readonly childrenOf = new Map<string, Map<string, number>>()
  /** The task's digests, in the order they were published. */
  private digests: PieceDigest[] = []

  /** `rows`: the scheduler's host rows (by default rows of no host, when nothing gathers). */
  constructor(task: TaskState, rows: HostRows = new HostRows(new Map())) {
    this.task = task
    this.rows = rows
    this.epoch = newEpoch()
    for (const peer of task.peers.values()) this.index(peer)
    for (const [num, p] of task.pieces) this.digests.push({ num, length: p.length, sha256: p.sha256 })
  }

  /** Adds a peer, or replaces the peer of the same host (keeping or replacing its bitmap). */
  put(peer: PeerState): void {
    const old = this.task.peers.get(peer.hostId)
    if (old !== undefined) {
      if (old.parents !== peer.parents) {
        for (const parent of old.parents.keys()) this.childrenOf.get(parent)?.delete(peer.hostId)
        for (const [parent, at] of peer.parents) this.addEdge(peer, parent, at)
      }
      if (old.state === 'running') this.running--
      const slot = this.slotOf.get(peer.hostId)!
      this.task.peers.set(peer.hostId, peer)
      this.slots[slot] = peer
      this.failed[slot] = peer.state === 'failed' ? 1 : 0
      if (old.bitmap !== peer.bitmap) {
        this.unholdAll(old.bitmap)
        this.gen[slot]++
        this.holdAll(peer, slot)
      }
      if (peer.state === 'running') this.running++
      return
    }
    this.task.peers.set(peer.hostId, peer)
    this.index(peer)
  }

  /** Removes a host's peer; false when it had none. */
  remove(hostId: string): boolean {
    const peer = this.task.peers.get(hostId)
    if (peer === undefined) return false
    this.task.peers.delete(hostId)
    if (peer.state === 'running') this.running--
    this.unholdAll(peer.bitmap)
    for (const parent of peer.parents.keys()) this.childrenOf.get(parent)?.delete(hostId)
    const slot = this.slotOf.get(hostId)!
    this.slotOf.delete(hostId)
    this.slots[slot] = undefined
    this.gen[slot]++
    this.free.push(slot)
    return true
  }

  /** Marks piece `num` held by `peer`; false when it was already. */
  setPiece(peer: PeerState, num: number): boolean {
    if (peer.bitmap.has(num)) return false
    peer.bitmap.set(num)
    this.hold(num, this.slotOf.get(peer.hostId)!)
    return true
  }

  setState(peer: PeerState, state: PeerState['state']): void {
    if (peer.state === state) return
    if (peer.state === 'running') this.running--
    if (state === 'running') this.running++
    peer.state = state
    const slot = this.slotOf.get(peer.hostId)
    if (slot !== undefined && this.slots[slot] === peer) this.failed[slot] = state === 'failed' ? 1 : 0
  }

  /** `child` fetched a piece from `parentId` at `at`. */
  addEdge(child: PeerState, parentId: string, at: number): void {
    child.parents.set(parentId, at)
    let edges = this.childrenOf.get(parentId)
    if (edges === undefined) {
      // Parents that left or stopped serving leave maps behind; drop the expired ones now and then.
      if (this.childrenOf.size > 2 * this.task.peers.size + 64) for (const [parent, old] of [...this.childrenOf]) this.prune(parent, old, at)
      edges = new Map()
      this.childrenOf.set(parentId, edges)
    }
    edges.set(child.hostId, at)
  }

  /** `peer` no longer counts as anybody's child (it finished, failed, or starts over). */
  clearEdges(peer: PeerState): void {
    for (const parent of peer.parents.keys()) this.childrenOf.get(parent)?.delete(peer.hostId)
    peer.parents.clear()
  }

  /**
   * Peers of the task that fetched from `parentId` within the edge window before `now`
   * (each child once, by its latest piece from it). Expired edges are dropped only once they
   * outnumber the live ones (and a few more), and a parent's map stays when it empties: every
   * drop and re-add, and every map made again, was a new hash table that lived long enough
   * to be promoted (a tenth of what outlived the young generation at 10,000 peers,
   * bench/README.md). The walk still costs at most twice the parent's recent children.
   */
  children(parentId: string, now: number): number {
    const edges = this.childrenOf.get(parentId)
    if (edges === undefined) return 0
    let n = 0
    for (const at of edges.values()) if (now - at < EDGE_WINDOW_MS) n++
    if (edges.size > 2 * n + EDGE_SLACK) this.prune(parentId, edges, now)
    return n
  }

  /** Drops a parent's expired edges, and its map when none are left. */
  private prune(parentId: string, edges: Map<string, number>, now: number): void {
    for (const [child, at] of edges) if (now - at >= EDGE_WINDOW_MS) edges.delete(child)
    if (edges.size === 0) this.childrenOf.delete(parentId)
  }

  addDigest(digest: PieceDigest): void {
    this.digests.push(digest)
  }

  /** The task's digests start over (the task failed and is reset): a new epoch. */
  resetDigests(): void {
    this.digests = []
    this.epoch = newEpoch()
  }

  /** Published digests from position `from` on, in publication order. */
  publishedFrom(from: number): PieceDigest[] {
    return from <= 0 ? this.digests.slice() : this.digests.slice(from)
  }

  get published(): number {
    return this.digests.length
  }

  /**
   * Up to `max` peers worth scoring for a requester holding `mine`: holders of the pieces it
   * lacks, the rarest pieces first (ties in random order), each list entered at a random
   * place so that every holder of a common piece gets its turn. `rule` rules out peers that
   * cannot be parents now, read from per-slot and per-host typed arrays only (see HostRows);
   * at most `budget` list entries are read, so the cost of a call does not grow with the swarm.
   */
  gather(mine: Bitmap, requester: string, max: number, budget: number, rule: GatherRule): PeerState[] {
    // Pieces the requester lacks that somebody holds, rarest first, ties in random order:
    // each as one number (holders, a random tiebreak, the piece) sorted natively.
    const bits = mine.view()
    const holders = this.holders
    // Scratch kept for every call (a new one each time was a kilobyte outside V8's heap, see Scheduler.weightsFor).
    if (this.keys.length < holders.length) this.keys = new Float64Array(holders.length)
    const keys = this.keys
    let m = 0
    for (let n = 0; n < holders.length; n++) {
      if (holders[n] === 0) continue
      const byte = n >> 3
      if (byte < bits.length && (bits[byte] & (1 << (n & 7))) !== 0) continue
      keys[m++] = (holders[n] * 1024 + randomIndex(1024)) * PIECE_KEY + n
    }
    const missing = keys.subarray(0, m).sort()
    if (++this.stamp === 0xffffffff) {
      this.seen.fill(0)
      this.stamp = 1
    }
    const out: PeerState[] = []
    const self = this.slotOf.get(requester)
    if (self !== undefined) this.seen[self] = this.stamp
    // First a few holders of each piece, rarest first, so that the pool covers several
    // rare pieces; then, if room is left, whoever else holds them.
    const perPiece = Math.max(4, Math.ceil(max / 8))
    for (let pass = 0; pass < 2 && out.length < max && budget > 0; pass++) {
      for (const key of missing) {
        budget = this.take(key % PIECE_KEY, pass === 0 ? perPiece : max, max, budget, out, rule)
        if (out.length >= max || budget <= 0) break
      }
    }
    return out
  }

  /** Takes up to `want` eligible, unseen holders of piece `n` into `out`; returns the budget left. */
  private take(n: number, want: number, max: number, budget: number, out: PeerState[], rule: GatherRule): number {
    const list = this.lists[n]
    let len = this.listLength[n]
    if (list === undefined || len === 0) return budget
    if (len > 2 * this.holders[n] + COMPACT_SLACK) len = this.compact(n)
    const { seen, stamp, gen, failed, hostRow } = this
    const { flags, lastSeen, failures } = this.rows
    const oldest = rule.now - rule.ttlMs
    const blocked = rule.blocked !== undefined && rule.blocked.size > 0 ? rule.blocked : undefined
    const start = randomIndex(len)
    let taken = 0
    for (let k = 0; k < len && budget > 0; k++) {
      budget--
      const entry = list[(start + k) % len]
      const slot = entry % SLOT_SPAN
      if (seen[slot] === stamp || gen[slot] !== (entry - slot) / SLOT_SPAN) continue
      seen[slot] = stamp
      // The scheduler's eligibility test, on contiguous arrays: not failed, host present, seen
      // within the TTL (seeds always), fewer than maxFailures failures in a row, not blocked.
      if (failed[slot] !== 0) continue
      const row = hostRow[slot]
      const f = flags[row]
      if ((f & HOST_PRESENT) === 0 || ((f & HOST_SEED) === 0 && lastSeen[row] < oldest) || failures[row] >= rule.maxFailures) continue
      const peer = this.slots[slot]!
      if (blocked?.has(peer.hostId) === true) continue
      out.push(peer)
      if (++taken >= want || out.length >= max) break
    }
    return budget
  }

  private index(peer: PeerState): void {
    const slot = this.free.pop() ?? this.slots.length
    this.slots[slot] = peer
    this.slotOf.set(peer.hostId, slot)
    if (slot >= this.seen.length) this.grow(slot + 1)
    this.failed[slot] = peer.state === 'failed' ? 1 : 0
    this.hostRow[slot] = this.rows.rowFor(peer.hostId)
    if (peer.state === 'running') this.running++
    this.holdAll(peer, slot)
    for (const [parent, at] of peer.parents) this.addEdge(peer, parent, at)
  }

  private grow(min: number): void {
    const size = Math.max(min, this.seen.length * 2)
    this.seen = grown(this.seen, new Uint32Array(size))
    this.gen = grown(this.gen, new Float64Array(size))
    this.failed = grown(this.failed, new Uint8Array(size))
    this.hostRow = grown(this.hostRow, new Int32Array(size))
  }

  private holdAll(peer: PeerState, slot: number): void {
    const bits = peer.bitmap.view()
    for (let i = 0; i < bits.length; i++) {
      const b = bits[i]
      if (b === 0) continue
      for (let j = 0; j < 8; j++) if ((b & (1 << j)) !== 0) this.hold(i * 8 + j, slot)
    }
  }

  /** Adds the peer in `slot` (its current generation) to piece `num`'s holders. */
  private hold(num: number, slot: number): void {
    if (num >= this.holders.length) {
      const size = Math.max(num + 1, this.holders.length * 2)
      this.holders = grown(this.holders, new Uint32Array(size))
      this.listLength = grown(this.listLength, new Uint32Array(size))
    }
    this.holders[num]++
    let list = this.lists[num]
    const len = this.listLength[num]
    if (list === undefined || len === list.length) {
      list = list === undefined ? new Float64Array(LIST_START) : grown(list, new Float64Array(list.length * 2))
      this.lists[num] = list
    }
    list[len] = this.gen[slot] * SLOT_SPAN + slot
    this.listLength[num] = len + 1
    if (len + 1 > 2 * this.holders[num] + COMPACT_SLACK) this.compact(num)
  }

  private unholdAll(bitmap: Bitmap): void {
    const bits = bitmap.view()
    for (let i = 0; i < bits.length; i++) {
      const b = bits[i]
      if (b === 0) continue
      for (let j = 0; j < 8; j++) if ((b & (1 << j)) !== 0) this.holders[i * 8 + j]--
    }
  }

  /** Drops stale and repeated entries from piece `num`'s holder list; returns its new length. */
  private compact(num: number): number {
    const list = this.lists[num]!
    const len = this.listLength[num]
    // Not the gather's stamps: a compaction may run in the middle of a gather.
    const kept = new Set<number>()
    let w = 0
    for (let r = 0; r < len; r++) {
      const entry = list[r]
      const slot = entry % SLOT_SPAN
      if (kept.has(slot) || this.gen[slot] !== (entry - slot) / SLOT_SPAN) continue
      kept.add(slot)
      list[w++] = entry
    }
    this.listLength[num] = w
    return w
  }
}

/** `next` (a larger array of the same kind) holding `old`'s values first. */
function grown<A extends Float64Array | Uint32Array | Int32Array | Uint8Array>(old: A, next: A): A {
  next.set(old)
  return next
}

function newEpoch(): number {
  return randomInt(1, 0xffffffff)
}

/** A random index below n (n ≥ 1); Math.random is enough to spread load. */
function randomIndex(n: number): number {
  return Math.floor(Math.random() * n)
}
