// A dfdaemon as the simulation sees it, following peer/src/download and the scheduler
// client: per task it registers, polls getParents (every 250 ms, or the supernode's pace),
// fetches the pieces its last answer offers (rarest among the offered parents first, peers
// before the seed, at most `concurrency` at once and `perParent` per parent, skipping parents
// whose upload slots are full), reports them on a beat (100 ms, or the pace; one call for all
// its tasks on a supernode that batches, one per task before), and serves its own pieces. A
// call unanswered after the timeout counts towards "supernode down" by the client's rules;
// a registration is sent again and waits for a supernode that may come back, announcements
// probe a down one from 250 ms; a task goes to the origin when its supernode has been down for
// the stall timeout and no offered parent can serve, or when nothing arrived for the stall
// timeout (counting, as PollPolicy does, digests the seed published as progress and a poll the
// supernode put off as a reason to wait, for up to a minute: stallCountsFrom). The seed serves at most
// its upload slots at once; announcements follow the supernode's pace, as KeepAlive's do.

import {
  KEEPALIVE_RETRY_MIN_MS, pacedKeepaliveMs, REGISTER_ATTEMPTS, REGISTER_ATTEMPTS_AFTER_OUTAGES, REGISTER_BUSY_MAX_MS, REGISTER_BUSY_MIN_MS, SCHEDULER_WAIT_POLL_MS, stallAfterMs, stallCountsFrom, BUSY_MEMORY_MS
} from '@naiad/peer'

import type { Clock } from './events.ts'
import type { NetNode, Network } from './network.ts'
import { has, type Answer, type Call, type ParentView, type SupernodeModel, type TaskView } from './supernode.ts'

export interface DaemonOptions {
  concurrency: number
  perParent: number
  uploadSlots: number
  /** The seed's upload slots (the supernode's seed.upload-slots): a child asks it only while one is free. */
  seedSlots: number
  timeoutS: number
  stallS: number
  pollS: number
  beatS: number
  keepaliveS: number
  /** The scheduler before issue 15: no pace, a report call per task, three timeouts in a row and it is down. */
  old: boolean
}

/** The first probe of a supernode marked down, as dfdaemon's KeepAlive sends it. */
const PROBE_MIN_S = KEEPALIVE_RETRY_MIN_MS / 1000

export const DAEMON_DEFAULTS: DaemonOptions = {
  concurrency: 8, perParent: 3, uploadSlots: 16, seedSlots: 64, timeoutS: 2, stallS: 10, pollS: 0.25, beatS: 0.1, keepaliveS: 5, old: false
}

/** The world a daemon acts in. */
export interface World {
  clock: Clock
  net: Network
  origin: NetNode
  daemons: Daemon[]
  random: () => number
  /** Called when a daemon holds every piece of every task. */
  finished: (d: Daemon) => void
}

export type OriginReason = 'registration' | 'lost' | 'stalled'

/** What the client knows of one supernode (peer/src/scheduler/client.ts). */
interface Link {
  sn: SupernodeModel
  down: boolean
  timeouts: number
  answers: number
  paceMs: number
  pacedAt: number
  beating: boolean
  /** When the client last marked it down. */
  downAt: number
  /** A probe (an announcement sooner than the keep-alive) is scheduled. */
  probing: boolean
}

class DaemonTask {
  readonly view: TaskView
  readonly link: Link
  readonly have: Uint8Array
  count = 0
  readonly inflight = new Map<number, number>()
  /** The keys of `inflight`, as flags (plan looks at them for every piece). */
  readonly flying: Uint8Array
  readonly perParent = new Map<number, number>()
  pending: number[] = []
  /** Old client: a report of this task in flight, or waiting for its 100 ms. */
  reporting = false
  parents: ParentView[] = []
  /** Offered pieces, rarest among the offered parents first. */
  order: number[] = []
  registered = false
  /** When the first busy answer to its registration came. */
  busySince: number | undefined
  polling = false
  lastProgress = 0
  /** Piece digests the seed had published at the last answer (the client's view.digests). */
  published = 0
  /** When the supernode last put a poll of this task off (SN_ERR_BUSY). */
  putOffAt = -Infinity
  fromOrigin = false
  done = false

  constructor(view: TaskView, link: Link) {
    this.view = view
    this.link = link
    this.have = new Uint8Array(view.pieceCount)
    this.flying = new Uint8Array(view.pieceCount)
  }
}

export class Daemon {
  readonly id: number
  readonly node: NetNode
  readonly tasks: DaemonTask[] = []
  startedAt = 0
  started = false
  doneAt = -1
  /** Bytes fetched from the origin; tasks that went there; times the client marked a supernode down. */
  originBytes = 0
  originTasks = 0
  /** Why tasks went there: the registration failed (or was put off too long), the supernode was lost with no parent to serve, nothing arrived for the stall timeout. */
  readonly originWhy: Record<OriginReason, number> = { registration: 0, lost: 0, stalled: 0 }
  downs = 0
  timeouts = 0
  /** Its peer ID as the supernode sees it (which fixes its share of the pace spread). */
  readonly name: string
  private readonly links = new Map<SupernodeModel, Link>()
  private readonly w: World
  private readonly o: DaemonOptions

  constructor(id: number, node: NetNode, views: TaskView[], world: World, options: DaemonOptions) {
    this.id = id
    this.name = `sim-daemon-${id}`
    this.node = node
    this.w = world
    this.o = options
    for (const v of views) {
      let link = this.links.get(v.owner)
      if (link === undefined) {
        link = { sn: v.owner, down: false, timeouts: 0, answers: 0, paceMs: 0, pacedAt: -Infinity, beating: false, downAt: -Infinity, probing: false }
        this.links.set(v.owner, link)
      }
      this.tasks.push(new DaemonTask(v, link))
    }
  }

  get uploadsFree(): boolean {
    return this.node.ups.size < this.o.uploadSlots
  }

  start(): void {
    this.startedAt = this.w.clock.now
    this.started = true
    for (const t of this.tasks) {
      t.lastProgress = this.w.clock.now
      t.view.running.add(this.id)
      this.register(t, 1)
    }
    for (const link of this.links.values()) this.keepalive(link)
  }

  /**
   * As peer/src/download/registration.ts: a registration that timed out is sent again while
   * the client counts the supernode up (three attempts); one that marked it down waits for it
   * to come back (an announcement answered) for up to the stall timeout, ten attempts in all.
   * The scheduler before issue 15's client went to the origin at the first failure.
   */
  private register(t: DaemonTask, attempt: number): void {
    if (t.done || t.fromOrigin) return
    if (t.link.down && !this.o.old) return this.waitUp(t, () => this.register(t, attempt))
    this.call(t.link, { kind: 'register', results: 0, peers: 0, waitsBusy: !this.o.old, serve: () => { t.view.members++ } }, (a) => {
      // Put off by a saturated supernode: again after its pace, not an attempt, for up to
      // REGISTER_BUSY_MAX_MS.
      if (a.busy) {
        t.busySince ??= this.w.clock.now
        if (this.w.clock.now - t.busySince < REGISTER_BUSY_MAX_MS / 1000) {
          this.w.clock.after(Math.max(REGISTER_BUSY_MIN_MS, a.paceMs) / 1000, () => this.register(t, attempt))
          return
        }
        return this.giveUp(t)
      }
      t.registered = true
      // The stall clock starts with the swarm loop, after the registration (PollPolicy).
      t.lastProgress = this.w.clock.now
      this.poll(t)
    }, () => {
      if (this.o.old) return this.giveUp(t)
      if (t.link.down ? attempt < REGISTER_ATTEMPTS_AFTER_OUTAGES : attempt < REGISTER_ATTEMPTS) {
        return this.register(t, attempt + 1)
      }
      this.giveUp(t)
    })
  }

  /** Runs `then` once the task's supernode counts up again; the origin once it has been down for the stall timeout. */
  private waitUp(t: DaemonTask, then: () => void): void {
    if (t.done || t.fromOrigin) return
    if (!t.link.down) return then()
    if (!this.mayReturn(t.link)) return this.giveUp(t)
    this.w.clock.after(SCHEDULER_WAIT_POLL_MS / 1000, () => this.waitUp(t, then))
  }

  /** A supernode marked down less than the stall timeout ago may come back (schedulerMayReturn). */
  private mayReturn(link: Link): boolean {
    return !this.o.old && link.down && this.w.clock.now - link.downAt < this.o.stallS
  }

  /** As dfdaemon/src/admission/keepalive.ts: while the supernode counts down, announce from 250 ms, doubling up to the keep-alive. */
  private probe(link: Link, backoffS: number): void {
    if (link.probing || this.doneAt >= 0) return
    link.probing = true
    this.w.clock.after(backoffS, () => {
      link.probing = false
      if (!link.down || this.doneAt >= 0) return
      this.call(link, { kind: 'announce', results: 0, peers: 0 }, () => {
        for (const t of this.tasks) if (!t.done && !t.fromOrigin && !t.polling && t.registered) this.poll(t)
      }, () => this.probe(link, Math.min(this.o.keepaliveS, backoffS * 2)), true)
    })
  }

  // ------------------------------------------------------------ calls

  /**
   * One scheduler call: `ok` on an answer, `failed` on a timeout (or when the supernode is
   * down and the call is not sent). The rules are the client's: an answer resets the count;
   * a timeout counts only when nothing was heard since the call went out (the old client:
   * always), and three (ten while the supernode asks for a pace) make it down.
   */
  private call(link: Link, c: Omit<Call, 'answer' | 'from'>, ok: (a: Answer) => void, failed: () => void, probe = false): void {
    if (link.down && !probe) {
      failed()
      return
    }
    const before = link.answers
    let settled = false
    // The answer comes in an event of its own, after the timeout below is set.
    link.sn.submit({
      ...c,
      from: this.name,
      answer: (a) => {
        if (settled) return
        settled = true
        this.w.clock.cancel(timeout)
        link.answers++
        link.timeouts = 0
        link.down = false
        link.paceMs = this.o.old ? 0 : a.paceMs
        if (a.paceMs > 0) link.pacedAt = this.w.clock.now
        ok(a)
      }
    })
    // Cancelled on an answer: most calls are answered, and their timeouts would fill the clock.
    const timeout = this.w.clock.after(this.o.timeoutS, () => {
      if (settled) return
      settled = true
      this.timeouts++
      if (probe) return failed()
      if (!this.o.old && link.answers > before) return failed()
      if (++link.timeouts >= (this.pacedMs(link) > 0 ? 10 : 3) && !link.down) {
        link.down = true
        link.downAt = this.w.clock.now
        this.downs++
        if (!this.o.old) this.probe(link, PROBE_MIN_S)
      }
      failed()
    })
  }

  private keepalive(link: Link): void {
    if (this.doneAt >= 0) return
    // The interval stretches to the supernode's pace, as the daemon's KeepAlive does (pacedKeepaliveMs).
    this.w.clock.after(pacedKeepaliveMs(this.o.keepaliveS * 1000, this.pacedMs(link)) / 1000, () => {
      if (this.doneAt >= 0) return
      this.call(link, { kind: 'announce', results: 0, peers: 0 }, () => {
        for (const t of this.tasks) if (!t.done && !t.fromOrigin && !t.polling && t.registered) this.poll(t)
      }, () => {}, true)
      this.keepalive(link)
    })
  }

  // ------------------------------------------------------------ parents

  private poll(t: DaemonTask): void {
    if (t.done || t.fromOrigin) return
    t.polling = true
    this.call(t.link, { kind: 'parents', results: 0, peers: t.view.members }, (a) => {
      if (!a.busy) {
        // Digests the seed published since the last answer are progress, as the client's
        // PollPolicy counts them: a slow origin is not a stalled swarm.
        if (t.view.seedCount !== t.published) {
          t.published = t.view.seedCount
          t.lastProgress = this.w.clock.now
        }
        t.parents = t.view.parents(this.id, this.w.clock.now, (p) => this.w.daemons[p].uploadsFree)
        t.order = this.rank(t)
        this.plan(t)
      } else {
        t.putOffAt = this.w.clock.now
      }
      this.nextPoll(t)
    }, () => {
      if (t.link.down) {
        t.polling = false
        this.stuck(t)
        return
      }
      this.nextPoll(t)
    })
  }

  private nextPoll(t: DaemonTask): void {
    if (t.done || t.fromOrigin) return
    const idle = t.inflight.size === 0
    // An idle task asks again sooner (a cold task's layout appears within milliseconds).
    const wait = Math.max(idle && t.order.length === 0 ? 0.1 : this.o.pollS, t.link.paceMs / 1000)
    this.w.clock.after(wait, () => this.poll(t))
    if (idle) this.stuck(t)
  }

  /** Offered pieces this daemon lacks, those fewest offered parents hold first (ties at random). */
  private rank(t: DaemonTask): number[] {
    const n = t.view.pieceCount
    const keys: Array<{ p: number; k: number }> = []
    for (let p = 0; p < n; p++) {
      if (t.have[p] === 1) continue
      let holders = 0
      for (const par of t.parents) if (has(par.bits, p)) holders++
      if (holders > 0) keys.push({ p, k: holders + this.w.random() * 0.5 })
    }
    return keys.sort((a, b) => a.k - b.k).map((x) => x.p)
  }

  // ------------------------------------------------------------ pieces

  private plan(t: DaemonTask): void {
    if (t.done || t.fromOrigin) return
    const order = t.order
    const parents = t.parents
    // pick() for every piece, with each parent's room found once (a fetch changes only the
    // room of the parent it goes to: its count here, its upload slots), and the pieces no
    // parent with room offers passed over by one look at their union.
    const room = new Uint8Array(parents.length)
    const words = t.view.words
    const offered = new Uint32Array(words)
    const unite = (): void => {
      offered.fill(0)
      for (let j = 0; j < parents.length; j++) if (room[j] === 1) for (let w = 0; w < words; w++) offered[w] |= parents[j].bits[w]
    }
    for (let j = 0; j < parents.length; j++) if (this.hasRoom(t, parents[j].peer)) room[j] = 1
    unite()
    // The pieces passed over stay in front, in their order (written back in place from `k`).
    let k = 0
    let i = 0
    for (; i < order.length && t.inflight.size < this.o.concurrency; i++) {
      const p = order[i]
      if (t.have[p] === 1 || t.flying[p] === 1) continue
      let best = -1
      if (has(offered, p)) {
        let load = Infinity
        for (let j = 0; j < parents.length; j++) {
          if (room[j] === 0 || !has(parents[j].bits, p)) continue
          const peer = parents[j].peer
          const key = (t.perParent.get(peer) ?? 0) + (peer < 0 ? 100 : 0)
          if (key < load) {
            load = key
            best = j
          }
        }
      }
      if (best < 0) {
        order[k++] = p
        continue
      }
      const peer = parents[best].peer
      this.fetch(t, p, peer)
      if (!this.hasRoom(t, peer)) {
        room[best] = 0
        unite()
      }
    }
    if (k < i) {
      order.copyWithin(k, i)
      order.length -= i - k
    }
  }

  private hasRoom(t: DaemonTask, peer: number): boolean {
    return (t.perParent.get(peer) ?? 0) < this.o.perParent && (peer < 0 ? t.view.owner.node.ups.size < this.o.seedSlots : this.w.daemons[peer].uploadsFree)
  }

  /** A parent offering `p` with room: a peer before the seed, the least loaded first. */
  private pick(t: DaemonTask, p: number): number | undefined {
    let best: number | undefined
    let load = Infinity
    for (const par of t.parents) {
      if (!has(par.bits, p)) continue
      const n = t.perParent.get(par.peer) ?? 0
      if (n >= this.o.perParent) continue
      if (par.peer >= 0 ? !this.w.daemons[par.peer].uploadsFree : t.view.owner.node.ups.size >= this.o.seedSlots) continue
      const key = n + (par.peer < 0 ? 100 : 0)
      if (key < load) {
        load = key
        best = par.peer
      }
    }
    return best
  }

  private fetch(t: DaemonTask, p: number, parent: number): void {
    t.inflight.set(p, parent)
    t.flying[p] = 1
    t.perParent.set(parent, (t.perParent.get(parent) ?? 0) + 1)
    const arrived = (): void => {
      t.inflight.delete(p)
      t.flying[p] = 0
      t.perParent.set(parent, t.perParent.get(parent)! - 1)
      this.stored(t, p)
    }
    if (parent >= 0) {
      this.w.net.send(this.w.daemons[parent].node, this.node, t.view.pieceBytes, arrived)
      return
    }
    // From the seed: streamed live while it still comes from the origin (as store-and-forward of the piece).
    t.view.whenSeedHas(p, () => {
      const t0 = this.w.clock.now
      this.w.net.send(t.view.owner.node, this.node, t.view.pieceBytes, () => {
        t.view.owner.seedMeasured(t.view.pieceBytes, this.w.clock.now - t0)
        arrived()
      })
    })
  }

  private stored(t: DaemonTask, p: number): void {
    if (t.have[p] === 1) return
    t.have[p] = 1
    t.count++
    t.lastProgress = this.w.clock.now
    t.pending.push(p)
    this.report(t)
    if (t.count === t.view.pieceCount) {
      t.done = true
      t.view.running.delete(this.id)
      if (this.tasks.every((x) => x.done)) {
        this.doneAt = this.w.clock.now
        this.w.finished(this)
      }
      return
    }
    this.plan(t)
    if (t.inflight.size === 0) this.stuck(t)
  }

  // ------------------------------------------------------------ reports

  private report(t: DaemonTask): void {
    const link = t.link
    if (link.down) return
    if (this.o.old) {
      if (t.reporting) return
      t.reporting = true
      this.w.clock.after(this.o.beatS, () => this.sendReports(link, [t]))
      return
    }
    if (link.beating) return
    link.beating = true
    // The beat is common to the daemon's tasks on this supernode: one call carries them all.
    this.w.clock.after(Math.max(this.o.beatS, link.paceMs / 1000), () => this.sendReports(link, this.tasks.filter((x) => x.link === link)))
  }

  private sendReports(link: Link, tasks: DaemonTask[]): void {
    const batch = tasks.map((t) => ({ t, pieces: t.pending.splice(0) })).filter((b) => b.pieces.length > 0)
    const again = (): void => {
      for (const t of tasks) t.reporting = false
      link.beating = false
      for (const t of tasks) if (t.pending.length > 0) this.report(t)
    }
    if (batch.length === 0) return again()
    const results = batch.reduce((n, b) => n + b.pieces.length, 0)
    this.call(link, {
      kind: 'report',
      results,
      peers: 0,
      serve: () => { for (const b of batch) b.t.view.report(this.id, b.pieces) }
    }, again, () => {
      // Kept for the next call (the supernode may have recorded them anyway: reports are idempotent).
      for (const b of batch) b.t.pending.unshift(...b.pieces)
      if (link.down) {
        for (const t of tasks) t.reporting = false
        link.beating = false
        return
      }
      again()
    })
  }

  // ------------------------------------------------------------ the origin

  /** Nothing in flight: go to the origin when the supernode is down and no parent serves, or after the stall timeout. */
  private stuck(t: DaemonTask): void {
    if (t.done || t.fromOrigin || t.inflight.size > 0) return
    // Lost (down, and for the old client or past the stall timeout, not coming back) with
    // nothing a known parent can serve: the origin (peer/src/download/poll-policy.ts).
    const lost = t.link.down && !this.mayReturn(t.link)
    if (lost && t.order.every((p) => this.pick(t, p) === undefined)) return this.backToSource(t, 'lost')
    // The stall timeout stretched to two of the supernode's paces, as the client's (PollPolicy.stalled).
    // Counted from the last progress or the last poll the supernode put off (PollPolicy.stalled).
    const left = this.stallS(t.link) - (this.w.clock.now - stallCountsFrom(t.lastProgress * 1000, t.putOffAt * 1000) / 1000)
    if (left <= 0) return this.backToSource(t, 'stalled')
    const untilLost = t.link.down && !lost ? t.link.downAt + this.o.stallS - this.w.clock.now : Infinity
    this.w.clock.after(Math.min(left, untilLost) + 0.001, () => { if (t.inflight.size === 0) this.stuck(t) })
  }

  /** The stall timeout, s: at least two of the supernode's pace (stallAfterMs). */
  private stallS(link: Link): number {
    return stallAfterMs(this.o.stallS * 1000, this.pacedMs(link)) / 1000
  }

  /** The pace the supernode asked for, while it counts (the client's paceMs: BUSY_MEMORY_MS after the answer); 0 for the old client. */
  private pacedMs(link: Link): number {
    return this.o.old || this.w.clock.now - link.pacedAt >= BUSY_MEMORY_MS / 1000 ? 0 : link.paceMs
  }

  private giveUp(t: DaemonTask): void {
    this.backToSource(t, 'registration')
  }

  private backToSource(t: DaemonTask, why: OriginReason): void {
    if (t.done || t.fromOrigin) return
    t.fromOrigin = true
    this.originTasks++
    this.originWhy[why]++
    // One piece after another from the origin (its own pieces still count for the swarm).
    const next = (): void => {
      let p = 0
      while (p < t.view.pieceCount && (t.have[p] === 1 || t.flying[p] === 1)) p++
      if (p >= t.view.pieceCount) return
      t.inflight.set(p, -2)
      t.flying[p] = 1
      this.originBytes += t.view.pieceBytes
      this.w.net.send(this.w.origin, this.node, t.view.pieceBytes, () => {
        t.inflight.delete(p)
        t.flying[p] = 0
        this.stored(t, p)
        next()
      })
    }
    next()
  }
}
