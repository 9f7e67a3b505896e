// The seed: a piece engine (the peer package) inside the supernode. It shares the
// supernode's fabric node (so it serves pieces under the supernode's peer ID), talks to the
// scheduler in-process, and is the one peer whose piece digests everyone else verifies
// against.

import type { Logger } from 'pino'
import { createPeerEngine, type DataTransport, type DestinationPolicy, type OriginOptions, type PeerAccess, type PeerEngine, type PeerTaskOptions, type SchedulerClient } from '@naiad/peer'
import {
  raiseRemote, SchedulerRequest, SchedulerResponse, NaiadError,
  type FabricNode, type GetParentsResponse, type Host, type RegisterTaskRequest, type ReportPiecesRequest, type TaskInfo
} from '@naiad/proto'

import type { Scheduler, TaskState } from '../scheduler/scheduler.ts'
import { handleSchedulerRequest } from '../scheduler/service.ts'

/** The scheduler interface, served in-process. Requests pass through the codec so the seed sees exactly what a remote peer would. */
class LocalSchedulerClient implements SchedulerClient {
  readonly available = true
  private readonly scheduler: Scheduler
  private readonly hostId: string

  constructor(scheduler: Scheduler, hostId: string) {
    this.scheduler = scheduler
    this.hostId = hostId
  }

  private call(req: Partial<SchedulerRequest>): SchedulerResponse {
    const res = SchedulerResponse.decode(SchedulerResponse.encode(
      handleSchedulerRequest(this.scheduler, this.hostId, SchedulerRequest.decode(SchedulerRequest.encode(req)))
    ))
    raiseRemote(res.error)
    return res
  }

  async announceHost(host: Host): Promise<void> { this.call({ announceHost: host }) }
  async registerTask(req: RegisterTaskRequest): Promise<TaskInfo> {
    const t = this.call({ registerTask: req }).task
    if (t === undefined) throw new NaiadError('PROTO_ERR_DECODE', 'registerTask without a task')
    return t
  }
  async reportPieces(req: Partial<ReportPiecesRequest> & { taskId: string }): Promise<void> { this.call({ reportPieces: req as ReportPiecesRequest }) }
  async getParents(taskId: string, limit: number): Promise<GetParentsResponse> {
    const p = this.call({ getParents: { taskId, limit, digestEpoch: 0, digests: 0 } }).parents
    if (p === undefined) throw new NaiadError('PROTO_ERR_DECODE', 'getParents without parents')
    return p
  }
  async leaveTask(taskId: string): Promise<void> { this.call({ leaveTask: { taskId } }) }
  async leaveHost(): Promise<void> { this.call({ leaveHost: true }) }
}

export interface SeedOptions {
  dataDir: string
  cacheQuota: number
  uploadSlots: number
  download: PeerTaskOptions
  /** The origin client's settings (the policy is added from `policy`). */
  origin: OriginOptions
  /** The supernode's fabric listen addresses. */
  p2pListen: string[]
  /** The seed's data channel. */
  data: { host: string; port: number; transport: DataTransport }
  /** What the seed may fetch (source.allow). */
  policy?: DestinationPolicy
  /** Who may fetch the seed's pieces: members with the supernode's grant. */
  access?: PeerAccess
  logger: Logger
}

export class Seed {
  readonly engine: PeerEngine
  private readonly logger: Logger

  private constructor(engine: PeerEngine, logger: Logger) {
    this.engine = engine
    this.logger = logger
  }

  static async create(node: FabricNode, scheduler: Scheduler, options: SeedOptions): Promise<Seed> {
    const client = new LocalSchedulerClient(scheduler, node.peerId.toString())
    const engine = await createPeerEngine({
      dataDir: options.dataDir,
      logger: options.logger,
      cacheQuota: options.cacheQuota,
      uploadSlots: options.uploadSlots,
      download: options.download,
      p2pListen: options.p2pListen,
      data: options.data,
      origin: { ...options.origin, policy: options.policy }
    }, { node, scheduler: client, access: options.access })
    return new Seed(engine, options.logger)
  }

  /**
   * Fetches a task from its origin in the background; its progress reaches the scheduler as
   * piece reports. `proven` are the headers a node proved it may read a private task with.
   */
  trigger(task: TaskState, proven?: Record<string, string>): void {
    const headers = proven ?? Object.fromEntries(task.headers.map((h) => [h.name, h.value]))
    this.engine.tasks.download({
      url: task.url,
      headers,
      digest: task.digest === '' ? undefined : task.digest,
      range: task.range === '' ? undefined : task.range,
      filter: task.filter
    }).then((r) => {
      this.logger.info({ task: task.id.slice(0, 12), bytes: r.contentLength, cached: r.cached }, 'seed holds task')
    }, (err: unknown) => {
      this.logger.warn({ task: task.id.slice(0, 12), err: (err as Error).message }, 'seed download failed')
    })
  }
}
