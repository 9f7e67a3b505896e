// How a daemon talks to its scheduler. The fabric client reaches a remote supernode; the
// supernode's embedded seed gets an in-process implementation of the same interface.

import type { Logger } from 'pino'
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'
import {
  call, NaiadError, PROTOCOLS, raiseRemote, SchedulerRequest, SchedulerResponse,
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
  getParents(taskId: string, limit: number, signal?: AbortSignal): Promise<GetParentsResponse>
  leaveTask(taskId: string, signal?: AbortSignal): Promise<void>
  leaveHost(signal?: AbortSignal): Promise<void>
}

export interface FabricSchedulerClientOptions {
  /** The supernode's HTTP URL; `/api/v1/info` there gives its peer ID and multiaddrs. */
  supernodeUrl: string
  timeoutMs: number
  logger: Logger
}

/**
 * Consecutive call timeouts after which a supernode counts as unreachable. A busy
 * supernode answering one call late is not an outage: marking it down would send every
 * download of this node to the origin until the next keep-alive. A refused or failed
 * dial marks it down at once.
 */
const TIMEOUTS_BEFORE_DOWN = 3

/**
 * A scheduler client over the fabric. After a failure it reports itself unavailable, so
 * downloads go to the origin at once instead of waiting on a dead supernode; only the
 * daemon's keep-alive announcement (a probe) tries the supernode again and, when it
 * answers, makes the client available.
 */
export class FabricSchedulerClient implements SchedulerClient {
  private addrs: Multiaddr[] | undefined
  private down = false
  private timeouts = 0
  private peerId: string | undefined

  private readonly node: FabricNode
  private readonly options: FabricSchedulerClientOptions

  constructor(node: FabricNode, options: FabricSchedulerClientOptions) {
    this.node = node
    this.options = options
  }

  get available(): boolean {
    return !this.down
  }

  get supernodeId(): string | undefined {
    return this.peerId
  }

  private async resolve(signal?: AbortSignal): Promise<Multiaddr[]> {
    if (this.addrs !== undefined) return this.addrs
    const url = `${this.options.supernodeUrl}/api/v1/info`
    let info: { peerId: string; multiaddrs: string[] }
    try {
      const res = await fetch(url, { signal: AbortSignal.any([AbortSignal.timeout(this.options.timeoutMs), ...(signal ? [signal] : [])]) })
      if (!res.ok) throw new Error(`HTTP ${res.status}`)
      info = await res.json() as typeof info
    } catch (err) {
      throw new NaiadError('PROTO_ERR_DIAL', `cannot reach supernode at ${url}: ${(err as Error).message}`, { cause: err })
    }
    this.peerId = info.peerId
    this.addrs = info.multiaddrs.map((a) => multiaddr(a.includes('/p2p/') ? a : `${a}/p2p/${info.peerId}`))
    return this.addrs
  }

  private async rpc(req: Partial<SchedulerRequest>, signal?: AbortSignal, probe = false): Promise<SchedulerResponse> {
    if (this.down && !probe) throw new NaiadError('PROTO_ERR_DIAL', 'supernode unavailable (waiting for the keep-alive to reach it again)')
    try {
      const addrs = await this.resolve(signal)
      const res = await call(this.node, addrs, PROTOCOLS.scheduler, SchedulerRequest, SchedulerResponse, req, {
        signal,
        timeoutMs: this.options.timeoutMs
      })
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
      }
      throw e
    }
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

  async getParents(taskId: string, limit: number, signal?: AbortSignal): Promise<GetParentsResponse> {
    const res = await this.rpc({ getParents: { taskId, limit } }, signal)
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
