// createPeerEngine: the piece engine one node runs, whether it is a daemon or the
// supernode's seed — the piece store, the scheduler client, downloads (parents and the
// origin), the upload side and the QoS seam.

import { join } from 'node:path'

import type { Logger } from 'pino'
import { createFabricNode, type FabricGuard, type FabricNode } from '@naiad/proto'

import { OPEN_ACCESS, type PeerAccess } from './access/access.ts'

import type { PeerTaskOptions } from './download/peer-task.ts'
import { TaskManager } from './download/task-manager.ts'
import { QosHooks } from './qos/hooks.ts'
import { FabricSchedulerClient, type SchedulerClient } from './scheduler/client.ts'
import { OriginClient, ORIGIN_DEFAULTS, type OriginOptions } from './source/origin.ts'
import { DiskPieceStore, type PieceStore } from './storage/piece-store.ts'
import { UploadServer } from './upload/upload-server.ts'

export interface PeerEngineOptions {
  /** The store lives in `<dataDir>/cache`; the fabric identity in `<dataDir>` unless a node is given. */
  dataDir: string
  logger: Logger
  /** Supernode HTTP URL; required unless a scheduler component is given. */
  supernodeUrl?: string
  p2pListen: string[]
  cacheQuota: number
  uploadSlots: number
  download: PeerTaskOptions
  origin?: OriginOptions
  /** Where the plain-TCP data channel listens, when `download.dataChannel` is on (port 0: any). */
  dataListen?: { host: string; port: number }
  /** Cluster membership on the fabric node the engine makes (see proto's FabricGuard). */
  guard?: FabricGuard
  /** Checks the supernode's identity before the scheduler client trusts it (see FabricSchedulerClientOptions). */
  verifySupernode?: (peerId: string, credential: string | undefined) => boolean
}

/** Parts a caller may supply instead of the defaults: a shared fabric node, an in-process scheduler, a wrapped store. */
export interface PeerEngineComponents {
  node?: FabricNode
  scheduler?: SchedulerClient
  store?: PieceStore
  /** Who may use this node's data channel and for which tasks (cluster admission); everyone by default. */
  access?: PeerAccess
}

export const DOWNLOAD_DEFAULTS: PeerTaskOptions = {
  concurrency: 8,
  perParent: 3,
  pieceTimeoutMs: 30_000,
  schedulerTimeoutMs: 2_000,
  stallTimeoutMs: 10_000,
  refreshMs: 250,
  slowPieceMinMs: 2_000
}

export class PeerEngine {
  readonly node: FabricNode
  readonly store: PieceStore
  readonly scheduler: SchedulerClient
  readonly upload: UploadServer
  readonly origin: OriginClient
  readonly tasks: TaskManager
  /** Where a QoS plugin installs its limits. */
  readonly qos: QosHooks
  /** Admission of data-channel peers and per-task grants. */
  readonly access: PeerAccess
  private readonly ownsNode: boolean

  constructor(parts: { node: FabricNode; store: PieceStore; scheduler: SchedulerClient; upload: UploadServer; origin: OriginClient; qos: QosHooks; ownsNode: boolean; access?: PeerAccess }, logger: Logger, download: PeerTaskOptions) {
    this.node = parts.node
    this.store = parts.store
    this.scheduler = parts.scheduler
    this.upload = parts.upload
    this.origin = parts.origin
    this.qos = parts.qos
    this.access = parts.access ?? OPEN_ACCESS
    this.ownsNode = parts.ownsNode
    this.tasks = new TaskManager({ node: parts.node, store: parts.store, scheduler: parts.scheduler, origin: parts.origin, logger, badPeers: new Set(), qos: parts.qos }, download)
  }

  get peerId(): string {
    return this.node.peerId.toString()
  }

  async start(): Promise<void> {
    await this.upload.start()
  }

  /** Stops downloads and uploads and closes the store (and the fabric node when the engine made it). */
  async stop(): Promise<void> {
    await this.tasks.close()
    await this.upload.stop().catch(() => {})
    if (this.ownsNode) await this.node.stop()
    await this.origin.close()
    await this.store.close()
  }
}

export async function createPeerEngine(options: PeerEngineOptions, components: PeerEngineComponents = {}): Promise<PeerEngine> {
  const node = components.node ?? await createFabricNode({ dataDir: options.dataDir, listen: options.p2pListen, guard: options.guard })
  const store = components.store ?? new DiskPieceStore({ dir: join(options.dataDir, 'cache'), quota: options.cacheQuota })
  let scheduler = components.scheduler
  if (scheduler === undefined) {
    if (options.supernodeUrl === undefined) throw new Error('createPeerEngine needs supernodeUrl or a scheduler component')
    scheduler = new FabricSchedulerClient(node, { supernodeUrl: options.supernodeUrl, timeoutMs: options.download.schedulerTimeoutMs, logger: options.logger.child({ module: 'scheduler-client' }), verifySupernode: options.verifySupernode })
  }
  const dataChannel = options.download.dataChannel === true ? options.dataListen ?? { host: '0.0.0.0', port: 0 } : undefined
  const qos = new QosHooks()
  const upload = new UploadServer({ node, store, logger: options.logger.child({ module: 'upload' }), qos }, { slots: options.uploadSlots, dataChannel })
  const origin = new OriginClient(options.origin ?? ORIGIN_DEFAULTS)
  return new PeerEngine({ node, store, scheduler, upload, origin, qos, ownsNode: components.node === undefined, access: components.access }, options.logger, options.download)
}
