// Bytes on the wire: every node has an uplink, a downlink and some CPU; a transfer (a flow)
// runs at the least of its sender's uplink share, its receiver's downlink share and the CPU
// share each end can spend on it (per-byte costs measured on the real data path). Shares are
// equal splits among the flows at a node, recomputed whenever a flow starts or ends there.
// An equal split is not max-min fair (a share a flow cannot use is not handed to the others),
// so the model errs towards slow when flows at a node are limited elsewhere.
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
  /** Bytes sent and received. */
  sent: number
  received: number
}

export interface Flow {
  from: NetNode
  to: NetNode
  bytes: number
  remaining: number
  rate: number
  at: number
  /** When its completion event is set for (it may fire early, see rerate). */
  eta: number
  /** That event, moved rather than set again when the flow speeds up. */
  timer: Timer | undefined
  onDone: () => void
}

export function netNode(name: string, o: Partial<NetNode> & { up: number; down: number }): NetNode {
  return { name, cores: Infinity, sendCost: 0, recvCost: 0, ups: new Set(), downs: new Set(), sent: 0, received: 0, ...o }
}

/** How long re-rating waits to take several changes at once. */
const COALESCE_S = 0.005

export class Network {
  private readonly clock: Clock
  private readonly dirty = new Set<NetNode>()
  private flushing = false
  /** Flows started so far. */
  started = 0

  constructor(clock: Clock) {
    this.clock = clock
  }

  /** Starts sending `bytes` from `from` to `to`; `onDone` runs when the last byte arrives. */
  send(from: NetNode, to: NetNode, bytes: number, onDone: () => void): Flow {
    const f: Flow = { from, to, bytes, remaining: bytes, rate: 0, at: this.clock.now, eta: Infinity, timer: undefined, onDone }
    this.started++
    from.ups.add(f)
    to.downs.add(f)
    from.pool?.flows.add(f)
    if (to.pool !== from.pool) to.pool?.flows.add(f)
    this.rerateAround(f)
    return f
  }

  private finish(f: Flow): void {
    f.from.ups.delete(f)
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
    this.clock.after(COALESCE_S, () => {
      this.flushing = false
      const nodes = [...this.dirty]
      this.dirty.clear()
      const pools = new Set<CpuPool>()
      for (const n of nodes) {
        if (n.pool !== undefined) pools.add(n.pool)
        for (const g of n.ups) this.rerate(g)
        for (const g of n.downs) this.rerate(g)
      }
      for (const p of pools) for (const g of p.flows) this.rerate(g)
    })
  }

  /**
   * Brings a flow's progress up to now at its old rate and gives it its new one. Its
   * completion event is moved only when it comes sooner; an event that fires early finds
   * bytes left and sets a new one (so slowing flows down costs no events).
   */
  private rerate(f: Flow): void {
    if (!f.from.ups.has(f)) return
    const rate = rateOf(f)
    if (rate === f.rate) return
    const now = this.clock.now
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
}

function cpuShare(n: NetNode, f: Flow): number {
  if (n.pool !== undefined) return Infinity // counted once, for the pool, below
  const flows = n.ups.size + n.downs.size
  const cost = f.from === n ? n.sendCost : n.recvCost
  return cost > 0 ? n.cores / flows / cost : Infinity
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
