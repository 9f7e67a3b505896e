// A supernode as the simulation sees it: one event loop serving scheduler calls one at a time
// (a FIFO queue, each call charged its measured CPU cost), the pressure gauge of the real
// supernode fed with that loop's utilisation and lag, and per owned task the swarm as the
// scheduler knows it (bitmaps as reported, holder counts and lists, the seed's pieces and its
// grants). `old` is the scheduler before issue 15: no pace, no busy answers, and a getParents
// whose cost grows with the task's peers.

import { paceShare, PressureGauge, spreadPace } from '@naiad/supernode'

import type { Costs } from './costs.ts'
import type { Clock } from './events.ts'
import type { NetNode } from './network.ts'

export type CallKind = 'announce' | 'register' | 'report' | 'parents'

export interface Answer {
  busy: boolean
  paceMs: number
}

export interface Call {
  kind: CallKind
  /** Piece results a report carries. */
  results: number
  /** Peers of the task a getParents reads (the old scheduler's cost). */
  peers: number
  /** A registration from a daemon that waits out SN_ERR_BUSY (SchedulerRequest.features). */
  waitsBusy?: boolean
  /** The calling daemon's name: the real supernode stretches each daemon's pace by a share fixed per peer ID. */
  from: string
  /** When it reached the supernode (set by submit). */
  queuedAt?: number
  /** Runs when the supernode has done the call's work (reports change the swarm then). */
  serve?: () => void
  answer: (a: Answer) => void
}

/** Seed-only pieces one child may hold at a time, at least, and bytes in all, at least 16 pieces (see supernode/src/scheduler/seed-grants.ts). */
const SEED_GRANTS_PER_CHILD = 2
const SEED_WINDOW_BYTES = 64 * 1024 * 1024
const SEED_WINDOW_PIECES = 16
const SEED_GRANT_MIN_S = 2
const SAMPLE_S = 0.1
/** Width of a timeline bucket. */
const TIMELINE_S = 5

export class SupernodeModel {
  readonly name: string
  readonly node: NetNode
  readonly gauge: PressureGauge | undefined
  /** CPU seconds of scheduler work done, calls served, get_parents put off. */
  busyS = 0
  calls = 0
  deferred = 0
  /** Per 5 s: utilisation (summed over samples), the largest pace. */
  readonly timeline: Array<{ t: number; util: number; paceMs: number; samples: number }> = []
  /** The seed's upload rate as its children measure it, bytes/s (EWMA, as HostState.bandwidth); 0 while unknown. */
  seedRate = 0
  /** Largest pace asked for, and the largest queueing delay a call saw. */
  maxPaceMs = 0
  maxWaitS = 0
  private readonly clock: Clock
  private readonly costs: Costs
  /** Calls waiting for the loop, in arrival order (from `head`), and the work they would take at full cost. */
  private readonly queue: Call[] = []
  private head = 0
  private queuedS = 0
  /** The loop is serving a call, which ends at `currentEnd`. */
  private running = false
  private currentEnd = 0
  private sampledBusy = 0
  private sampling = false
  private readonly shares = new Map<string, number>()

  /** `gauge`: options for the real gauge (its defaults unless given), e.g. a higher `maxPaceMs`. */
  constructor(clock: Clock, costs: Costs, name: string, node: NetNode, old: boolean, gauge: ConstructorParameters<typeof PressureGauge>[0] = {}) {
    this.clock = clock
    this.costs = costs
    this.name = name
    this.node = node
    this.gauge = old ? undefined : new PressureGauge(gauge)
  }

  get paceMs(): number {
    return this.gauge?.paceMs ?? 0
  }

  get now(): number {
    return this.clock.now
  }

  /** A child reported a piece from the seed: `bytes` in `seconds`. */
  seedMeasured(bytes: number, seconds: number): void {
    if (seconds <= 0) return
    const bw = bytes / seconds
    this.seedRate = this.seedRate === 0 ? bw : this.seedRate * 0.8 + bw * 0.2
  }

  /**
   * Queues a call; the loop serves calls one at a time, in arrival order, and decides as it
   * reads each one whether the scheduler is too busy for it (SN_ERR_BUSY, answered for the
   * call's transport cost alone): get_parents always, a registration when the daemon says it
   * waits out a busy answer (its client's features).
   */
  submit(call: Call): void {
    if (!this.sampling && this.gauge !== undefined) this.sample()
    call.queuedAt = this.clock.now
    this.queue.push(call)
    this.queuedS += this.cost(call)
    if (!this.running) this.next()
  }

  private next(): void {
    if (this.head >= this.queue.length) {
      this.queue.length = 0
      this.head = 0
      this.running = false
      return
    }
    this.running = true
    const call = this.queue[this.head]
    this.queue[this.head++] = undefined as unknown as Call
    const full = this.cost(call)
    this.queuedS -= full
    const now = this.clock.now
    const busy = (call.kind === 'parents' || (call.kind === 'register' && call.waitsBusy === true)) && this.gauge?.busy() === true
    const cost = busy ? this.costs.callS : full
    this.maxWaitS = Math.max(this.maxWaitS, now - (call.queuedAt ?? now))
    this.busyS += cost
    this.calls++
    if (busy) this.deferred++
    this.currentEnd = now + cost
    this.clock.at(this.currentEnd, () => {
      if (!busy) call.serve?.()
      const paceMs = this.gauge === undefined ? 0 : spreadPace(busy ? Math.max(500, this.paceMs) : this.paceMs, this.shareOf(call.from))
      this.maxPaceMs = Math.max(this.maxPaceMs, paceMs)
      call.answer({ busy, paceMs })
      this.next()
    })
  }

  /** paceShare hashes the peer's ID: once per daemon, not once per answer. */
  private shareOf(from: string): number {
    let share = this.shares.get(from)
    if (share === undefined) {
      share = paceShare(from)
      this.shares.set(from, share)
    }
    return share
  }

  private cost(call: Call): number {
    const c = this.costs
    switch (call.kind) {
      case 'announce': return c.callS
      case 'register': return c.callS + c.registerS
      case 'report': return c.callS + call.results * c.resultS
      case 'parents': return c.callS + (this.gauge === undefined ? c.oldParentsBaseS + call.peers * c.oldParentsPerPeerS : c.parentsS)
    }
  }

  /** The gauge's sample: utilisation of the last 100 ms and how late a timer would fire (the work queued ahead). */
  private sample(): void {
    this.sampling = true
    // A call's work is charged when the loop starts it: what lies beyond now is not yet done.
    // A timer would fire after the call running now and every call queued before it.
    const ahead = this.running ? Math.max(0, this.currentEnd - this.clock.now) : 0
    const lag = ahead + this.queuedS
    const util = Math.min(1, Math.max(0, this.busyS - ahead - this.sampledBusy) / SAMPLE_S)
    this.sampledBusy = this.busyS - ahead
    this.gauge!.sample(util, lag * 1000)
    const bucket = Math.floor(this.clock.now / TIMELINE_S)
    const b = this.timeline[bucket] ??= { t: bucket * TIMELINE_S, util: 0, paceMs: 0, samples: 0 }
    b.util += util
    b.paceMs = Math.max(b.paceMs, this.gauge!.paceMs)
    b.samples++
    // Keep sampling while there is work, and for a while after (the pace must come down).
    if (util > 0 || this.gauge!.paceMs > 0 || lag > 0) this.clock.after(SAMPLE_S, () => this.sample())
    else this.sampling = false
  }
}

/** Packed piece bitmaps: bit p of word p >> 5. */
export const has = (bits: Uint32Array, p: number): boolean => (bits[p >>> 5] & (1 << (p & 31))) !== 0
const set = (bits: Uint32Array, p: number): void => { bits[p >>> 5] |= 1 << (p & 31) }

function popcount(x: number): number {
  x -= (x >>> 1) & 0x55555555
  x = (x & 0x33333333) + ((x >>> 2) & 0x33333333)
  return (((x + (x >>> 4)) & 0x0f0f0f0f) * 0x01010101) >>> 24
}

export interface ParentView {
  /** A daemon's index, or -1 for the seed. */
  peer: number
  /** Pieces it offers (a copy, as of the answer). */
  bits: Uint32Array
}

/** One task as its owner's scheduler knows it. */
export class TaskView {
  readonly id: number
  readonly pieceCount: number
  readonly pieceBytes: number
  readonly words: number
  readonly owner: SupernodeModel
  /** Per daemon, pieces as reported. */
  readonly reported = new Map<number, Uint32Array>()
  /** Peers (not the seed) that reported each piece, and how many. */
  readonly holders: Uint32Array
  readonly lists: number[][]
  /** The seed: pieces it holds, and callbacks waiting for a piece to arrive. */
  readonly seedHas: Uint32Array
  seedCount = 0
  /** When the seed had the whole task (-1: not yet). */
  seedDoneAt = -1
  private readonly waiting = new Map<number, Array<() => void>>()
  /** Daemons downloading (registered, not finished), and every daemon that registered. */
  readonly running = new Set<number>()
  members = 0
  private readonly grants = new Map<number, { child: number; at: number; availableAt?: number }>()
  private readonly random: () => number
  private readonly empty: Uint32Array

  constructor(id: number, pieceCount: number, pieceBytes: number, owner: SupernodeModel, random: () => number) {
    this.id = id
    this.pieceCount = pieceCount
    this.pieceBytes = pieceBytes
    this.words = Math.ceil(pieceCount / 32)
    this.owner = owner
    this.holders = new Uint32Array(pieceCount)
    this.lists = Array.from({ length: pieceCount }, () => [])
    this.seedHas = new Uint32Array(this.words)
    this.empty = new Uint32Array(this.words)
    this.random = random
  }

  /** The bits of word `w` that are pieces (the last word's high bits are not). */
  private tail(w: number): number {
    const left = this.pieceCount - (w << 5)
    return left >= 32 ? -1 : (1 << left) - 1
  }

  get seedDone(): boolean {
    return this.seedCount === this.pieceCount
  }

  /** A report of daemon `d` has been served. */
  report(d: number, pieces: number[]): void {
    let bits = this.reported.get(d)
    if (bits === undefined) {
      bits = new Uint32Array(this.words)
      this.reported.set(d, bits)
    }
    for (const p of pieces) {
      if (has(bits, p)) continue
      set(bits, p)
      this.holders[p]++
      this.lists[p].push(d)
    }
  }

  seedGot(p: number): void {
    set(this.seedHas, p)
    this.seedCount++
    if (this.seedDone) this.seedDoneAt = this.owner.now
    for (const fn of this.waiting.get(p) ?? []) fn()
    this.waiting.delete(p)
  }

  /** Runs `fn` once the seed holds piece `p` (a live request while the origin still sends it). */
  whenSeedHas(p: number, fn: () => void): void {
    if (has(this.seedHas, p)) fn()
    else this.waiting.set(p, [...(this.waiting.get(p) ?? []), fn])
  }

  /**
   * getParents for daemon `d`, after the scheduler: a pool of holders of the rarest pieces d
   * lacks (then of any it lacks), scored by how many of those pieces each holds and whether
   * it has a free upload slot, the best eight; and the seed with the pieces granted to `d`.
   */
  parents(d: number, now: number, hasFreeSlot: (peer: number) => boolean): ParentView[] {
    const mine = this.reported.get(d) ?? this.empty
    const rare: Array<{ p: number; key: number }> = []
    const missing: number[] = []
    for (let p = 0; p < this.pieceCount; p++) {
      if (this.holders[p] === 0 || has(mine, p)) continue
      missing.push(p)
      const key = this.holders[p] + this.random() * 0.5
      if (rare.length < 8) rare.push({ p, key })
      else {
        let worst = 0
        for (let k = 1; k < 8; k++) if (rare[k].key > rare[worst].key) worst = k
        if (key < rare[worst].key) rare[worst] = { p, key }
      }
    }
    const pool = new Set<number>()
    const draw = (p: number, n: number): void => {
      const list = this.lists[p]
      for (let k = 0; k < n; k++) {
        const peer = list[Math.floor(this.random() * list.length)]
        if (peer !== d) pool.add(peer)
      }
    }
    for (const { p } of rare) draw(p, 3)
    for (let k = 0; k < 8 && missing.length > 0; k++) draw(missing[Math.floor(this.random() * missing.length)], 1)
    const scored: Array<{ peer: number; score: number }> = []
    for (const peer of pool) {
      const bits = this.reported.get(peer)!
      let useful = 0
      for (let w = 0; w < this.words; w++) useful += popcount(bits[w] & ~mine[w])
      if (useful === 0) continue
      scored.push({ peer, score: 0.35 * Math.min(1, useful / Math.max(1, missing.length)) + (hasFreeSlot(peer) ? 0.2 : 0) + this.random() * 0.01 })
    }
    scored.sort((a, b) => b.score - a.score)
    const out: ParentView[] = scored.slice(0, 8).map(({ peer }) => ({ peer, bits: this.reported.get(peer)!.slice() }))
    const seed = this.seedBits(d, now, out)
    if (seed !== undefined) out.push({ peer: -1, bits: seed })
    return out
  }

  /** The seed's pieces as offered to `d` (seed-grants.ts), or undefined when it offers none. */
  private seedBits(d: number, now: number, offered: ParentView[]): Uint32Array | undefined {
    const out = new Uint32Array(this.words)
    const mine = this.reported.get(d) ?? this.empty
    let needed = !this.seedDone
    for (let p = 0; p < this.pieceCount && !needed; p++) if (this.holders[p] === 0) needed = true
    if (!needed) {
      out.set(this.seedHas)
      return out
    }
    // A grant lapses after 2 s, or four times the seed's piece time as its children measure it.
    const lapse = Math.max(SEED_GRANT_MIN_S, this.owner.seedRate > 0 ? 4 * this.pieceBytes / this.owner.seedRate : 0)
    const heldBy = new Map<number, number>()
    for (const [p, g] of this.grants) {
      const alive = this.running.has(g.child) && !has(this.reported.get(g.child) ?? this.empty, p) &&
        (!has(this.seedHas, p) || now - Math.max(g.at, g.availableAt ??= now) < lapse)
      if (!alive) this.grants.delete(p)
      else heldBy.set(g.child, (heldBy.get(g.child) ?? 0) + 1)
    }
    let held = heldBy.get(d) ?? 0
    // Round the children in turn: a child is at most one grant ahead of the least served other.
    const children = this.running.size
    const others = children - (this.running.has(d) ? 1 : 0)
    let fewestOther = others > heldBy.size - (heldBy.has(d) ? 1 : 0) ? 0 : Number.POSITIVE_INFINITY
    if (fewestOther !== 0) for (const [c, n] of heldBy) if (c !== d) fewestOther = Math.min(fewestOther, n)
    const window = Math.max(SEED_WINDOW_PIECES, Math.floor(SEED_WINDOW_BYTES / this.pieceBytes))
    const perChild = Math.max(SEED_GRANTS_PER_CHILD, Math.floor(window / Math.max(1, children)))
    let taken = 0
    const mayTake = (): boolean => held < perChild && (children <= 1 || (held <= fewestOther && taken === 0))
    let shown = 0
    // Pieces d holds or another parent offers are passed over: only the rest are looked at.
    const seen = mine.slice()
    for (const o of offered) for (let w = 0; w < this.words; w++) seen[w] |= o.bits[w]
    const consider = (p: number): void => {
      const g = this.grants.get(p)
      if (g === undefined) {
        if (!mayTake()) return
        this.grants.set(p, { child: d, at: now })
        held++
        taken++
      } else if (g.child !== d) {
        return
      }
      set(out, p)
      shown++
    }
    for (let w = 0; w < this.words; w++) {
      for (let bits = this.seedHas[w] & ~seen[w]; bits !== 0; bits &= bits - 1) consider((w << 5) + 31 - Math.clz32(bits & -bits))
    }
    if (!this.seedDone) {
      for (let w = 0; w < this.words && mayTake(); w++) {
        for (let bits = ~this.seedHas[w] & ~seen[w] & this.tail(w); bits !== 0 && mayTake(); bits &= bits - 1) consider((w << 5) + 31 - Math.clz32(bits & -bits))
      }
      for (const [p, g] of this.grants) if (g.child === d && !has(this.seedHas, p)) { set(out, p); shown++ }
    }
    return shown > 0 ? out : undefined
  }
}
