// Bytes on the wire: every node has an uplink, a downlink and some CPU; a transfer (a flow)
// runs at the least of its sender's uplink share, its receiver's downlink share and the CPU
// share each end can spend on it (per-byte costs measured on the real data path). Shares are
// equal splits among the flows at a node, recomputed whenever a flow starts or ends there.
// An equal split is not max-min fair (a share a flow cannot use is not handed to the others),
// so the model errs towards slow when flows at a node are limited elsewhere.
//
// A flow runs at one end's share (the origin's uplink split among 40,000 downloads, a daemon's
// downlink among its 32): it joins that end's group, which counts the bytes each of its flows
// has had since the share last changed and keeps one completion event for the flow due first.
// A change at a node then costs a few heap steps rather than re-rating and re-timing every
// flow there. A flow moves between groups as the shares change, and has a rate and event of
// its own only until the next re-rating after its start, or when it shares a CPU pool; the
// rates are those of the equal split either way (only the sums' rounding differs).
//
// Nodes may share one CPU pool (the test machine, where every daemon and the supernode run on
// the same few cores): a flow then costs the pool its sender's and receiver's per-byte costs,
// and the pool's cores are split equally among all its flows.

import type { Clock, Timer } from './events.ts'

export interface CpuPool {
  cores: number
  flows: Set<Flow>
}

export interface NetNode {
  name: string
  /** Bytes per second. */
  up: number
  down: number
  /** Cores this node may spend on transfers (ignored when it is in a pool). */
  cores: number
  /** CPU seconds per byte sent and received. */
  sendCost: number
  recvCost: number
  pool?: CpuPool
  ups: Set<Flow>
  downs: Set<Flow>
  /** Of `ups` and `downs`: those in no group, and those in the other end's group. */
  freeUps: Set<Flow>
  freeDowns: Set<Flow>
  remoteUps: Set<Flow>
  remoteDowns: Set<Flow>
  /**
   * No flow in `remoteUps` was last found to stay in its group with a sending share here above
   * `sendMark` (nor in `remoteDowns` with a receiving share above `recvMark`): while the
   * share is at least that, they stay, and a re-rating here passes them over.
   */
  sendMark: number
  recvMark: number
  /** Its flows that run at its sending share, and at its receiving share (made when the first joins). */
  upGroup?: Group
  downGroup?: Group
  /** Bytes sent and received. */
  sent: number
  received: number
}

export interface Flow {
  id: number
  from: NetNode
  to: NetNode
  bytes: number
  /** Outside a group: bytes left at `at`, sent at `rate` since. */
  remaining: number
  rate: number
  at: number
  /** When its completion event is set for (it may fire early, see rerate). */
  eta: number
  /** That event, moved rather than set again when the flow speeds up. */
  timer: Timer | undefined
  /** The group it runs in; the other end's share when last rated; the group's count at which it is done, and its place in the group's heap. */
  group: Group | undefined
  other: number
  target: number
  hi: number
  onDone: () => void
}

/** Flows running at one end's share: `w` bytes each since the group began, as of `wAt`. */
interface Group {
  node: NetNode
  /** The node's sending share (else its receiving share). */
  sends: boolean
  share: number
  w: number
  wAt: number
  /** Members by `target` (then id): the first is due first (the clock's heap, for flows: a shared generic heap made runs 15 % slower). */
  heap: Flow[]
  timer: Timer | undefined
  /** No member's other end has a share below this (a bound: made exact when the share passes it). */
  minOther: number
}

export function netNode(name: string, o: Partial<NetNode> & { up: number; down: number }): NetNode {
  return {
    name, cores: Infinity, sendCost: 0, recvCost: 0, ups: new Set(), downs: new Set(), freeUps: new Set(), freeDowns: new Set(),
    remoteUps: new Set(), remoteDowns: new Set(), sendMark: 0, recvMark: 0, sent: 0, received: 0, ...o
  }
}

/** How long re-rating waits to take several changes at once. */
const COALESCE_S = 0.005

export class Network {
  private readonly clock: Clock
  private readonly dirty = new Set<NetNode>()
  private flushing = false
  private inFlush = false
  /** Groups a flush changed, to be retimed at its end. */
  private readonly touched = new Set<Group>()
  /** Flows started so far; times a flow joined a group, and left one before its end. */
  started = 0
  joined = 0
  left = 0
  /** Whether flows join groups (off: each keeps its own rate and event, as the tests compare). */
  private readonly groups: boolean

  constructor(clock: Clock, options: { groups?: boolean } = {}) {
    this.clock = clock
    this.groups = options.groups ?? true
  }

  /** Starts sending `bytes` from `from` to `to`; `onDone` runs when the last byte arrives. */
  send(from: NetNode, to: NetNode, bytes: number, onDone: () => void): Flow {
    const f: Flow = {
      id: this.started++, from, to, bytes, remaining: bytes, rate: 0, at: this.clock.now, eta: Infinity, timer: undefined,
      group: undefined, other: Infinity, target: 0, hi: -1, onDone
    }
    from.ups.add(f)
    from.freeUps.add(f)
    to.downs.add(f)
    to.freeDowns.add(f)
    from.pool?.flows.add(f)
    if (to.pool !== from.pool) to.pool?.flows.add(f)
    this.rerateAround(f)
    return f
  }

  private finish(f: Flow): void {
    f.from.ups.delete(f)
    f.from.freeUps.delete(f)
    f.from.remoteUps.delete(f)
    f.to.downs.delete(f)
    f.to.freeDowns.delete(f)
    f.to.remoteDowns.delete(f)
    f.from.pool?.flows.delete(f)
    f.to.pool?.flows.delete(f)
    f.from.sent += f.bytes
    f.to.received += f.bytes
    this.rerateAround(f)
    f.onDone()
  }

  /**
   * Flows whose rate may change when `f` starts or ends are those sharing a link or a CPU
   * with it. The flow itself gets its rate at once; the others are re-rated together a few
   * milliseconds later, so that a node with a thousand flows (the origin, a seed) is re-rated
   * once per burst of changes rather than once per change.
   */
  private rerateAround(f: Flow): void {
    this.rerate(f)
    this.dirty.add(f.from)
    this.dirty.add(f.to)
    if (this.flushing) return
    this.flushing = true
    this.clock.after(COALESCE_S, () => this.flush())
  }

  private flush(): void {
    this.flushing = false
    this.inFlush = true
    const now = this.clock.now
    const nodes = [...this.dirty]
    this.dirty.clear()
    // A group's share is its node's as of now: its members have run at the old one until now.
    const grown: Group[] = []
    const reshare = (g: Group | undefined, share: number): void => {
      if (g === undefined) return
      g.w += g.share * (now - g.wAt)
      g.wAt = now
      const was = g.share
      g.share = share
      if (g.share > was && g.minOther <= g.share) grown.push(g)
      this.touched.add(g)
    }
    for (const n of nodes) {
      reshare(n.upGroup, sendShare(n))
      reshare(n.downGroup, recvShare(n))
    }
    // Members a grown share would take past their other end's go to that end's group.
    for (const g of grown) {
      let min = Infinity
      for (const f of [...g.heap]) {
        if (f.other <= g.share) this.rerate(f)
        if (f.group === g) min = Math.min(min, f.other)
      }
      g.minOther = min
    }
    // Members of the node's groups whose other end changed are re-rated from that end, when
    // its share fell below what they were last found to stay in their group with.
    const pools = new Set<CpuPool>()
    for (const n of nodes) {
      if (n.pool !== undefined) pools.add(n.pool)
      const send = sendShare(n)
      if (send < n.sendMark) {
        for (const f of [...n.remoteUps]) this.rerate(f)
        n.sendMark = send
      }
      const recv = recvShare(n)
      if (recv < n.recvMark) {
        for (const f of [...n.remoteDowns]) this.rerate(f)
        n.recvMark = recv
      }
      // A flow here leaves these sets by joining a group, and none comes in: no copy needed.
      for (const f of n.freeUps) this.rerate(f)
      for (const f of n.freeDowns) this.rerate(f)
    }
    for (const p of pools) for (const f of p.flows) this.rerate(f)
    for (const g of this.touched) this.retime(g)
    this.touched.clear()
    this.inFlush = false
  }

  /**
   * Brings a flow's progress up to now at its old rate and gives it its new one. Its
   * completion event is moved only when it comes sooner; an event that fires early finds
   * bytes left and sets a new one (so slowing flows down costs no events). A flow joins the
   * group of the end whose share it runs at only at a re-rating of every flow there (a flush):
   * between flushes a group's members keep the share of the last.
   */
  private rerate(f: Flow): void {
    if (!f.from.ups.has(f)) return
    const send = sendShare(f.from)
    const recv = recvShare(f.to)
    const now = this.clock.now
    const g = f.group
    if (g !== undefined) {
      // Ties go to the sender's group, as below.
      if (g.sends ? send <= recv : recv < send) {
        this.stays(g, f, g.sends ? recv : send)
        return
      }
      f.remaining = Math.max(0, f.target - (g.w + g.share * (now - g.wAt)))
      f.at = now
      f.rate = g.share
      f.eta = Infinity
      this.left++
      this.leave(g, f)
    }
    const pooled = f.from.pool !== undefined || f.to.pool !== undefined
    const rate = pooled ? rateOf(f) : Math.min(send, recv)
    if (this.groups && this.inFlush && !pooled && rate > 0) {
      f.remaining = Math.max(0, f.remaining - f.rate * (now - f.at))
      f.at = now
      f.rate = rate
      if (send <= recv) this.join(f, f.from, true, recv)
      else this.join(f, f.to, false, send)
      return
    }
    if (rate === f.rate) return
    f.remaining = Math.max(0, f.remaining - f.rate * (now - f.at))
    f.at = now
    f.rate = rate
    const eta = rate > 0 ? now + f.remaining / rate : Infinity
    if (eta < f.eta) this.schedule(f, eta)
    else f.eta = Math.min(f.eta, eta)
  }

  private schedule(f: Flow, eta: number): void {
    f.eta = eta
    if (f.timer === undefined) f.timer = this.clock.at(eta, () => this.due(f))
    else this.clock.move(f.timer, eta)
  }

  private due(f: Flow): void {
    const left = f.remaining - f.rate * (this.clock.now - f.at)
    if (left > f.bytes * 1e-9 + 1e-6) {
      // The flow slowed down since this event was set.
      f.remaining = left
      f.at = this.clock.now
      f.eta = Infinity
      this.schedule(f, f.rate > 0 ? this.clock.now + left / f.rate : Infinity)
      return
    }
    this.finish(f)
  }

  // ------------------------------------------------------------ groups

  private join(f: Flow, n: NetNode, sends: boolean, other: number): void {
    let g = sends ? n.upGroup : n.downGroup
    if (g === undefined) {
      g = { node: n, sends, share: f.rate, w: 0, wAt: this.clock.now, heap: [], timer: undefined, minOther: Infinity }
      if (sends) n.upGroup = g
      else n.downGroup = g
    }
    if (f.timer !== undefined) this.clock.cancel(f.timer)
    f.eta = Infinity
    if (sends) {
      n.freeUps.delete(f)
      f.to.freeDowns.delete(f)
      f.to.remoteDowns.add(f)
    } else {
      n.freeDowns.delete(f)
      f.from.freeUps.delete(f)
      f.from.remoteUps.add(f)
    }
    this.joined++
    f.group = g
    f.target = g.w + g.share * (this.clock.now - g.wAt) + f.remaining
    this.stays(g, f, other)
    f.hi = g.heap.length
    g.heap.push(f)
    up(g.heap, f.hi)
    this.touched.add(g)
  }

  private leave(g: Group, f: Flow): void {
    const h = g.heap
    const i = f.hi
    const last = h.pop()!
    f.hi = -1
    f.group = undefined
    if (g.sends) {
      g.node.freeUps.add(f)
      f.to.remoteDowns.delete(f)
      f.to.freeDowns.add(f)
    } else {
      g.node.freeDowns.add(f)
      f.from.remoteUps.delete(f)
      f.from.freeUps.add(f)
    }
    if (last !== f) {
      h[i] = last
      last.hi = i
      down(h, i)
      up(h, last.hi)
    }
    this.touched.add(g)
  }

  /** `f` runs in `g` with its other end's share at `other`: the bounds that say when to look at it again. */
  private stays(g: Group, f: Flow, other: number): void {
    f.other = other
    if (other < g.minOther) g.minOther = other
    if (g.sends) f.to.recvMark = Math.max(f.to.recvMark, other)
    else f.from.sendMark = Math.max(f.from.sendMark, other)
  }

  /** Sets the group's event for its first member's completion. */
  private retime(g: Group): void {
    if (g.heap.length === 0) {
      if (g.timer !== undefined) this.clock.cancel(g.timer)
      return
    }
    const eta = g.share > 0 ? g.wAt + (g.heap[0].target - g.w) / g.share : Infinity
    if (g.timer === undefined) g.timer = this.clock.at(eta, () => this.groupDue(g))
    else this.clock.move(g.timer, eta)
  }

  private groupDue(g: Group): void {
    const now = this.clock.now
    g.w += g.share * (now - g.wAt)
    g.wAt = now
    // Members due now finish one at a time, first due first; each may start flows (never into a group: they join at a flush).
    while (g.heap.length > 0) {
      const f = g.heap[0]
      const left = f.target - g.w
      if (left > f.bytes * 1e-9 + 1e-6 && now + left / g.share > now) break
      this.leave(g, f)
      this.finish(f)
    }
    this.touched.delete(g)
    this.retime(g)
  }
}

function up(h: Flow[], i: number): void {
  const f = h[i]
  while (i > 0) {
    const p = (i - 1) >> 1
    const q = h[p]
    if (!due(f, q)) break
    h[i] = q
    q.hi = i
    i = p
  }
  h[i] = f
  f.hi = i
}

function down(h: Flow[], i: number): void {
  const n = h.length
  const f = h[i]
  for (;;) {
    const l = 2 * i + 1
    if (l >= n) break
    const r = l + 1
    const m = r < n && due(h[r], h[l]) ? r : l
    const c = h[m]
    if (!due(c, f)) break
    h[i] = c
    c.hi = i
    i = m
  }
  h[i] = f
  f.hi = i
}

function due(a: Flow, b: Flow): boolean {
  return a.target < b.target || (a.target === b.target && a.id < b.id)
}

function cpuShare(n: NetNode, f: Flow): number {
  if (n.pool !== undefined) return Infinity // counted once, for the pool, below
  const flows = n.ups.size + n.downs.size
  const cost = f.from === n ? n.sendCost : n.recvCost
  return cost > 0 ? n.cores / flows / cost : Infinity
}

/** A sender's share for each of its flows: its uplink and (outside a pool) its CPU split equally (cpuShare's figures). */
function sendShare(n: NetNode): number {
  const cpu = n.pool === undefined && n.sendCost > 0 ? n.cores / (n.ups.size + n.downs.size) / n.sendCost : Infinity
  return Math.min(n.up / Math.max(1, n.ups.size), cpu)
}

/** A receiver's share for each of its flows, the same way. */
function recvShare(n: NetNode): number {
  const cpu = n.pool === undefined && n.recvCost > 0 ? n.cores / (n.ups.size + n.downs.size) / n.recvCost : Infinity
  return Math.min(n.down / Math.max(1, n.downs.size), cpu)
}

function rateOf(f: Flow): number {
  let r = Math.min(f.from.up / Math.max(1, f.from.ups.size), f.to.down / Math.max(1, f.to.downs.size), cpuShare(f.from, f), cpuShare(f.to, f))
  const fp = f.from.pool
  const tp = f.to.pool
  if (fp !== undefined) {
    const cost = f.from.sendCost + (tp === fp ? f.to.recvCost : 0)
    if (cost > 0) r = Math.min(r, fp.cores / Math.max(1, fp.flows.size) / cost)
  }
  if (tp !== undefined && tp !== fp && f.to.recvCost > 0) r = Math.min(r, tp.cores / Math.max(1, tp.flows.size) / f.to.recvCost)
  return r
}
