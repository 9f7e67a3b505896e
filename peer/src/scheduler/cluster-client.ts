// The scheduler client of a daemon given several supernodes (or one name that resolves to
// several addresses). Each task belongs to one live supernode, chosen by rendezvous hashing of
// its ID (proto's ownerOf), as the supernodes choose it themselves; every call for the task
// goes there. The daemon learns the live set from any supernode it reaches
// (GET /api/v1/supernodes) and announces its host to each of them, so that any may schedule
// it as a parent or send it control commands.
//
// When a task's supernode dies (its client marks it down: a closed connection, refused dials,
// calls timing out) the task moves to the next owner: it is registered there again and the
// pieces this daemon holds are reported again, so the new owner's swarm has them at once and
// downloads keep going from peers. The new owner's seed establishes the piece digests again
// from the origin: digests are never taken from a daemon. A supernode that comes back gets
// its tasks back as they finish (a download in flight finishes where it runs), and new
// registrations at once.
//
// A supernode missing from one read of the live set is not taken for dead: on a loaded
// machine a heartbeat lands late and each supernode's view drops a live member for a moment,
// each at another moment. A task that moved on such a read was registered anew at a supernode
// whose seed read the whole content from the origin again, and moved back at the next read
// (a 256 MiB failover served 2.1x from the origin). So a task stays with an owner that still
// answers, and a member stays a candidate owner until it is missing from LIVE_MISSES_BEFORE_GONE
// reads in a row or its client marks it down.

import { lookup as dnsLookup } from 'node:dns/promises'
import { isIP } from 'node:net'

import type { Logger } from 'pino'
import type { Multiaddr } from '@multiformats/multiaddr'
import {
  NaiadError, ownerOf,
  type FabricNode, type GetParentsResponse, type Host, type PieceResult, type RegisterTaskRequest, type ReportPiecesRequest, type TaskInfo
} from '@naiad/proto'

import { FabricSchedulerClient, type SchedulerClient } from './client.ts'

/** One supernode of the live set, as GET /api/v1/supernodes names it. */
export interface LiveSupernode {
  id: string
  apiUrl: string
}

/** The client of one supernode (a FabricSchedulerClient; tests hand stubs). */
export type MemberClient = SchedulerClient & { close?(): Promise<void> }

export interface ClusterSchedulerClientOptions {
  /** The supernode HTTP URLs the daemon was given; a host name stands for each of its addresses. */
  supernodeUrls: string[]
  timeoutMs: number
  logger: Logger
  /** Checks each supernode's identity before it is trusted (see FabricSchedulerClientOptions). */
  verifySupernode?: (peerId: string, credential: string | undefined) => boolean
}

/** Parts tests replace: how a member's client is made, how the live set is read, how names resolve. */
export interface ClusterSchedulerClientComponents {
  connect?: (apiUrl: string) => MemberClient
  fetchLive?: (apiUrl: string, signal: AbortSignal) => Promise<LiveSupernode[]>
  lookup?: (host: string) => Promise<string[]>
}

/** Tasks whose route (owner, pieces held) the client remembers; the oldest are forgotten first. */
const MAX_ROUTES = 1024
/** Pieces re-reported in one call when a task moves. */
const REPORT_CHUNK = 1024
/** How long a registration waits between tries while the supernodes' view of the live set catches up with the daemon's. */
const NOT_OWNER_RETRY_MS = 500
/** Reads of the live set in a row that must leave a still-answering supernode out before it stops being a candidate owner. */
const LIVE_MISSES_BEFORE_GONE = 2

interface Member {
  url: string
  /** The supernode's ID from the live set (or from its /api/v1/info while no live set was read). */
  id: string | undefined
  client: MemberClient
}

interface Route {
  req: RegisterTaskRequest
  owner: Member
  /** Pieces this daemon reported holding: number → length. */
  held: Map<number, number>
  succeeded: boolean
  moving: Promise<void> | undefined
}

/** A supernode URL as the client keys its members by (no trailing slash). */
function urlKey(url: string): string {
  return url.replace(/\/+$/, '')
}

function codeOf(err: unknown): string {
  return (err as Partial<NaiadError> | undefined)?.code ?? ''
}

/** A failure that says this supernode cannot be had (as opposed to an answer it gave). */
function unreachable(err: unknown): boolean {
  const code = codeOf(err)
  return code === 'PROTO_ERR_DIAL' || code === 'PROTO_ERR_TIMEOUT' || code === 'PROTO_ERR_FORBIDDEN' || code === 'PROTO_ERR_STREAM_CLOSED' || code === ''
}

async function fetchLiveOver(apiUrl: string, signal: AbortSignal): Promise<LiveSupernode[]> {
  const res = await fetch(`${apiUrl}/api/v1/supernodes`, { signal })
  if (!res.ok) throw new NaiadError('PROTO_ERR_DIAL', `${apiUrl}/api/v1/supernodes answered HTTP ${res.status}`)
  const body = await res.json() as { members?: Array<{ id?: unknown; apiUrl?: unknown }> }
  const out: LiveSupernode[] = []
  for (const m of body.members ?? []) {
    if (typeof m.id !== 'string' || typeof m.apiUrl !== 'string' || m.apiUrl === '') continue
    try {
      const u = new URL(m.apiUrl)
      if (u.protocol !== 'http:' && u.protocol !== 'https:') continue
      out.push({ id: m.id, apiUrl: u.origin })
    } catch { /* not a URL: skipped */ }
  }
  return out
}

async function lookupAll(host: string): Promise<string[]> {
  return (await dnsLookup(host, { all: true })).map((a) => a.address)
}

export class ClusterSchedulerClient implements SchedulerClient {
  /** Clients by supernode URL. */
  private readonly members = new Map<string, Member>()
  /** The live set as last read, with the members that missed fewer than LIVE_MISSES_BEFORE_GONE reads; undefined before any read succeeded. */
  private live: LiveSupernode[] | undefined
  /** Consecutive live-set reads that left a member out, by supernode ID. */
  private readonly misses = new Map<string, number>()
  private readonly routes = new Map<string, Route>()
  private rehoming: Promise<void> | undefined
  /** This host's ID, as last announced (it picks the supernode of plugin calls). */
  private hostId = ''
  private readonly options: ClusterSchedulerClientOptions
  private readonly connect: (apiUrl: string) => MemberClient
  private readonly fetchLive: (apiUrl: string, signal: AbortSignal) => Promise<LiveSupernode[]>
  private readonly lookup: (host: string) => Promise<string[]>

  constructor(node: FabricNode | undefined, options: ClusterSchedulerClientOptions, components: ClusterSchedulerClientComponents = {}) {
    if (options.supernodeUrls.length === 0) throw new NaiadError('PROTO_ERR_USAGE', 'a cluster scheduler client needs at least one supernode URL')
    this.options = options
    this.connect = components.connect ?? ((apiUrl) => {
      if (node === undefined) throw new Error('ClusterSchedulerClient needs a fabric node or a connect component')
      return new FabricSchedulerClient(node, { supernodeUrl: apiUrl, timeoutMs: options.timeoutMs, logger: options.logger.child({ supernode: apiUrl }), verifySupernode: options.verifySupernode })
    })
    this.fetchLive = components.fetchLive ?? fetchLiveOver
    this.lookup = components.lookup ?? lookupAll
    for (const url of options.supernodeUrls) this.member(url)
  }

  async close(): Promise<void> {
    await Promise.allSettled([...this.members.values()].map(async (m) => m.client.close?.()))
  }

  /** Available while any supernode of the cluster is. */
  get available(): boolean {
    for (const m of this.candidates()) if (m.client.available) return true
    return false
  }

  /**
   * Unavailable since the last member that may come back went down (a member found gone
   * does not count): downloads wait for the cluster as long as for any one of them.
   */
  get unavailableSince(): number {
    if (this.available) return 0
    let since = 0
    for (const m of this.candidates()) since = Math.max(since, m.client.unavailableSince ?? 0)
    return since
  }

  /** A reachable supernode's ID (the daemon renews its membership there). */
  get supernodeId(): string | undefined {
    return this.usable()[0]?.client.supernodeId ?? this.usable()[0]?.id
  }

  /**
   * Whether a peer is a supernode of this cluster: one whose credential a member client
   * checked (the live set alone comes over plain HTTP and proves nothing).
   */
  isSupernode(peerId: string): boolean {
    for (const m of this.members.values()) if (m.client.supernodeId === peerId) return true
    return false
  }

  get paceMs(): number {
    let pace = 0
    for (const m of this.usable()) pace = Math.max(pace, m.client.paceMs ?? 0)
    return pace
  }

  /**
   * The supernode this host's plugin calls (health reports, SLO traces, doctor reports) go to:
   * chosen by rendezvous hashing of the host's ID over the live set, as the supernodes judge
   * it (ownerOf(host, live ids)), so that hosts spread over the cluster and each keeps one
   * while the live set holds. Not over the members this client counts up: one marked down
   * for a moment (a slow answer, admission lag on a loaded machine) would send the host's
   * health reports to a member that does not judge it. While the owner cannot be reached the
   * call fails (the plugin reports again at its next round); the host moves only when the
   * live set drops the owner. Before any read of the live set: over the usable members.
   */
  async supernodeAddrs(signal?: AbortSignal): Promise<Multiaddr[]> {
    const among = this.live === undefined ? this.usable() : this.candidates()
    const id = ownerOf(this.hostId, among.map((m) => this.idOf(m)))
    const m = among.find((c) => this.idOf(c) === id)
    if (m?.client.supernodeAddrs === undefined) throw new NaiadError('PROTO_ERR_DIAL', 'no supernode of the cluster is reachable')
    return m.client.supernodeAddrs(signal)
  }

  /**
   * Reads the live set again, announces the host to every live supernode (the call that
   * also tries supernodes marked down), then moves the tasks whose owner is gone, and the
   * finished ones whose owner came back, in the background.
   */
  async announceHost(host: Host, signal?: AbortSignal): Promise<void> {
    this.hostId = host.id
    await this.refreshLive(signal)
    const targets = this.candidates()
    // Owners a task still routes to but the live set left out: the announcement probes them,
    // and only one that fails it is left behind (rehome).
    for (const r of this.routes.values()) if (!targets.includes(r.owner)) targets.push(r.owner)
    const results = await Promise.allSettled(targets.map((m) => m.client.announceHost(host, signal)))
    const failed = results.filter((r) => r.status === 'rejected')
    this.rehoming ??= this.rehome().finally(() => { this.rehoming = undefined })
    if (failed.length === results.length) throw (failed[0] as PromiseRejectedResult | undefined)?.reason ?? new NaiadError('PROTO_ERR_DIAL', 'no supernode to announce to')
  }

  async registerTask(req: RegisterTaskRequest, signal?: AbortSignal): Promise<TaskInfo> {
    const { owner, info } = await this.registerWithOwner(req, signal)
    const route = this.routes.get(req.taskId)
    if (route === undefined || route.owner !== owner) this.remember({ req, owner, held: route?.held ?? new Map(), succeeded: false, moving: undefined })
    else route.req = req
    return info
  }

  async reportPieces(req: Partial<ReportPiecesRequest> & { taskId: string }, signal?: AbortSignal): Promise<void> {
    const route = this.routes.get(req.taskId)
    if (route !== undefined) {
      for (const r of req.results ?? []) if (r.errorCode === '') route.held.set(r.num, r.length)
      if (req.state === 'succeeded') route.succeeded = true
    }
    await this.routed(req.taskId, signal, (c) => c.reportPieces(req, signal))
    if (req.state === 'failed') this.routes.delete(req.taskId)
  }

  getParents(taskId: string, limit: number, signal?: AbortSignal): Promise<GetParentsResponse> {
    return this.routed(taskId, signal, (c) => c.getParents(taskId, limit, signal))
  }

  async leaveTask(taskId: string, signal?: AbortSignal): Promise<void> {
    const route = this.routes.get(taskId)
    this.routes.delete(taskId)
    const owner = route?.owner ?? this.ownerFor(taskId)
    if (owner === undefined) throw new NaiadError('PROTO_ERR_DIAL', 'no supernode of the cluster is reachable')
    await owner.client.leaveTask(taskId, signal)
  }

  async leaveHost(signal?: AbortSignal): Promise<void> {
    const results = await Promise.allSettled(this.usable().map((m) => m.client.leaveHost(signal)))
    const failed = results.filter((r) => r.status === 'rejected')
    if (results.length > 0 && failed.length === results.length) throw (failed[0] as PromiseRejectedResult).reason
  }

  /** The supernode a task's calls go to now (tests and the daemon's status). */
  ownerOf(taskId: string): string | undefined {
    const route = this.routes.get(taskId)
    return route?.owner.id ?? route?.owner.client.supernodeId ?? this.ownerFor(taskId)?.id
  }

  private member(url: string): Member {
    const key = urlKey(url)
    let m = this.members.get(key)
    if (m === undefined) {
      m = { url: key, id: undefined, client: this.connect(key) }
      this.members.set(key, m)
    }
    return m
  }

  /** The members calls may go to: the live set once read, else every URL configured. */
  private candidates(): Member[] {
    if (this.live === undefined) return [...this.members.values()]
    // Each at the URL it advertises (a supernode that came back elsewhere is a new client).
    return this.live.map((l) => {
      const m = this.member(l.apiUrl)
      m.id = l.id
      return m
    })
  }

  /** The candidates whose client is not marked down. */
  private usable(): Member[] {
    return this.candidates().filter((m) => m.client.available)
  }

  private idOf(m: Member): string {
    return m.id ?? m.client.supernodeId ?? m.url
  }

  /** The owner of a task among the usable supernodes. */
  private ownerFor(taskId: string): Member | undefined {
    const usable = this.usable()
    const id = ownerOf(taskId, usable.map((m) => this.idOf(m)))
    return usable.find((m) => this.idOf(m) === id)
  }

  /**
   * Reads the live set from a supernode: a usable one first, then the configured URLs (a
   * host name resolved again, for a Service whose addresses changed). Keeps the last set
   * when none answers.
   */
  private async refreshLive(signal?: AbortSignal): Promise<void> {
    const tried = new Set<string>()
    const ask = async (url: string): Promise<boolean> => {
      if (tried.has(url)) return false
      tried.add(url)
      try {
        const live = await this.fetchLive(url, AbortSignal.any([AbortSignal.timeout(this.options.timeoutMs), ...(signal === undefined ? [] : [signal])]))
        if (live.length === 0) return false
        const before = this.live?.map((m) => m.id).join(',')
        this.live = this.withLingering(live)
        if (this.live.map((m) => m.id).join(',') !== before) this.options.logger.info({ supernodes: this.live.map((m) => m.apiUrl), read: live.map((m) => m.apiUrl) }, 'live supernodes')
        this.prune()
        return true
      } catch (err) {
        this.options.logger.debug({ supernode: url, err: (err as Error).message }, 'cannot read the live supernodes there')
        return false
      }
    }
    // A random one first: every daemon reads the set at each keep-alive, and the same first
    // member for all would take all of those reads.
    const usable = this.usable()
    const start = Math.floor(Math.random() * usable.length)
    for (let i = 0; i < usable.length; i++) if (await ask(usable[(start + i) % usable.length].url)) return
    for (const url of await this.configuredUrls()) {
      this.member(url)
      if (await ask(url)) return
    }
  }

  /**
   * A fresh read of the live set, plus the members of the last one it leaves out that still
   * answer and have not yet missed LIVE_MISSES_BEFORE_GONE reads in a row (a late heartbeat
   * is not a death; a dead supernode's client is marked down and drops out of `usable` anyway).
   */
  private withLingering(read: LiveSupernode[]): LiveSupernode[] {
    const out = [...read]
    for (const prev of this.live ?? []) {
      if (read.some((l) => l.id === prev.id)) {
        this.misses.delete(prev.id)
        continue
      }
      const misses = (this.misses.get(prev.id) ?? 0) + 1
      const client = this.members.get(urlKey(prev.apiUrl))?.client
      if (misses < LIVE_MISSES_BEFORE_GONE && client?.available === true) {
        this.misses.set(prev.id, misses)
        out.push(prev)
      } else {
        this.misses.delete(prev.id)
      }
    }
    return out
  }

  /**
   * Forgets the clients of supernodes that left the live set (pods come and go, each at a new
   * address), except the configured URLs and owners a task still routes to (it moves at its
   * next call or keep-alive).
   */
  private prune(): void {
    const keep = new Set(this.options.supernodeUrls.map(urlKey))
    for (const l of this.live ?? []) keep.add(urlKey(l.apiUrl))
    for (const r of this.routes.values()) keep.add(r.owner.url)
    for (const [url, m] of this.members) {
      if (keep.has(url)) continue
      this.members.delete(url)
      m.client.close?.().catch((err: unknown) => this.options.logger.debug({ supernode: url, err: (err as Error).message }, 'closing a departed supernode\'s client failed'))
    }
  }

  /** The configured URLs, each host name replaced by one URL per address it resolves to. */
  private async configuredUrls(): Promise<string[]> {
    const out: string[] = []
    for (const raw of this.options.supernodeUrls) {
      let url: URL
      try {
        url = new URL(raw)
      } catch {
        continue
      }
      const host = url.hostname.replace(/^\[|\]$/g, '')
      if (isIP(host) !== 0) {
        out.push(url.origin)
        continue
      }
      try {
        const addrs = await this.lookup(host)
        for (const a of addrs) {
          const u = new URL(url.origin)
          u.hostname = isIP(a) === 6 ? `[${a}]` : a
          out.push(u.origin)
        }
      } catch (err) {
        this.options.logger.debug({ host, err: (err as Error).message }, 'cannot resolve a supernode name')
      }
      out.push(url.origin)
    }
    return [...new Set(out)]
  }

  /**
   * Registers with the task's owner. A refused or failed dial goes on to the next owner; a
   * supernode that names another owner (SN_ERR_NOT_OWNER) has a view of the live set the
   * daemon does not share: the daemon reads the set again, and waits while the supernodes'
   * view still holds one it cannot reach (they drop it after cluster.ttl).
   */
  private async registerWithOwner(req: RegisterTaskRequest, signal?: AbortSignal): Promise<{ owner: Member; info: TaskInfo }> {
    let lastErr: unknown
    for (let attempt = 0; attempt < 20; attempt++) {
      signal?.throwIfAborted()
      const owner = this.ownerFor(req.taskId)
      if (owner === undefined) throw lastErr ?? new NaiadError('PROTO_ERR_DIAL', 'no supernode of the cluster is reachable')
      try {
        return { owner, info: await owner.client.registerTask(req, signal) }
      } catch (err) {
        lastErr = err
        if (codeOf(err) === 'SN_ERR_NOT_OWNER') {
          await this.refreshLive(signal)
          if (this.ownerFor(req.taskId) === owner) await waitOrAbort(NOT_OWNER_RETRY_MS, signal)
          continue
        }
        if (!unreachable(err) || codeOf(err) === 'PROTO_ERR_TIMEOUT' || owner.client.available) throw err
      }
    }
    throw lastErr
  }

  /** A call for a task, at its owner; the task moves first when its owner is gone. */
  private async routed<T>(taskId: string, signal: AbortSignal | undefined, fn: (c: SchedulerClient) => Promise<T>): Promise<T> {
    const route = this.routes.get(taskId)
    if (route === undefined) {
      const owner = this.ownerFor(taskId)
      if (owner === undefined) throw new NaiadError('PROTO_ERR_DIAL', 'no supernode of the cluster is reachable')
      return fn(owner.client)
    }
    if (!this.stillUsable(route.owner)) await this.move(route, signal)
    try {
      return await fn(route.owner.client)
    } catch (err) {
      // The owner lost the task (restarted without its state) or is gone now: move, then once more.
      if (codeOf(err) === 'SN_ERR_TASK_NOT_FOUND' || (unreachable(err) && !route.owner.client.available)) {
        await this.move(route, signal, codeOf(err) === 'SN_ERR_TASK_NOT_FOUND')
        return fn(route.owner.client)
      }
      throw err
    }
  }

  /**
   * Whether a task may stay with `m`: while it answers. Absence from the live set alone is
   * no reason to move (see the top of the file); a departed supernode that is really gone
   * fails its next call or the announcement's probe, and is marked down.
   */
  private stillUsable(m: Member): boolean {
    return m.client.available
  }

  private inLive(m: Member): boolean {
    return this.live === undefined || this.live.some((l) => l.id === this.idOf(m))
  }

  /** Registers the task with its (new) owner and reports there the pieces this daemon holds. One move at a time per task. */
  private move(route: Route, signal?: AbortSignal, again = false): Promise<void> {
    route.moving ??= (async () => {
      const from = route.owner
      if (!again && this.stillUsable(from) && this.ownerFor(route.req.taskId) === from) return
      const { owner } = await this.registerWithOwner(route.req, signal)
      route.owner = owner
      if (owner !== from) this.options.logger.info({ task: route.req.taskId.slice(0, 12), from: from.url, to: owner.url, pieces: route.held.size }, 'task moved to another supernode')
      const held = [...route.held]
      for (let i = 0; i === 0 || i < held.length; i += REPORT_CHUNK) {
        const results: PieceResult[] = held.slice(i, i + REPORT_CHUNK).map(([num, length]) => ({ num, parentId: '', length, costMs: 0, sha256: new Uint8Array(0), errorCode: '' }))
        const last = i + REPORT_CHUNK >= held.length
        if (results.length === 0 && !route.succeeded) break
        await owner.client.reportPieces({ taskId: route.req.taskId, results, state: last && route.succeeded ? 'succeeded' : '' }, signal)
      }
    })().finally(() => { route.moving = undefined })
    return route.moving
  }

  /**
   * After each announcement: tasks whose owner is gone move now (finished ones too: they are
   * sources for the swarm), and finished tasks go back to their owner when it returns.
   */
  private async rehome(): Promise<void> {
    for (const route of [...this.routes.values()]) {
      const gone = !this.stillUsable(route.owner)
      const home = this.ownerFor(route.req.taskId)
      // A finished task goes home when a supernode joined (its owner is still live), not when
      // its owner merely fell out of the live set: moved there, it would be seeded from the origin anew.
      const handBack = route.succeeded && home !== undefined && home !== route.owner && this.inLive(route.owner)
      if (!gone && !handBack) continue
      try {
        await this.move(route, AbortSignal.timeout(this.options.timeoutMs * 2), !gone)
      } catch (err) {
        this.options.logger.debug({ task: route.req.taskId.slice(0, 12), err: (err as Error).message }, 'cannot move a task to its owner yet')
      }
    }
  }

  private remember(route: Route): void {
    this.routes.delete(route.req.taskId)
    this.routes.set(route.req.taskId, route)
    if (this.routes.size > MAX_ROUTES) this.routes.delete(this.routes.keys().next().value!)
  }
}

function waitOrAbort(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => { signal?.removeEventListener('abort', onAbort); resolve() }, ms)
    const onAbort = (): void => { clearTimeout(t); reject(new NaiadError('PROTO_ERR_ABORTED', 'registration was given up')) }
    signal?.addEventListener('abort', onAbort, { once: true })
  })
}
