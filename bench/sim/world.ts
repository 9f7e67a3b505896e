// One simulated rollout: an origin, K supernodes (each owning some of the image's tasks by
// rendezvous hashing and fetching them through its seed), N daemons pulling every task. Returns
// what a run predicts: time to full rollout, registry egress, and what the supernodes went
// through.

import { pieceSizeFor } from '@naiad/proto'
import { prng } from '@naiad/testkit'

import type { Costs } from './costs.ts'
import { Daemon, DAEMON_DEFAULTS, type DaemonOptions, type OriginReason, type World } from './daemon.ts'
import { Clock } from './events.ts'
import { netNode, Network, type CpuPool, type NetNode } from './network.ts'
import { SupernodeModel, TaskView } from './supernode.ts'

export interface RolloutOptions {
  nodes: number
  /** Task (layer) sizes, bytes. */
  layers: number[]
  supernodes: number
  /** Bytes per second. */
  hostBandwidth: number
  registryBandwidth: number
  supernodeBandwidth: number
  /** Cores a daemon spends on transfers (a Node process: one event loop). */
  hostCores: number
  supernodeCores: number
  /** All nodes share this many cores (the test machine); 0: each node has its own. */
  sharedCores: number
  /** Daemons start spread evenly over this many seconds. */
  rampS: number
  /** The scheduler before issue 15. */
  old: boolean
  seed: number
  costs: Costs
  daemon?: Partial<DaemonOptions>
  /** Simulated time after which the run stops, unfinished. */
  limitS: number
  /** The supernodes' pace ceiling (PressureGauge's maxPaceMs); its default unless given. */
  maxPaceMs?: number
  /** Print a line of the simulated state to stderr every this many simulated seconds. */
  progressS?: number
}

export interface RolloutResult {
  nodes: number
  imageBytes: number
  supernodes: number
  /** From the first daemon's start to the last daemon's completion, and per daemon from its start (+ the client's start-up). */
  fullRolloutS: number
  completionS: { p50: number; p90: number; max: number }
  finished: number
  registryEgressBytes: number
  /** Of which the seeds' own fetches, and daemons that went to the origin. */
  seedFetchBytes: number
  daemonOriginBytes: number
  daemonsToOrigin: number
  /** Tasks that went to the origin, by why (see Daemon.originWhy). */
  originTasks: Record<OriginReason, number>
  /** When each task's seed had it all. */
  seedDoneS: number[]
  clientTimeouts: number
  supernodeMarkedDown: number
  perSupernode: Array<{ name: string; cpuS: number; utilization: number; calls: number; deferred: number; maxPaceMs: number; maxQueueS: number; seedSentBytes: number; timeline: Array<{ t: number; util: number; paceMs: number }> }>
  events: number
  wallS: number
}

/** Rendezvous hashing: the supernode with the highest weight for the task owns it. */
export function ownerOf(task: number, supernodes: number): number {
  let best = 0
  let top = -1
  for (let s = 0; s < supernodes; s++) {
    let h = Math.imul(task + 1, 0x9e3779b1) ^ Math.imul(s + 1, 0x85ebca77)
    h = Math.imul(h ^ (h >>> 15), 0x2c1b3c6d)
    h = (h ^ (h >>> 12)) >>> 0
    if (h > top) {
      top = h
      best = s
    }
  }
  return best
}

export function simulate(o: RolloutOptions): RolloutResult {
  const wall0 = performance.now()
  const clock = new Clock()
  const net = new Network(clock)
  const random = prng(o.seed)
  const c = o.costs
  const pool: CpuPool | undefined = o.sharedCores > 0 ? { cores: o.sharedCores, flows: new Set() } : undefined
  const origin = netNode('origin', { up: o.registryBandwidth, down: o.registryBandwidth })
  const supernodes = Array.from({ length: o.supernodes }, (_, s) => new SupernodeModel(clock, c, `supernode-${s}`, netNode(`supernode-${s}`, {
    up: o.supernodeBandwidth, down: o.supernodeBandwidth, cores: o.supernodeCores, sendCost: c.seedSendByteS, recvCost: c.seedFetchByteS, pool
  }), o.old, o.maxPaceMs === undefined ? {} : { maxPaceMs: o.maxPaceMs }))
  const views = o.layers.map((bytes, t) => {
    const piece = pieceSizeFor(bytes)
    return new TaskView(t, Math.ceil(bytes / piece), piece, supernodes[ownerOf(t, o.supernodes)], random)
  })
  // Each seed reads its tasks from the origin front to back, as the real one does, a piece at a time.
  let seedFetchBytes = 0
  for (const v of views) {
    const fetch = (p: number): void => {
      if (p >= v.pieceCount) return
      const bytes = p === v.pieceCount - 1 ? o.layers[v.id] - p * v.pieceBytes : v.pieceBytes
      seedFetchBytes += bytes
      net.send(origin, v.owner.node, bytes, () => {
        v.seedGot(p)
        fetch(p + 1)
      })
    }
    // The first registration of the task triggers the seed.
    clock.at(o.rampS > 0 ? 0 : 0, () => fetch(0))
  }

  const daemons: Daemon[] = []
  let finished = 0
  const world: World = { clock, net, origin, daemons, random, finished: () => { finished++ } }
  const options: DaemonOptions = { ...DAEMON_DEFAULTS, ...o.daemon, old: o.old }
  for (let d = 0; d < o.nodes; d++) {
    const node: NetNode = netNode(`d${d}`, { up: o.hostBandwidth, down: o.hostBandwidth, cores: o.hostCores, sendCost: c.sendByteS, recvCost: c.recvByteS, pool })
    daemons.push(new Daemon(d, node, views, world, options))
  }
  for (const d of daemons) clock.at(o.nodes > 1 ? (d.id / (o.nodes - 1)) * o.rampS : 0, () => d.start())
  if (o.progressS !== undefined && o.progressS > 0) {
    const every = o.progressS
    const line = (): void => {
      const started = daemons.filter((d) => d.started).length
      const toOrigin = daemons.reduce((a, d) => a + d.originTasks, 0)
      const peerFlows = daemons.reduce((a, d) => a + d.node.ups.size, 0)
      const seeds = views.map((v) => `${v.seedCount}/${v.pieceCount}`).join(' ')
      const sns = supernodes.map((s) => `${((s.gauge?.utilization ?? 0) * 100).toFixed(0)} % ${s.paceMs} ms ${s.deferred}`).join('; ')
      console.error(`${clock.now.toFixed(0)} s: ${started} started, ${finished} finished, ${toOrigin} tasks to the origin (${origin.ups.size} flows from it), ${peerFlows} flows between daemons; seeds ${seeds}; supernodes (utilisation, pace, put off) ${sns}`)
      clock.after(every, line)
    }
    clock.after(every, line)
  }
  clock.run(o.limitS, () => finished === o.nodes)

  const times = daemons.filter((d) => d.doneAt >= 0).map((d) => d.doneAt - d.startedAt + c.startS).sort((a, b) => a - b)
  const q = (f: number): number => (times.length === 0 ? NaN : times[Math.min(times.length - 1, Math.floor(f * times.length))])
  const end = Math.max(...daemons.map((d) => (d.doneAt >= 0 ? d.doneAt + c.startS : NaN)))
  const daemonOriginBytes = daemons.reduce((a, d) => a + d.originBytes, 0)
  return {
    nodes: o.nodes,
    imageBytes: o.layers.reduce((a, b) => a + b, 0),
    supernodes: o.supernodes,
    fullRolloutS: finished === o.nodes ? end : NaN,
    completionS: { p50: q(0.5), p90: q(0.9), max: times[times.length - 1] ?? NaN },
    finished,
    registryEgressBytes: seedFetchBytes + daemonOriginBytes,
    seedFetchBytes,
    daemonOriginBytes,
    daemonsToOrigin: daemons.filter((d) => d.originTasks > 0).length,
    originTasks: {
      registration: daemons.reduce((a, d) => a + d.originWhy.registration, 0),
      lost: daemons.reduce((a, d) => a + d.originWhy.lost, 0),
      stalled: daemons.reduce((a, d) => a + d.originWhy.stalled, 0)
    },
    seedDoneS: views.map((v) => round(v.seedDoneAt)),
    clientTimeouts: daemons.reduce((a, d) => a + d.timeouts, 0),
    supernodeMarkedDown: daemons.reduce((a, d) => a + d.downs, 0),
    perSupernode: supernodes.map((s) => ({
      name: s.name, cpuS: round(s.busyS), utilization: round(s.busyS / Math.max(1e-9, clock.now)), calls: s.calls, deferred: s.deferred,
      maxPaceMs: s.maxPaceMs, maxQueueS: round(s.maxWaitS), seedSentBytes: s.node.sent,
      timeline: s.timeline.filter((b) => b !== undefined).map((b) => ({ t: b.t, util: round(b.util / b.samples), paceMs: b.paceMs }))
    })),
    events: clock.ran,
    wallS: round((performance.now() - wall0) / 1000)
  }
}

function round(x: number): number {
  return Math.round(x * 1000) / 1000
}
