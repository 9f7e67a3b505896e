// How a daemon talks to its scheduler. The fabric client reaches a remote supernode; the
// supernode's embedded seed gets an in-process implementation of the same interface.

import type { Logger } from 'pino'
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'
import {
  call, NaiadError, PROTOCOLS, raiseRemote, RpcSession, SCHEDULER_FEATURES, SchedulerRequest, SchedulerResponse,
  type FabricNode, type GetParentsResponse, type Host, type PieceDigest, type RegisterTaskRequest, type ReportPiecesRequest, type TaskInfo
} from '@naiad/proto'

export interface SchedulerClient {
  /** False while the scheduler is known to be unreachable; callers skip it instead of waiting. */
  readonly available: boolean
  /**
   * While unavailable for a reason that may pass (calls timing out on a loaded supernode, one
   * that has not admitted this node yet): when that began (Date.now()). 0 or absent while
   * available, and once a probe found nothing listening: downloads wait a bounded while for a
   * scheduler that may come back, and go to the origin at once for one that is gone.
   */
  readonly unavailableSince?: number
  /** The supernode's peer ID once known (from its /api/v1/info); the one peer allowed to send control commands. */
  readonly supernodeId?: string
  /** Whether a peer is a supernode of the cluster (several supernodes); absent: only `supernodeId` is. */
  isSupernode?(peerId: string): boolean
  /**
   * The supernode's saturation signal: the least time to leave between one task's calls
   * (reports, parent polls), ms; 0 or absent while it keeps up.
   */
  readonly paceMs?: number
  announceHost(host: Host, signal?: AbortSignal): Promise<void>
  registerTask(req: RegisterTaskRequest, signal?: AbortSignal): Promise<TaskInfo>
  reportPieces(req: Partial<ReportPiecesRequest> & { taskId: string }, signal?: AbortSignal): Promise<void>
  /** The answer's task carries all the digests published so far (a client may fetch only the new ones: see FabricSchedulerClient). */
  getParents(taskId: string, limit: number, signal?: AbortSignal): Promise<GetParentsResponse>
  leaveTask(taskId: string, signal?: AbortSignal): Promise<void>
  leaveHost(signal?: AbortSignal): Promise<void>
  /**
   * The supernode's fabric addresses, for other protocols to the same supernode (plugins'
   * reports): looked up once and again after the supernode was unreachable. Absent for an
   * in-process scheduler.
   */
  supernodeAddrs?(signal?: AbortSignal): Promise<Multiaddr[]>
}

export interface FabricSchedulerClientOptions {
  /** The supernode's HTTP URL; `/api/v1/info` there gives its peer ID and multiaddrs. */
  supernodeUrl: string
  timeoutMs: number
  logger: Logger
  /**
   * Checks that the peer ID `/api/v1/info` names is the cluster's supernode (its credential,
   * from the same answer, against the cluster key): the answer comes over plain HTTP, and
   * whoever the daemon takes for its supernode gets its registrations' headers.
   */
  verifySupernode?: (peerId: string, credential: string | undefined) => boolean
}

/**
 * Consecutive call timeouts after which a supernode counts as unreachable. A busy
 * supernode answering one call late is not an outage: marking it down would send every
 * download of this node to the origin until the next keep-alive. A refused or failed
 * dial marks it down at once.
 */
const TIMEOUTS_BEFORE_DOWN = 3
/**
 * The same while the supernode has said it is saturated (a pace in a recent answer): its
 * calls are slow because it is busy, not gone, and it asked for patience.
 */
const TIMEOUTS_BEFORE_DOWN_BUSY = 10
/** How long a pace in an answer counts as "the supernode said it is busy". */
export const BUSY_MEMORY_MS = 30_000
/** The most the supernode's pace stretches a daemon's host announcements, in keep-alive intervals. */
export const PACED_INTERVALS = 3

/** After a failed announcement, or while a supernode is taken for down, the keep-alive probes it again from this soon (doubling up to its interval). */
export const KEEPALIVE_RETRY_MIN_MS = 250

/**
 * The time between two host announcements: the keep-alive interval, or the supernode's pace when
 * it asks for a longer one, but at most PACED_INTERVALS intervals (a supernode drops a host it has
 * not heard from for its host TTL, 30 s by default, from the parents it offers).
 */
export function pacedKeepaliveMs(intervalMs: number, paceMs: number): number {
  return Math.max(intervalMs, Math.min(PACED_INTERVALS * intervalMs, paceMs))
}
/**
 * A poll the client did not send: the supernode's pace since the task's last one has not
 * passed (SN_ERR_BUSY, as the supernode's own answer would be). Unlike that answer, it says
 * nothing new about the supernode.
 */
export class PollNotDue extends NaiadError {
  constructor(message: string) {
    super('SN_ERR_BUSY', message)
  }
}

/** Tasks whose published digests the client keeps (to be sent only the new ones). */
const MAX_DIGEST_CACHE = 1024

/** Whether a failure says the supernode does not speak the protocol (one older than 1.1.0). */
function unsupported(err: unknown): boolean {
  for (let e = err as { name?: string; cause?: unknown } | undefined, depth = 0; e !== undefined && e !== null && depth < 4; e = e.cause as typeof e, depth++) {
    if (e.name === 'UnsupportedProtocolError') return true
  }
  return false
}

/** Whether a failure was a refused connection (nothing listens there), anywhere in its causes. */
function refused(err: unknown): boolean {
  for (let e = err as { code?: unknown; cause?: unknown } | undefined, depth = 0; e !== undefined && e !== null && depth < 6; e = e.cause as typeof e, depth++) {
    if (e.code === 'ECONNREFUSED') return true
  }
  return false
}

/**
 * A scheduler client over the fabric. Calls share one long-lived session stream
 * (/naiad/scheduler/1.1.0, pipelined); a supernode that only speaks 1.0.0 gets a stream per
 * call instead. After a failure it reports itself unavailable, so downloads stop calling a
 * dead supernode (they wait a bounded while for one that may come back, see
 * unavailableSince); only the daemon's keep-alive announcement (a probe, sent again soon
 * while the supernode is unavailable) tries it again and, when it answers, makes the client
 * available.
 */
export class FabricSchedulerClient implements SchedulerClient {
  private addrs: Multiaddr[] | undefined
  private resolving: Promise<Multiaddr[]> | undefined
  private down = false
  /** See SchedulerClient.unavailableSince. */
  private downSince = 0
  private timeouts = 0
  /** When the last timeout counted towards "down" (calls in flight then are the same silence). */
  private lastTimeoutAt = 0
  private peerId: string | undefined
  /** The supernode answered 1.1.0 with "unsupported": use 1.0.0, a stream per call. */
  private legacy = false
  /** Answers received (any call), and the pace and features the last one carried. */
  private answers = 0
  private pace = 0
  private pacedAt = 0
  private features = 0
  /** Per task, the digests received so far (epoch, in publication order): getParents asks only for newer ones. */
  private readonly digests = new Map<string, { epoch: number; pieces: PieceDigest[] }>()
  /** Per task, when getParents last went out (the pace applies to it). */
  private readonly polledAt = new Map<string, number>()
  /** Reports waiting for this turn of the event loop to end, sent together as one report_batch. */
  private batch: Array<{ req: ReportPiecesRequest; resolve: () => void; reject: (err: unknown) => void }> = []

  private readonly node: FabricNode
  private readonly options: FabricSchedulerClientOptions
  private readonly session: RpcSession<typeof SchedulerRequest.fields, typeof SchedulerResponse.fields>

  constructor(node: FabricNode, options: FabricSchedulerClientOptions) {
    this.node = node
    this.options = options
    this.session = new RpcSession(node, async () => this.resolve(), PROTOCOLS.schedulerSession, SchedulerRequest, SchedulerResponse)
  }

  /** Closes the session stream (on daemon shutdown). */
  async close(): Promise<void> {
    await this.session.close()
  }

  get available(): boolean {
    return !this.down
  }

  get unavailableSince(): number {
    return this.down ? this.downSince : 0
  }

  get supernodeId(): string | undefined {
    return this.peerId
  }

  supernodeAddrs(signal?: AbortSignal): Promise<Multiaddr[]> {
    return this.resolve(signal)
  }

  get paceMs(): number {
    return this.busyRecently() ? this.pace : 0
  }

  private busyRecently(): boolean {
    return this.pace > 0 && Date.now() - this.pacedAt < BUSY_MEMORY_MS
  }

  private resolve(signal?: AbortSignal): Promise<Multiaddr[]> {
    if (this.addrs !== undefined) return Promise.resolve(this.addrs)
    // Calls starting together share one look-up (bounded by the client's timeout, not by
    // the signal of whichever call started it).
    this.resolving ??= this.lookUp().finally(() => { this.resolving = undefined })
    if (signal === undefined) return this.resolving
    return Promise.race([this.resolving, new Promise<never>((_resolve, reject) => {
      if (signal.aborted) reject(new NaiadError('PROTO_ERR_ABORTED', 'supernode look-up was aborted'))
      signal.addEventListener('abort', () => reject(new NaiadError('PROTO_ERR_ABORTED', 'supernode look-up was aborted')), { once: true })
    })])
  }

  private async lookUp(): Promise<Multiaddr[]> {
    const url = `${this.options.supernodeUrl}/api/v1/info`
    let info: { peerId: string; multiaddrs: string[]; credential?: string }
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(this.options.timeoutMs) })
      if (!res.ok) throw new Error(`HTTP ${res.status}`)
      info = await res.json() as typeof info
    } catch (err) {
      throw new NaiadError('PROTO_ERR_DIAL', `cannot reach supernode at ${url}: ${(err as Error).message}`, { cause: err })
    }
    if (this.options.verifySupernode?.(info.peerId, info.credential) === false) {
      throw new NaiadError('PROTO_ERR_FORBIDDEN', `${url} names ${info.peerId}, which holds no supernode credential of this cluster`)
    }
    this.peerId = info.peerId
    this.addrs = info.multiaddrs.map((a) => multiaddr(a.includes('/p2p/') ? a : `${a}/p2p/${info.peerId}`))
    return this.addrs
  }

  private async rpc(req: Partial<SchedulerRequest>, signal?: AbortSignal, probe = false): Promise<SchedulerResponse> {
    if (this.down && !probe) throw new NaiadError('PROTO_ERR_DIAL', 'supernode unavailable (waiting for the keep-alive to reach it again)')
    const answersBefore = this.answers
    const sentAt = Date.now()
    try {
      const addrs = await this.resolve(signal)
      const res = await this.send(addrs, req, signal)
      this.down = false
      this.timeouts = 0
      this.answers++
      this.features = res.features
      this.pace = res.paceMs
      if (res.paceMs > 0) this.pacedAt = Date.now()
      raiseRemote(res.error)
      return res
    } catch (err) {
      const e = err instanceof NaiadError ? err : new NaiadError('PROTO_ERR_DIAL', String(err), { cause: err })
      // A call that timed out while the supernode answered others is slow, not lost: it
      // counts towards "down" only when nothing was heard since it went out.
      // The keep-alive announcement of a supernode still up is a call like the others: only
      // the probe of one already down stays down on a timeout.
      const counts = e.code === 'PROTO_ERR_TIMEOUT' && !(probe && this.down)
      if (counts && this.answers > answersBefore) throw e
      // Calls in flight together time out together: a supernode busy for one timeout, or this
      // process stalled on a loaded machine (every timer then fires at once), is one silence,
      // counted once. Three of them at once had marked every supernode of a cluster down, and
      // the downloads' tasks moved (and were seeded from the origin again).
      if (counts && sentAt < this.lastTimeoutAt) throw e
      if (counts) this.lastTimeoutAt = Date.now()
      if (counts && ++this.timeouts < (this.busyRecently() ? TIMEOUTS_BEFORE_DOWN_BUSY : TIMEOUTS_BEFORE_DOWN)) throw e
      if (e.code.startsWith('PROTO_ERR_') && e.code !== 'PROTO_ERR_ABORTED' && e.code !== 'PROTO_ERR_REMOTE') {
        if (!this.down) {
          this.options.logger.warn({ err: e.message }, 'supernode unreachable; downloads wait for it a while, then go to peers and the origin')
          this.downSince = Date.now()
        }
        // Nothing listens at its address: it is gone, not slow; nobody should wait for it.
        if (refused(e)) this.downSince = 0
        this.down = true
        this.addrs = undefined
        // A half-open stream would swallow the probe too: the probe opens a fresh one.
        this.session.reset('supernode marked unreachable')
        this.legacy = false
      }
      throw e
    }
  }

  private async send(addrs: Multiaddr[], req: Partial<SchedulerRequest>, signal?: AbortSignal): Promise<SchedulerResponse> {
    const options = { signal, timeoutMs: this.options.timeoutMs }
    if (!this.legacy) {
      try {
        return await this.session.call(req, options)
      } catch (err) {
        if (!unsupported(err)) throw err
        this.options.logger.info('supernode predates scheduler sessions (1.1.0); using a stream per call (1.0.0)')
        this.legacy = true
      }
    }
    return call(this.node, addrs, PROTOCOLS.scheduler, SchedulerRequest, SchedulerResponse, req, options)
  }

  /** Announces the host; also the one call that tries a supernode marked unavailable. */
  async announceHost(host: Host, signal?: AbortSignal): Promise<void> {
    await this.rpc({ announceHost: host }, signal, true)
  }

  async registerTask(req: RegisterTaskRequest, signal?: AbortSignal): Promise<TaskInfo> {
    // The registration may be put off (SN_ERR_BUSY with a pace): Registration waits it out.
    const res = await this.rpc({ registerTask: req, features: SCHEDULER_FEATURES.busyRegister }, signal)
    if (res.task === undefined) throw new NaiadError('PROTO_ERR_DECODE', 'scheduler answered registerTask without a task')
    this.keepDigests(req.taskId, res.task.digestEpoch, res.task.pieces.slice())
    return res.task
  }

  /**
   * Reports go out at the end of the current turn of the event loop: those of several tasks
   * made in the same turn (the batchers flush on a common beat) travel as one report_batch
   * call, to a supernode that understands it; each caller still gets its own answer.
   */
  async reportPieces(req: Partial<ReportPiecesRequest> & { taskId: string }, signal?: AbortSignal): Promise<void> {
    if ((this.features & SCHEDULER_FEATURES.reportBatch) === 0 || this.down || this.legacy) {
      await this.rpc({ reportPieces: req as ReportPiecesRequest }, signal)
      return
    }
    signal?.throwIfAborted()
    await new Promise<void>((resolve, reject) => {
      // The batch call runs under the client's own timeout; a caller that gives up stops
      // waiting for it alone (its report may still be recorded, as with any late call).
      const onAbort = (): void => reject(new NaiadError(signal?.reason?.name === 'TimeoutError' ? 'PROTO_ERR_TIMEOUT' : 'PROTO_ERR_ABORTED', 'piece report was given up'))
      signal?.addEventListener('abort', onAbort, { once: true })
      const done = { resolve: () => { signal?.removeEventListener('abort', onAbort); resolve() }, reject: (err: unknown) => { signal?.removeEventListener('abort', onAbort); reject(err as Error) } }
      if (this.batch.push({ req: req as ReportPiecesRequest, ...done }) === 1) setImmediate(() => { this.sendBatch() })
    })
  }

  private sendBatch(): void {
    const batch = this.batch
    this.batch = []
    if (batch.length === 1) {
      this.rpc({ reportPieces: batch[0].req }).then(() => batch[0].resolve(), batch[0].reject)
      return
    }
    this.rpc({ reportBatch: { reports: batch.map((b) => b.req) } }).then((res) => {
      batch.forEach((b, i) => {
        const r = res.results[i]
        if (r === undefined) b.reject(new NaiadError('PROTO_ERR_DECODE', 'scheduler answered a report batch without a result for each report'))
        else if (r.code === '') b.resolve()
        else {
          try {
            raiseRemote(r)
          } catch (err) {
            b.reject(err)
          }
        }
      })
    }, (err: unknown) => { for (const b of batch) b.reject(err) })
  }

  /**
   * Parents for a task. The supernode is told which of the task's digests this client holds
   * and sends only newer ones; the answer handed on carries them all. While the supernode
   * asks for a pace, a poll sooner than that after the last one for the task is not sent
   * (SN_ERR_BUSY): the caller keeps the parents it has.
   */
  async getParents(taskId: string, limit: number, signal?: AbortSignal): Promise<GetParentsResponse> {
    const pace = this.paceMs
    const now = Date.now()
    const last = this.polledAt.get(taskId)
    if (pace > 0 && last !== undefined && now - last < pace) {
      throw new PollNotDue(`the supernode asks for ${pace} ms between polls; next one in ${pace - (now - last)} ms`)
    }
    this.polledAt.delete(taskId)
    this.polledAt.set(taskId, now)
    if (this.polledAt.size > MAX_DIGEST_CACHE) this.polledAt.delete(this.polledAt.keys().next().value!)
    for (let attempt = 0; ; attempt++) {
      const known = this.digests.get(taskId)
      const res = await this.rpc({ getParents: { taskId, limit, digestEpoch: known?.epoch ?? 0, digests: known?.pieces.length ?? 0 } }, signal)
      if (res.parents === undefined) throw new NaiadError('PROTO_ERR_DECODE', 'scheduler answered getParents without parents')
      const task = res.parents.task
      if (task === undefined || task.piecesFrom === 0) {
        if (task !== undefined) this.keepDigests(taskId, task.digestEpoch, task.pieces.slice())
        return res.parents
      }
      const held = this.digests.get(taskId)
      if (held !== undefined && held.epoch === task.digestEpoch && held.pieces.length >= task.piecesFrom) {
        const pieces = held.pieces.slice(0, task.piecesFrom).concat(task.pieces)
        this.keepDigests(taskId, task.digestEpoch, pieces)
        return { ...res.parents, task: { ...task, pieces, piecesFrom: 0 } }
      }
      // The digests it built on are gone here (a concurrent answer of another epoch): ask for all.
      this.digests.delete(taskId)
      if (attempt > 0) throw new NaiadError('PROTO_ERR_DECODE', 'scheduler answered getParents with digests after ones it never sent')
    }
  }

  private keepDigests(taskId: string, epoch: number, pieces: PieceDigest[]): void {
    this.digests.delete(taskId)
    if (epoch === 0) return
    this.digests.set(taskId, { epoch, pieces })
    if (this.digests.size > MAX_DIGEST_CACHE) this.digests.delete(this.digests.keys().next().value!)
  }

  async leaveTask(taskId: string, signal?: AbortSignal): Promise<void> {
    this.digests.delete(taskId)
    this.polledAt.delete(taskId)
    await this.rpc({ leaveTask: { taskId } }, signal)
  }

  async leaveHost(signal?: AbortSignal): Promise<void> {
    await this.rpc({ leaveHost: true }, signal)
  }
}
