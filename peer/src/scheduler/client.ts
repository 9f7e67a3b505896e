// How a daemon talks to its scheduler. The fabric client reaches a remote supernode; the
// supernode's embedded seed gets an in-process implementation of the same interface.

import type { Logger } from 'pino'
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'
import {
  call, NaiadError, PROTOCOLS, raiseRemote, RpcSession, SchedulerRequest, SchedulerResponse,
  type FabricNode, type GetParentsResponse, type Host, type RegisterTaskRequest, type ReportPiecesRequest, type TaskInfo
} from '@naiad/proto'

export interface SchedulerClient {
  /** False while the scheduler is known to be unreachable; callers skip it instead of waiting. */
  readonly available: boolean
  /** The supernode's peer ID once known (from its /api/v1/info); the one peer allowed to send control commands. */
  readonly supernodeId?: string
  announceHost(host: Host, signal?: AbortSignal): Promise<void>
  registerTask(req: RegisterTaskRequest, signal?: AbortSignal): Promise<TaskInfo>
  reportPieces(req: Partial<ReportPiecesRequest> & { taskId: string }, signal?: AbortSignal): Promise<void>
  /** `digestsFrom`: the caller holds the digests of the pieces below it (the answer leaves them out). */
  getParents(taskId: string, limit: number, signal?: AbortSignal, digestsFrom?: number): Promise<GetParentsResponse>
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

/** Whether a failure says the supernode does not speak the protocol (one older than 1.1.0). */
function unsupported(err: unknown): boolean {
  for (let e = err as { name?: string; cause?: unknown } | undefined, depth = 0; e !== undefined && e !== null && depth < 4; e = e.cause as typeof e, depth++) {
    if (e.name === 'UnsupportedProtocolError') return true
  }
  return false
}

/**
 * A scheduler client over the fabric. Calls share one long-lived session stream
 * (/naiad/scheduler/1.1.0, pipelined); a supernode that only speaks 1.0.0 gets a stream per
 * call instead. After a failure it reports itself unavailable, so
 * downloads go to the origin at once instead of waiting on a dead supernode; only the
 * daemon's keep-alive announcement (a probe) tries the supernode again and, when it
 * answers, makes the client available.
 */
export class FabricSchedulerClient implements SchedulerClient {
  private addrs: Multiaddr[] | undefined
  private resolving: Promise<Multiaddr[]> | undefined
  private down = false
  private timeouts = 0
  private peerId: string | undefined
  /** The supernode answered 1.1.0 with "unsupported": use 1.0.0, a stream per call. */
  private legacy = false

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

  get supernodeId(): string | undefined {
    return this.peerId
  }

  supernodeAddrs(signal?: AbortSignal): Promise<Multiaddr[]> {
    return this.resolve(signal)
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
    try {
      const addrs = await this.resolve(signal)
      const res = await this.send(addrs, req, signal)
      this.down = false
      this.timeouts = 0
      raiseRemote(res.error)
      return res
    } catch (err) {
      const e = err instanceof NaiadError ? err : new NaiadError('PROTO_ERR_DIAL', String(err), { cause: err })
      if (e.code === 'PROTO_ERR_TIMEOUT' && !probe && ++this.timeouts < TIMEOUTS_BEFORE_DOWN) throw e
      if (e.code.startsWith('PROTO_ERR_') && e.code !== 'PROTO_ERR_ABORTED' && e.code !== 'PROTO_ERR_REMOTE') {
        if (!this.down) this.options.logger.warn({ err: e.message }, 'supernode unreachable; downloads go to peers and the origin')
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
    const res = await this.rpc({ registerTask: req }, signal)
    if (res.task === undefined) throw new NaiadError('PROTO_ERR_DECODE', 'scheduler answered registerTask without a task')
    return res.task
  }

  async reportPieces(req: Partial<ReportPiecesRequest> & { taskId: string }, signal?: AbortSignal): Promise<void> {
    await this.rpc({ reportPieces: req as ReportPiecesRequest }, signal)
  }

  async getParents(taskId: string, limit: number, signal?: AbortSignal, digestsFrom = 0): Promise<GetParentsResponse> {
    const res = await this.rpc({ getParents: { taskId, limit, digestsFrom } }, signal)
    if (res.parents === undefined) throw new NaiadError('PROTO_ERR_DECODE', 'scheduler answered getParents without parents')
    return res.parents
  }

  async leaveTask(taskId: string, signal?: AbortSignal): Promise<void> {
    await this.rpc({ leaveTask: { taskId } }, signal)
  }

  async leaveHost(signal?: AbortSignal): Promise<void> {
    await this.rpc({ leaveHost: true }, signal)
  }
}
