// Bytes on the wire: every node has an uplink, a downlink and some CPU; a transfer (a flow)
// runs at the least of its sender's uplink share, its receiver's downlink share and the CPU
// share each end can spend on it (per-byte costs measured on the real data path). Shares are
// equal splits among the flows at a node, recomputed whenever a flow starts or ends there.
// An equal split is not max-min fair (a share a flow cannot use is not handed to the others),
// so the model errs towards slow when flows at a node are limited elsewhere.
//
// A flow whose rate is its sender's share (the origin's or a seed's uplink split among
// thousands of daemons) joins its sender's group: the group counts the bytes each of its flows
// has had since the share last changed, and keeps one completion event for the flow due first,
// so a change at a node with 40,000 flows costs a few heap steps rather than 40,000 re-ratings
// and re-timings. A flow moves between its group and a rate of its own as the shares change;
// the rates are those of the equal split either way (only the sums' rounding differs).
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
  /** Of `ups`, those with a rate of their own (not in `group`). */
  solo: Set<Flow>
  /** Its flows that run at its sender's share (made when the first joins). */
  group?: Group
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
  /** The receiver's share for it when last rated. */
  recv: number
  /** In its sender's group: the group's count of bytes at which it is done, and its place in the group's heap. */
  inGroup: boolean
  target: number
  hi: number
  onDone: () => void
}

/** Flows of one sender running at its share: `w` bytes each since the group began, as of `wAt`. */
interface Group {
  node: NetNode
  share: number
  w: number
  wAt: number
  /** Members by `target` (then id): the first is due first. */
  heap: Flow[]
  timer: Timer | undefined
  /** No member's receiver share is below this (a bound: it is made exact when the share passes it). */
  minRecv: number
}

export function netNode(name: string, o: Partial<NetNode> & { up: number; down: number }): NetNode {
  return { name, cores: Infinity, sendCost: 0, recvCost: 0, ups: new Set(), downs: new Set(), solo: new Set(), sent: 0, received: 0, ...o }
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
  /** Flows started so far; times a flow joined its sender's group, and left it before its end. */
  started = 0
  joined = 0
  left = 0

  /** Whether flows at their sender's share join its group (off: each keeps its own rate and event, as the tests compare). */
  private readonly groups: boolean

  constructor(clock: Clock, options: { groups?: boolean } = {}) {
    this.clock = clock
    this.groups = options.groups ?? true
  }

  /** Starts sending `bytes` from `from` to `to`; `onDone` runs when the last byte arrives. */
  send(from: NetNode, to: NetNode, bytes: number, onDone: () => void): Flow {
    const f: Flow = {
      id: this.started++, from, to, bytes, remaining: bytes, rate: 0, at: this.clock.now, eta: Infinity, timer: undefined,
      recv: Infinity, inGroup: false, target: 0, hi: -1, onDone
    }
    from.ups.add(f)
    from.solo.add(f)
    to.downs.add(f)
    from.pool?.flows.add(f)
    if (to.pool !== from.pool) to.pool?.flows.add(f)
    this.rerateAround(f)
    return f
  }

  private finish(f: Flow): void {
    f.from.ups.delete(f)
    f.from.solo.delete(f)
    f.to.downs.delete(f)
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
    for (const n of nodes) {
      const g = n.group
      if (g === undefined) continue
      g.w += g.share * (now - g.wAt)
      g.wAt = now
      const was = g.share
      g.share = sendShare(n)
      if (g.share > was && g.minRecv < g.share) grown.push(g)
    }
    // Members a grown share would take past their receiver's leave the group.
    for (const g of grown) {
      let min = Infinity
      for (const f of [...g.heap]) {
        if (f.recv < g.share) this.rerate(f)
        else min = Math.min(min, f.recv)
      }
      g.minRecv = min
    }
    const pools = new Set<CpuPool>()
    for (const n of nodes) {
      if (n.pool !== undefined) pools.add(n.pool)
      for (const f of [...n.solo]) this.rerate(f)
      for (const f of n.downs) this.rerate(f)
    }
    for (const p of pools) for (const f of p.flows) this.rerate(f)
    for (const n of nodes) if (n.group !== undefined) this.touched.add(n.group)
    for (const g of this.touched) this.retime(g)
    this.touched.clear()
    this.inFlush = false
  }

  /**
   * Brings a flow's progress up to now at its old rate and gives it its new one. Its
   * completion event is moved only when it comes sooner; an event that fires early finds
   * bytes left and sets a new one (so slowing flows down costs no events). A flow whose rate
   * is its sender's share joins the sender's group, but only at a re-rating of every flow
   * there (a flush): between flushes the group's members keep the share of the last.
   */
  private rerate(f: Flow): void {
    if (!f.from.ups.has(f)) return
    const send = sendShare(f.from)
    const recv = recvShare(f)
    f.recv = recv
    const pooled = f.from.pool !== undefined || f.to.pool !== undefined
    const now = this.clock.now
    if (f.inGroup) {
      const g = f.from.group!
      if (send <= recv) {
        if (recv < g.minRecv) g.minRecv = recv
        return
      }
      // Its receiver now holds it below the share: a rate of its own from here.
      f.remaining = Math.max(0, f.target - (g.w + g.share * (now - g.wAt)))
      f.at = now
      f.rate = g.share
      f.eta = Infinity
      this.left++
      this.leave(g, f)
    }
    const rate = pooled ? rateOf(f) : Math.min(send, recv)
    if (this.groups && this.inFlush && !pooled && send <= recv && send > 0) {
      f.remaining = Math.max(0, f.remaining - f.rate * (now - f.at))
      f.at = now
      f.rate = rate
      this.join(f)
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

  private join(f: Flow): void {
    const n = f.from
    let g = n.group
    if (g === undefined) {
      g = { node: n, share: f.rate, w: 0, wAt: this.clock.now, heap: [], timer: undefined, minRecv: Infinity }
      n.group = g
    }
    if (f.timer !== undefined) this.clock.cancel(f.timer)
    f.eta = Infinity
    n.solo.delete(f)
    this.joined++
    f.inGroup = true
    f.target = g.w + g.share * (this.clock.now - g.wAt) + f.remaining
    if (f.recv < g.minRecv) g.minRecv = f.recv
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
    f.inGroup = false
    f.from.solo.add(f)
    if (last !== f) {
      h[i] = last
      last.hi = i
      down(h, i)
      up(h, last.hi)
    }
    this.touched.add(g)
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
    // Members due now finish one at a time, first due first; each may start flows (never into the group: they join at a flush).
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

/** A sender's share for each of its flows: its uplink and (outside a pool) its CPU split equally. */
function sendShare(n: NetNode): number {
  const cpu = n.pool === undefined && n.sendCost > 0 ? n.cores / (n.ups.size + n.downs.size) / n.sendCost : Infinity
  return Math.min(n.up / Math.max(1, n.ups.size), cpu)
}

function recvShare(f: Flow): number {
  return Math.min(f.to.down / Math.max(1, f.to.downs.size), cpuShare(f.to, f))
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
