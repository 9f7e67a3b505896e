// createDaemon: wires the piece store, scheduler client, download engine, upload server,
// local API and plugins into one daemon.

import { hostname } from 'node:os'
import { join } from 'node:path'

import type { FastifyInstance } from 'fastify'
import type { Logger } from 'pino'
import { createFabricNode, type FabricNode, type NaiadPlugin } from '@naiad/proto'

import { buildLocalApi } from './api/local-api.ts'
import { DAEMON_VERSION, registerBuiltinCommands, type InfoCommandResult } from './control/commands.ts'
import { ControlServer } from './control/control-server.ts'
import type { DownloadProgress, DownloadRequest, DownloadResult, PeerTaskOptions } from './download/peer-task.ts'
import { TaskManager } from './download/task-manager.ts'
import { ProxyServer, type ProxyServerOptions } from './mirror/proxy-server.ts'
import { PluginHost } from './plugins/host.ts'
import { QosHooks } from './qos-hooks.ts'
import type { Stats } from './plugins/metrics.ts'
import { FabricSchedulerClient, type SchedulerClient } from './scheduler/client.ts'
import { OriginClient, ORIGIN_DEFAULTS, type OriginOptions } from './source/origin.ts'
import { DiskPieceStore, type PieceStore } from './storage/piece-store.ts'
import { UploadServer } from './upload/upload-server.ts'

export interface DaemonOptions {
  dataDir: string
  logger: Logger
  /** Supernode HTTP URL; required unless a scheduler component is given. */
  supernodeUrl?: string
  /** HOST:PORT of the local API; omitted for an embedded seed. */
  apiListen?: string
  /** HOST:PORT of the registry mirror and forward proxy; omitted for an embedded seed. */
  proxyListen?: string
  mirror?: ProxyServerOptions
  p2pListen: string[]
  cacheQuota: number
  uploadSlots: number
  download: PeerTaskOptions
  origin?: OriginOptions
  keepaliveMs: number
  host: { idc: string; location: string; labels?: Record<string, string> }
  isSeed?: boolean
  plugins?: NaiadPlugin[]
  pluginSettings?: Record<string, Record<string, unknown>>
}

/** Parts a caller may supply instead of the defaults: a shared fabric node, an in-process scheduler, a wrapped store. */
export interface DaemonComponents {
  node?: FabricNode
  scheduler?: SchedulerClient
  store?: PieceStore
}

/** The `daemon` plugin extension: the daemon's own settings and, once listening, its addresses (base URLs, multiaddrs). */
export interface DaemonInfo {
  dataDir: string
  supernodeUrl: string
  cacheQuota: number
  proxyListen: string
  addresses(): { proxy: string | undefined; api: string | undefined; p2p: string[] }
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

export class Daemon {
  readonly tasks: TaskManager
  /** Control commands from the supernode; plugins add theirs through `ctx.extensions.control`. */
  readonly control: ControlServer
  readonly api: FastifyInstance | undefined
  readonly proxy: ProxyServer | undefined
  private proxyAddress: string | undefined
  private keepalive: NodeJS.Timeout | undefined
  private readonly plugins: PluginHost | undefined
  private apiAddress: string | undefined

  readonly node: FabricNode
  readonly store: PieceStore
  readonly scheduler: SchedulerClient
  readonly upload: UploadServer
  readonly origin: OriginClient
  /** Where a QoS plugin installs its limits (`ctx.extensions.qos`). */
  readonly qos: QosHooks
  private readonly options: DaemonOptions
  private readonly ownsNode: boolean

  constructor(
    node: FabricNode,
    store: PieceStore,
    scheduler: SchedulerClient,
    upload: UploadServer,
    origin: OriginClient,
    options: DaemonOptions,
    ownsNode: boolean,
    qos: QosHooks = new QosHooks()
  ) {
    this.qos = qos
    this.node = node
    this.store = store
    this.scheduler = scheduler
    this.upload = upload
    this.origin = origin
    this.options = options
    this.ownsNode = ownsNode
    this.tasks = new TaskManager({ node, store, scheduler, origin, logger: options.logger, badPeers: new Set(), qos }, options.download)
    this.control = new ControlServer({ node, logger: options.logger.child({ module: 'control' }), supernodeId: () => scheduler.supernodeId })
    registerBuiltinCommands(this.control, { tasks: this.tasks, info: () => this.info() })
    this.api = options.apiListen === undefined ? undefined : buildLocalApi({ tasks: this.tasks, store, logger: options.logger, qos, mirrorProblems: () => this.proxy?.upstreamProblems() ?? [] })
    this.proxy = options.proxyListen === undefined || options.mirror === undefined
      ? undefined
      : new ProxyServer({ tasks: this.tasks, store, logger: options.logger.child({ module: 'mirror' }), swarmAvailable: () => scheduler.available, qos }, options.mirror)
    if (this.api !== undefined) {
      const stats: Stats = {
        cache_bytes: { help: 'Bytes held by the piece store', read: () => store.usage() },
        active_uploads: { help: 'Pieces being served right now', read: () => upload.activeUploads },
        active_downloads: { help: 'Downloads running right now', read: () => this.tasks.active }
      }
      // What plugins may know of the daemon itself; addresses are read once listening.
      const daemon: DaemonInfo = {
        dataDir: options.dataDir,
        supernodeUrl: options.supernodeUrl ?? '',
        cacheQuota: options.cacheQuota,
        proxyListen: options.proxyListen ?? '',
        addresses: () => ({ proxy: this.proxyAddress, api: this.apiAddress, p2p: node.getMultiaddrs().map(String) })
      }
      // What plugins may use of the node: the health plugin re-verifies the cache and re-announces.
      const local = { store, scheduler, announce: () => this.announce() }
      this.plugins = new PluginHost({ host: 'dfdaemon', http: this.api, fabric: node, logger: options.logger, settings: options.pluginSettings ?? {}, extensions: { stats, qos, daemon, control: this.control, ...local } })
    }
  }

  get peerId(): string {
    return this.node.peerId.toString()
  }

  /** The registry mirror's base URL once listening. */
  get proxyUrl(): string | undefined {
    return this.proxyAddress
  }

  /** The local API's base URL once listening. */
  get apiUrl(): string | undefined {
    return this.apiAddress
  }

  /** Who this host is, as the `info` control command answers. */
  info(): InfoCommandResult {
    return { hostId: this.peerId, hostname: hostname(), labels: { ...this.options.host.labels }, version: DAEMON_VERSION }
  }

  download(req: DownloadRequest, options: { signal?: AbortSignal; onProgress?: (p: DownloadProgress) => void } = {}): Promise<DownloadResult> {
    return this.tasks.download(req, options)
  }

  async start(): Promise<void> {
    await this.upload.start()
    // The embedded seed shares the supernode's fabric node: it takes no commands.
    if (!this.options.isSeed) await this.control.start()
    if (this.api !== undefined && this.options.apiListen !== undefined) {
      await this.plugins?.setup(this.options.plugins ?? [])
      const [host, port] = splitHostPort(this.options.apiListen)
      this.apiAddress = await this.api.listen({ host, port: Number(port) })
    }
    if (this.proxy !== undefined && this.options.proxyListen !== undefined) {
      const [host, port] = splitHostPort(this.options.proxyListen)
      this.proxyAddress = await this.proxy.listen(host, Number(port))
    }
    if (!this.options.isSeed) {
      await this.announce()
      this.keepalive = setInterval(() => { this.announce().catch(() => {}) }, this.options.keepaliveMs)
      this.keepalive.unref()
    }
    this.options.logger.info({ peerId: this.peerId, api: this.apiAddress, proxy: this.proxyAddress, p2p: this.node.getMultiaddrs().map(String) }, 'dfdaemon ready')
  }

  private async announce(): Promise<void> {
    const wasDown = !this.scheduler.available
    try {
      await this.scheduler.announceHost({
        id: this.peerId,
        hostname: hostname(),
        ip: '',
        idc: this.options.host.idc,
        location: this.options.host.location,
        multiaddrs: advertisedAddrs(this.node.getMultiaddrs().map(String)),
        uploadSlots: this.options.uploadSlots,
        isSeed: this.options.isSeed === true,
        labels: Object.entries(this.options.host.labels ?? {}).map(([k, v]) => `${k}=${v}`)
      }, AbortSignal.timeout(this.options.download.schedulerTimeoutMs))
      if (wasDown) this.options.logger.info('reconnected to the supernode')
    } catch (err) {
      this.options.logger.warn({ err: (err as Error).message }, 'cannot announce to the supernode; downloads fall back to peers and the origin')
    }
  }

  async stop(): Promise<void> {
    if (this.keepalive !== undefined) clearInterval(this.keepalive)
    await this.control.stop()
    if (!this.options.isSeed && this.scheduler.available) {
      await this.scheduler.leaveHost(AbortSignal.timeout(1000)).catch(() => {})
    }
    await this.tasks.close()
    await this.api?.close()
    await this.proxy?.close()
    await this.plugins?.close()
    await this.upload.stop().catch(() => {})
    if (this.ownsNode) await this.node.stop()
    await this.origin.close()
    await this.store.close()
  }
}

/**
 * Loopback addresses are only useful to peers on the same host; when the daemon also
 * listens elsewhere, leave them out so remote peers don't dial their own loopback.
 */
export function advertisedAddrs(addrs: string[]): string[] {
  const remote = addrs.filter((a) => !a.startsWith('/ip4/127.') && !a.startsWith('/ip6/::1/'))
  return remote.length > 0 ? remote : addrs
}

/** The IP address of a listen multiaddr (`/ip4/0.0.0.0/tcp/65002` → `0.0.0.0`), else all IPv4. */
export function listenHost(addr: string | undefined): string {
  const m = /^\/ip[46]\/([^/]+)\//.exec(addr ?? '')
  return m === null ? '0.0.0.0' : m[1]
}

export function splitHostPort(hp: string): [string, string] {
  const i = hp.lastIndexOf(':')
  return [hp.slice(0, i).replace(/^\[|\]$/g, ''), hp.slice(i + 1)]
}

export async function createDaemon(options: DaemonOptions, components: DaemonComponents = {}): Promise<Daemon> {
  const node = components.node ?? await createFabricNode({ dataDir: options.dataDir, listen: options.p2pListen })
  const store = components.store ?? new DiskPieceStore({ dir: join(options.dataDir, 'cache'), quota: options.cacheQuota })
  let scheduler = components.scheduler
  if (scheduler === undefined) {
    if (options.supernodeUrl === undefined) throw new Error('createDaemon needs supernodeUrl or a scheduler component')
    scheduler = new FabricSchedulerClient(node, { supernodeUrl: options.supernodeUrl, timeoutMs: options.download.schedulerTimeoutMs, logger: options.logger.child({ module: 'scheduler-client' }) })
  }
  const dataChannel = options.download.dataChannel === true ? { host: listenHost(options.p2pListen[0]), port: 0 } : undefined
  const qos = new QosHooks()
  const upload = new UploadServer({ node, store, logger: options.logger.child({ module: 'upload' }), qos }, { slots: options.uploadSlots, dataChannel })
  const origin = new OriginClient(options.origin ?? ORIGIN_DEFAULTS)
  return new Daemon(node, store, scheduler, upload, origin, options, components.node === undefined, qos)
}
