// createPeerEngine: the piece engine one node runs, whether it is a daemon or the
// supernode's seed — the piece store, the scheduler client, downloads (parents and the
// origin), the data channel both ways, and the QoS and admission seams.

import { join } from 'node:path'

import type { Logger } from 'pino'
import { createFabricNode, identityOf, type FabricGuard, type FabricNode } from '@naiad/proto'

import { OPEN_ACCESS, type PeerAccess } from './access/access.ts'
import type { DataTransport } from './channel/connection.ts'
import { DataClient } from './channel/data-client.ts'
import { DataServer } from './channel/data-server.ts'
import { nodeIdentity } from './channel/identity.ts'
import { StagingPool } from './download/staging.ts'
import { TaskManager } from './download/task-manager.ts'
import type { PeerTaskOptions } from './download/types.ts'
import { QosHooks } from './qos/hooks.ts'
import { FabricSchedulerClient, type SchedulerClient } from './scheduler/client.ts'
import { ClusterSchedulerClient } from './scheduler/cluster-client.ts'
import { ORIGIN_DEFAULTS } from './config/options.ts'
import { OriginClient, type OriginOptions } from './source/origin.ts'
import { LivePieces } from './storage/live-pieces.ts'
import { DiskPieceStore, type PieceStore } from './storage/piece-store.ts'

export interface PeerEngineOptions {
  /** The store lives in `<dataDir>/cache`; the fabric identity in `<dataDir>` unless a node is given. */
  dataDir: string
  logger: Logger
  /** Supernode HTTP URL; required unless a scheduler component is given. */
  supernodeUrl?: string
  /**
   * Every supernode URL the node was given (a host name stands for each address it resolves
   * to): the scheduler client then spreads tasks over the cluster's live supernodes. Absent:
   * `supernodeUrl` alone, one supernode.
   */
  supernodeUrls?: string[]
  p2pListen: string[]
  cacheQuota: number
  /** Pieces served to other peers at once. */
  uploadSlots: number
  download: PeerTaskOptions
  origin?: OriginOptions
  /** The data channel: where it listens (port 0: any) and whether it is TLS (default) or plain TCP. */
  data: { host: string; port: number; transport: DataTransport }
  /** Cluster membership on the fabric node the engine makes (see proto's FabricGuard). */
  guard?: FabricGuard
  /** Checks the supernode's identity before the scheduler client trusts it (see FabricSchedulerClientOptions). */
  verifySupernode?: (peerId: string, credential: string | undefined) => boolean
}

/** Parts a caller may supply instead of the defaults: a shared fabric node, an in-process scheduler, a wrapped store, cluster admission. */
export interface PeerEngineComponents {
  node?: FabricNode
  scheduler?: SchedulerClient
  store?: PieceStore
  /** Who may use this node's data channel and for which tasks (cluster admission); everyone by default. */
  access?: PeerAccess
}

export class PeerEngine {
  readonly node: FabricNode
  readonly store: PieceStore
  readonly scheduler: SchedulerClient
  readonly origin: OriginClient
  readonly tasks: TaskManager
  /** Serves this node's pieces to other peers. */
  readonly dataServer: DataServer
  /** Fetches pieces from other peers. */
  readonly dataClient: DataClient
  /** Where a QoS plugin installs its limits. */
  readonly qos: QosHooks
  /** Admission of data-channel peers and per-task grants. */
  readonly access: PeerAccess
  private readonly ownsNode: boolean

  constructor(parts: {
    node: FabricNode; store: PieceStore; scheduler: SchedulerClient; origin: OriginClient; qos: QosHooks
    dataServer: DataServer; dataClient: DataClient; tasks: TaskManager; ownsNode: boolean; access: PeerAccess
  }) {
    this.node = parts.node
    this.store = parts.store
    this.scheduler = parts.scheduler
    this.origin = parts.origin
    this.qos = parts.qos
    this.dataServer = parts.dataServer
    this.dataClient = parts.dataClient
    this.tasks = parts.tasks
    this.access = parts.access
    this.ownsNode = parts.ownsNode
  }

  get peerId(): string {
    return this.node.peerId.toString()
  }

  /** What a host announces of its data channel: its port and transport. */
  get dataChannel(): { port: number; transport: DataTransport } {
    return { port: this.dataServer.port, transport: this.dataServer.transport }
  }

  get activeUploads(): number {
    return this.dataServer.activeUploads
  }

  async start(): Promise<void> {
    await this.dataServer.start()
  }

  /** Stops downloads and uploads and closes the store (and the fabric node when the engine made it). */
  async stop(): Promise<void> {
    await this.tasks.close()
    this.dataClient.close()
    await this.dataServer.stop().catch(() => {})
    if (this.ownsNode) await this.node.stop()
    await this.origin.close()
    await this.store.close()
  }
}

export async function createPeerEngine(options: PeerEngineOptions, components: PeerEngineComponents = {}): Promise<PeerEngine> {
  const node = components.node ?? await createFabricNode({ dataDir: options.dataDir, listen: options.p2pListen, guard: options.guard })
  let scheduler = components.scheduler
  // An evicted task must leave the scheduler's view at once: other peers would otherwise be
  // sent here for its pieces, and the seed would not hand them out while this node 'has' them
  // (downloads then waited out the stall timeout and went to the origin).
  const store = components.store ?? new DiskPieceStore({
    dir: join(options.dataDir, 'cache'),
    quota: options.cacheQuota,
    onEvicted: (taskId) => {
      scheduler?.leaveTask(taskId, AbortSignal.timeout(options.download.schedulerTimeoutMs)).catch((err: unknown) => {
        options.logger.debug({ taskId, err: (err as Error).message }, 'could not tell the scheduler an evicted task is gone')
      })
    }
  })
  if (scheduler === undefined) {
    const logger = options.logger.child({ module: 'scheduler-client' })
    if (options.supernodeUrls !== undefined && options.supernodeUrls.length > 0) {
      scheduler = new ClusterSchedulerClient(node, { supernodeUrls: options.supernodeUrls, timeoutMs: options.download.schedulerTimeoutMs, logger, verifySupernode: options.verifySupernode })
    } else {
      if (options.supernodeUrl === undefined) throw new Error('createPeerEngine needs supernodeUrl or a scheduler component')
      scheduler = new FabricSchedulerClient(node, { supernodeUrl: options.supernodeUrl, timeoutMs: options.download.schedulerTimeoutMs, logger, verifySupernode: options.verifySupernode })
    }
  }
  const access = components.access ?? OPEN_ACCESS
  const identity = nodeIdentity(identityOf(node))
  const qos = new QosHooks()
  const live = new LivePieces()
  const sources = new Set<string>()
  const dataServer = new DataServer({
    store, live, isSource: (taskId) => sources.has(taskId), identity, access, qos, logger: options.logger.child({ module: 'upload' })
  }, {
    host: options.data.host,
    port: options.data.port,
    transport: options.data.transport,
    slots: options.uploadSlots,
    pieceTimeoutMs: options.download.pieceTimeoutMs
  })
  const dataClient = new DataClient({ identity, access, logger: options.logger.child({ module: 'download' }) }, {
    connectTimeoutMs: Math.min(10_000, options.download.pieceTimeoutMs),
    idleMs: 60_000
  })
  const origin = new OriginClient(options.origin ?? ORIGIN_DEFAULTS)
  const tasks = new TaskManager({
    store, scheduler, origin, data: dataClient, live, sources, logger: options.logger, badPeers: new Set(), qos, staging: new StagingPool()
  }, options.download)
  return new PeerEngine({ node, store, scheduler, origin, qos, dataServer, dataClient, tasks, ownsNode: components.node === undefined, access })
}
