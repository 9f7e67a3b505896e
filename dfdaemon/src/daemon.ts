// createDaemon: the piece engine (peer package) plus what only a node's daemon has — the
// local API, the registry mirror and forward proxy, control commands from the supernode,
// host announcements, cluster membership and plugins.

import { hostname } from 'node:os'

import type { FastifyInstance } from 'fastify'
import { advertisedAddrs, PluginHost, splitHostPort, type Stats } from '@naiad/host'
import {
  createPeerEngine, DestinationPolicy, ORIGIN_DEFAULTS, type DownloadProgress, type DownloadRequest, type DownloadResult,
  type PeerEngine, type PeerEngineComponents, type PieceStore, type QosHooks, type SchedulerClient, type TaskManager
} from '@naiad/peer'
import { call, loadPeerId, NaiadError, raiseRemote, secureDir, type FabricNode, type InfoCommandResult } from '@naiad/proto'

import { KeepAlive } from './admission/keepalive.ts'
import { NodeMembership } from './admission/membership.ts'
import { buildLocalApi } from './api/local-api.ts'
import type { DaemonOptions } from './config/daemon-options.ts'
import { DAEMON_VERSION, registerBuiltinCommands } from './control/commands.ts'
import { ControlServer } from './control/control-server.ts'
import { BlobPermission } from './mirror/blob-permission.ts'
import { ProxyServer, type ProxyServerOptions } from './mirror/proxy-server.ts'
import type { DaemonInfo, DaemonPluginContext, SupernodeLink } from './plugin-api/context.ts'

/** Parts a caller may supply instead of the defaults: a shared fabric node, an in-process scheduler, a wrapped store. */
export type DaemonComponents = PeerEngineComponents

/** How often the daemon renews its credential and learns revocations. */
const MEMBERSHIP_REFRESH_MS = 60_000

/** The registries a daemon is configured for: always allowed destinations. */
function registryEntries(mirror: ProxyServerOptions | undefined): string[] {
  if (mirror === undefined) return []
  const out = [...mirror.insecure, ...mirror.credentials.keys()]
  try {
    out.push(new URL(mirror.defaultRegistry).host)
  } catch { /* validated as a URL at start-up */ }
  return out
}

export class Daemon {
  /** The piece engine: store, scheduler client, downloads, uploads, QoS seam. */
  readonly engine: PeerEngine
  /** Cluster membership: the credential, the guard, revocations; undefined with an in-process scheduler. */
  readonly membership: NodeMembership | undefined
  /** The registry's permission check for blob URLs served from the cache or the swarm (local API, forward proxy). */
  readonly permission: BlobPermission
  /** Control commands from the supernode; plugins add theirs through their context's `handle`. */
  readonly control: ControlServer
  readonly api: FastifyInstance | undefined
  readonly proxy: ProxyServer | undefined
  private proxyAddress: string | undefined
  private keepalive: KeepAlive | undefined
  private refresher: NodeJS.Timeout | undefined
  private readonly plugins: PluginHost<'dfdaemon', DaemonPluginContext> | undefined
  private apiAddress: string | undefined
  private readonly options: DaemonOptions

  constructor(engine: PeerEngine, options: DaemonOptions, membership?: NodeMembership, policy?: DestinationPolicy) {
    this.engine = engine
    this.options = options
    this.membership = membership
    const { node, store, scheduler, qos, tasks } = engine
    this.permission = new BlobPermission({ credentials: options.mirror?.credentials ?? new Map(), caFile: options.mirror?.caFile, policy, timeoutMs: 30_000 })
    this.control = new ControlServer({ node, logger: options.logger.child({ module: 'control' }), supernodeId: () => scheduler.supernodeId, isSupernode: scheduler.isSupernode === undefined ? undefined : (id) => scheduler.isSupernode!(id) })
    registerBuiltinCommands(this.control, { tasks, info: () => this.info(), revoke: membership === undefined ? undefined : (peers) => membership.revoke(node, peers) })
    this.api = options.apiListen === undefined ? undefined : buildLocalApi({ tasks, store, logger: options.logger, qos, mirrorProblems: () => this.proxy?.upstreamProblems() ?? [], permission: this.permission })
    this.proxy = options.proxyListen === undefined || options.mirror === undefined
      ? undefined
      : new ProxyServer({ tasks, store, logger: options.logger.child({ module: 'mirror' }), swarmAvailable: () => scheduler.available, qos, permission: this.permission }, { ...options.mirror, policy })
    if (this.api !== undefined) {
      const stats: Stats = {
        cache_bytes: { help: 'Bytes held by the piece store', read: () => store.usage() },
        active_uploads: { help: 'Pieces being served right now', read: () => engine.activeUploads },
        active_downloads: { help: 'Downloads running right now', read: () => tasks.active }
      }
      // What plugins may know of the daemon itself; addresses are read once listening.
      const daemon: DaemonInfo = {
        dataDir: options.dataDir,
        supernodeUrl: options.supernodeUrl ?? '',
        cacheQuota: options.cacheQuota,
        proxyListen: options.proxyListen ?? '',
        addresses: () => ({ proxy: this.proxyAddress, api: this.apiAddress, p2p: node.getMultiaddrs().map(String) })
      }
      const supernode: SupernodeLink = {
        call: async (protocol, request, response, message, opts) => {
          if (scheduler.supernodeAddrs === undefined) throw new NaiadError('PROTO_ERR_DIAL', 'this daemon has no supernode to call (in-process scheduler)')
          const res = await call(node, await scheduler.supernodeAddrs(opts.signal), protocol, request, response, message, opts)
          raiseRemote((res as { error?: { code: string; message: string } }).error)
          return res
        }
      }
      const control = this.control
      this.plugins = new PluginHost({
        host: 'dfdaemon', http: this.api, fabric: node, logger: options.logger, settings: options.pluginSettings ?? {}, stats,
        extend: (base, scope): DaemonPluginContext => ({
          ...base,
          daemon,
          store,
          scheduler,
          supernode,
          announce: async () => { await this.announce() },
          handle: (command, handler, parse) => scope.track(control.handle(command, handler, parse)),
          installQos: (limiter) => scope.track(qos.install(limiter))
        })
      })
    }
  }

  get node(): FabricNode { return this.engine.node }
  get store(): PieceStore { return this.engine.store }
  get scheduler(): SchedulerClient { return this.engine.scheduler }
  get tasks(): TaskManager { return this.engine.tasks }
  get qos(): QosHooks { return this.engine.qos }

  get peerId(): string {
    return this.engine.peerId
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
    return this.engine.tasks.download(req, options)
  }

  async start(): Promise<void> {
    await this.engine.start()
    await this.control.start()
    if (this.api !== undefined && this.options.apiListen !== undefined) {
      await this.plugins?.setup(this.options.plugins ?? [])
      const [host, port] = splitHostPort(this.options.apiListen)
      this.apiAddress = await this.api.listen({ host, port: Number(port) })
    }
    if (this.proxy !== undefined && this.options.proxyListen !== undefined) {
      const [host, port] = splitHostPort(this.options.proxyListen)
      this.proxyAddress = await this.proxy.listen(host, Number(port))
    }
    this.keepalive = new KeepAlive({
      announce: () => this.announce(), available: () => this.scheduler.available, intervalMs: this.options.keepaliveMs, paceMs: () => this.scheduler.paceMs ?? 0
    })
    this.keepalive.start(await this.announce())
    if (this.membership !== undefined) {
      this.refresher = setInterval(() => { this.refreshMembership().catch(() => {}) }, MEMBERSHIP_REFRESH_MS)
      this.refresher.unref()
    }
    this.options.logger.info({ peerId: this.peerId, api: this.apiAddress, proxy: this.proxyAddress, p2p: this.node.getMultiaddrs().map(String), data: `${this.options.data.transport}:${this.engine.dataChannel.port}` }, 'dfdaemon ready')
  }

  /** Joins (if the supernode was unreachable at start) or renews, and takes the revocations. */
  private async refreshMembership(): Promise<void> {
    const m = this.membership!
    try {
      if (!m.joined) {
        await m.ensureJoined()
        return
      }
      const supernode = this.scheduler.supernodeId
      if (supernode !== undefined && this.scheduler.available) await m.renew(this.node, supernode, AbortSignal.timeout(this.options.download.schedulerTimeoutMs * 5))
    } catch (err) {
      this.options.logger.warn({ err: (err as Error).message, code: (err as NaiadError).code }, 'cannot renew cluster membership; trying again later')
    }
  }

  /** One host announcement; true when the supernode took it. */
  private async announce(): Promise<boolean> {
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
        isSeed: false,
        labels: Object.entries(this.options.host.labels ?? {}).map(([k, v]) => `${k}=${v}`),
        dataPort: this.engine.dataChannel.port,
        dataTransport: this.engine.dataChannel.transport
      }, AbortSignal.timeout(this.options.download.schedulerTimeoutMs))
      if (wasDown) this.options.logger.info('reconnected to the supernode')
      return true
    } catch (err) {
      this.options.logger.warn({ err: (err as Error).message }, 'cannot announce to the supernode; trying again soon (downloads wait for it a while, then go to peers and the origin)')
      return false
    }
  }

  async stop(): Promise<void> {
    this.keepalive?.stop()
    if (this.refresher !== undefined) clearInterval(this.refresher)
    await this.control.stop()
    if (this.scheduler.available) {
      await this.scheduler.leaveHost(AbortSignal.timeout(1000)).catch(() => {})
    }
    await this.engine.tasks.close()
    await this.api?.close()
    await this.proxy?.close()
    await this.plugins?.close()
    await this.permission.close()
    await this.engine.stop()
  }
}

/**
 * Makes a daemon. With a supernode URL it is a cluster member: it joins with the join token
 * (or the credential kept from an earlier join; a refused token fails here, an unreachable
 * supernode is retried later) and its fabric and data channel admit members only.
 */
export async function createDaemon(options: DaemonOptions, components: DaemonComponents = {}): Promise<Daemon> {
  await secureDir(options.dataDir)
  const policy = new DestinationPolicy({ allow: [...options.sourceAllow ?? [], ...registryEntries(options.mirror)] })
  let membership: NodeMembership | undefined
  if (options.supernodeUrl !== undefined && components.node === undefined) {
    membership = await NodeMembership.open({
      dataDir: options.dataDir, peerId: await loadPeerId(options.dataDir), supernodeUrl: options.supernodeUrl, otherUrls: options.supernodeUrls?.filter((u) => u !== options.supernodeUrl), joinToken: options.joinToken,
      logger: options.logger.child({ module: 'membership' }), timeoutMs: Math.max(5_000, options.download.schedulerTimeoutMs)
    })
    try {
      await membership.ensureJoined()
    } catch (err) {
      if ((err as NaiadError).code !== 'DFD_ERR_NOT_JOINED') throw err
      options.logger.warn({ err: (err as Error).message }, 'cannot join the cluster yet; downloads go to the origin until the supernode answers')
    }
  }
  const engine = await createPeerEngine({
    dataDir: options.dataDir,
    logger: options.logger,
    supernodeUrl: options.supernodeUrl,
    supernodeUrls: options.supernodeUrls,
    p2pListen: options.p2pListen,
    cacheQuota: options.cacheQuota,
    uploadSlots: options.uploadSlots,
    download: options.download,
    origin: { ...options.origin ?? ORIGIN_DEFAULTS, policy },
    data: options.data,
    guard: membership?.guard,
    verifySupernode: membership === undefined ? undefined : (peerId, credential) => membership.verifySupernode(peerId, credential)
  }, { ...components, access: components.access ?? membership?.access })
  return new Daemon(engine, options, membership, policy)
}
