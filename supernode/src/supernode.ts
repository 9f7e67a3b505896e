// createSupernode: the scheduler and its state, the seed, the fabric service, cluster
// admission, the HTTP API and plugins, and the shared database (SQLite, or PostgreSQL with --database).

import { join } from 'node:path'

import type { FastifyInstance } from 'fastify'
import { advertisedAddrs, PluginHost, splitHostPort, type Stats } from '@naiad/host'
import { ClusterAccess, DestinationPolicy, OriginClient } from '@naiad/peer'
import { ClusterVerifier, createFabricNode, hangUpPeer, LIMITS, loadPeerId, secureDir, type FabricNode } from '@naiad/proto'

import { Admission } from './admission/admission.ts'
import { loadClusterKey } from './admission/cluster-key.ts'
import { NodeRegistry } from './admission/node-registry.ts'
import { GATE_DEFAULTS, SchedulerGate } from './admission/scheduler-gate.ts'
import { TaskAccess } from './admission/task-access.ts'
import { buildHttpApi } from './api/http.ts'
import { advertiseUrl, Cluster } from './cluster/cluster.ts'
import { ClusterSeeds, serveSeedFetches, type SeedDownloader } from './cluster/cluster-seeds.ts'
import type { MembershipStore } from './cluster/membership.ts'
import { SqlMembership } from './cluster/sql-membership.ts'
import type { SupernodeOptions } from './config/supernode-options.ts'
import { ControlClient } from './control/control-client.ts'
import { openSharedDatabase } from './database/open.ts'
import type { Sql } from './database/sql.ts'
import type { SupernodePluginContext } from './plugin-api/context.ts'
import { PressureGauge } from './scheduler/pressure.ts'
import { Scheduler } from './scheduler/scheduler.ts'
import { serveScheduler } from './scheduler/service.ts'
import { Seed } from './seed/seed.ts'
import { StateStore } from './state/store.ts'

/** How often revocations written by another process (`supernode node revoke`) are picked up. */
const REVOCATION_POLL_MS = 2_000

export class Supernode {
  readonly node: FabricNode
  readonly scheduler: Scheduler
  readonly http: FastifyInstance
  readonly seed: Seed | undefined
  /** Commands to daemons; plugins reach it as their context's `control`. */
  readonly control: ControlClient
  readonly admission: Admission
  /** The scheduler's saturation signal (the pace daemons are asked to keep). */
  readonly pressure = new PressureGauge()
  /** The supernodes of the cluster and the owner of each task. */
  readonly cluster: Cluster
  /** The supernodes of the cluster, in the shared database (the heartbeats and ownership built on it are the cluster's). */
  readonly membership: MembershipStore
  private readonly gate: SchedulerGate
  private readonly probes: OriginClient | undefined
  private readonly state: StateStore
  private readonly shared: Sql
  /** The seed as plugins and the other supernodes' seed fetches use it (undefined with --no-seed). */
  private readonly seedDownloader: SeedDownloader | undefined
  private readonly plugins: PluginHost<'supernode', SupernodePluginContext>
  private readonly options: SupernodeOptions
  private poller: NodeJS.Timeout | undefined
  private ready = false
  private httpAddress = ''

  constructor(parts: { node: FabricNode; scheduler: Scheduler; state: StateStore; shared: Sql; seed: Seed | undefined; admission: Admission; gate: SchedulerGate; policy: DestinationPolicy; probes?: OriginClient }, options: SupernodeOptions) {
    const { node, scheduler, state, shared, seed, admission, gate } = parts
    this.node = node
    this.scheduler = scheduler
    this.state = state
    this.shared = shared
    this.membership = new SqlMembership(shared)
    this.seed = seed
    this.admission = admission
    this.gate = gate
    this.probes = parts.probes
    this.options = options
    this.cluster = new Cluster(options.cluster?.membership ?? this.membership, () => ({
      id: node.peerId.toString(),
      apiUrl: advertiseUrl(options.cluster?.advertiseUrl, this.listenUrl(), node.getMultiaddrs().map(String)),
      multiaddrs: advertisedAddrs(node.getMultiaddrs().map(String))
    }), { heartbeatMs: options.cluster?.heartbeatMs ?? 1000, ttlMs: options.cluster?.ttlMs ?? 4000, logger: options.logger.child({ module: 'cluster' }) })
    admission.othersLive = () => this.cluster.live().length > 1
    this.control = new ControlClient({ node, hosts: scheduler.hosts }, { hostTtlMs: options.hostTtlMs, defaultTimeoutMs: options.controlTimeoutMs })
    this.http = buildHttpApi({ scheduler, node, ready: () => this.ready, seed: seed !== undefined, admission, publicRead: options.publicRead === true, members: () => this.cluster.live(), ownerOf: (taskId) => this.cluster.ownerOf(taskId) })
    const stats: Stats = {
      scheduler_tasks: { help: 'Tasks the scheduler knows', read: () => scheduler.tasks.size },
      scheduler_hosts: { help: 'Hosts that announced themselves and did not leave', read: () => [...scheduler.hosts.values()].filter((h) => !h.gone).length },
      scheduler_peers: { help: 'Peers over all tasks', read: () => { let n = 0; for (const t of scheduler.tasks.values()) n += t.peers.size; return n } },
      scheduler_pace_seconds: { help: 'Pace the scheduler asks daemons to keep between one task\'s calls (0: not saturated)', read: () => this.pressure.paceMs / 1000 },
      scheduler_event_loop_utilization: { help: 'Share of time the supernode\'s event loop was busy (smoothed, 0..1)', read: () => this.pressure.utilization },
      scheduler_event_loop_lag_seconds: { help: 'How late a timer fires on the supernode\'s event loop (smoothed): how long a call waits before it is read', read: () => this.pressure.lagMs / 1000 },
      cluster_supernodes: { help: 'Live supernodes in this supernode\'s view of the cluster (tasks are spread over them)', read: () => this.cluster.live().length },
      scheduler_deferred_calls: { help: 'get-parents calls and registrations answered SN_ERR_BUSY since start (the loop lagged too much to serve them)', read: () => this.pressure.deferred }
    }
    // Scheduler filters and scorers go into its arrays; a plugin's are taken out again when it closes.
    const remove = <T>(list: T[], item: T): void => {
      const i = list.indexOf(item)
      if (i >= 0) list.splice(i, 1)
    }
    const control = this.control
    const clusterSeeds = new ClusterSeeds({ node, cluster: this.cluster })
    this.seedDownloader = seed === undefined ? undefined : { download: (req, opts) => seed.engine.tasks.download(req, opts) }
    this.plugins = new PluginHost({
      host: 'supernode', http: this.http, fabric: node, logger: options.logger, settings: options.pluginSettings ?? {}, stats,
      extend: (base, scope): SupernodePluginContext => ({
        ...base,
        scheduler: {
          hosts: scheduler.hosts,
          addFilter: (f) => { scheduler.filters.push(f); return scope.track(() => remove(scheduler.filters, f)) },
          addScorer: (f) => { scheduler.scorers.push(f); return scope.track(() => remove(scheduler.scorers, f)) }
        },
        seed: this.seedDownloader,
        clusterSeeds: seed === undefined ? undefined : clusterSeeds,
        database: shared,
        control: { send: (hostId, command, args, opts) => control.send(hostId, command, args, opts), hosts: (labels) => control.hosts(labels) },
        sourcePolicy: parts.policy
      })
    })
    admission.onRevoke((id) => {
      options.logger.warn({ node: id }, 'node revoked: refused from now on')
      scheduler.leaveHost(id)
      gate.forget(id)
      void hangUpPeer(node, id)
      // Daemons learn it now rather than at their next renewal: they refuse the node too.
      for (const h of this.control.hosts()) {
        if (h.id === id) continue
        this.control.send(h.id, 'membership.revoke', { peers: [id] }, { timeoutMs: 5_000 }).catch((err: unknown) => {
          options.logger.debug({ host: h.id, err: (err as Error).message }, 'could not tell a daemon of a revocation; it learns it at its next renewal')
        })
      }
    })
  }

  /**
   * The HTTP API's URL with the host it was told to listen on: fastify reports 127.0.0.1 for a
   * wildcard listen, which other hosts cannot dial (advertiseUrl replaces a wildcard with the
   * fabric's advertised address).
   */
  private listenUrl(): string {
    if (this.httpAddress === '') return ''
    const host = splitHostPort(this.options.listen)[0]
    return `http://${host.includes(':') ? `[${host}]` : host}:${new URL(this.httpAddress).port}`
  }

  get url(): string {
    return this.httpAddress
  }

  async start(): Promise<void> {
    this.pressure.start()
    await serveScheduler(this.node, this.scheduler, this.gate, this.pressure, this.cluster)
    if (this.seed !== undefined) {
      await this.seed.engine.start()
      // Peers reach the seed's data channel at the first address announced: not loopback when
      // the fabric listens on every interface (in a container, 127.0.0.1 is the daemon itself).
      this.scheduler.announceHost(this.node.peerId.toString(), {
        id: this.node.peerId.toString(), hostname: 'supernode-seed', ip: '', idc: '', location: '',
        multiaddrs: advertisedAddrs(this.node.getMultiaddrs().map(String)), uploadSlots: this.options.seed.uploadSlots, isSeed: true, labels: [], dataPort: this.seed.engine.dataChannel.port, dataTransport: this.seed.engine.dataChannel.transport
      })
      // The other supernodes warm this seed with the tasks this supernode owns (preheat).
      await serveSeedFetches({
        node: this.node, seed: this.seedDownloader!,
        isSupernode: (id) => this.admission.isSupernode(id), logger: this.options.logger.child({ module: 'seed-fetch' })
      }, LIMITS.controlMaxTimeoutMs)
    }
    await this.plugins.setup(this.options.plugins ?? [])
    const [host, port] = splitHostPort(this.options.listen)
    this.httpAddress = await this.http.listen({ host, port: Number(port) })
    await this.cluster.start()
    this.poller = setInterval(() => {
      this.admission.poll().catch((err: unknown) => {
        this.options.logger.warn({ err: (err as Error).message }, 'cannot read revocations from the database')
      })
    }, REVOCATION_POLL_MS)
    this.poller.unref()
    this.ready = true
    this.options.logger.info({ http: this.httpAddress, peerId: this.node.peerId.toString(), p2p: this.node.getMultiaddrs().map(String), seed: this.seed !== undefined, cluster: this.admission.signer.id, dataDir: this.options.dataDir, database: this.shared.dialect }, 'supernode ready')
  }

  async stop(): Promise<void> {
    this.ready = false
    // First, so that daemons move this supernode's tasks now rather than after cluster.ttl.
    await this.cluster.stop()
    this.pressure.stop()
    if (this.poller !== undefined) clearInterval(this.poller)
    await this.http.close()
    await this.plugins.close()
    // The fabric goes before the seed: stopping the seed fails its downloads in flight, and
    // daemons still connected would read that as the task failing and go to the origin, where
    // with the supernode gone they move the task to the next owner and keep fetching from peers.
    await this.node.stop()
    await this.seed?.engine.stop()
    await this.probes?.close()
    await this.shared.close()
    this.state.close()
  }
}

export async function createSupernode(options: SupernodeOptions): Promise<Supernode> {
  await secureDir(options.dataDir)
  const signer = await loadClusterKey(options.dataDir)
  const state = new StateStore(options.dataDir)
  state.onFlushError = (err) => { options.logger.warn({ err }, 'cannot write the scheduler state to the data dir; its changes stay in memory and are written again shortly') }
  let shared: Sql
  try {
    shared = await openSharedDatabase(options.database ?? '', () => state.database)
  } catch (err) {
    state.close()
    throw err
  }
  const admission = new Admission(signer, await NodeRegistry.open(shared), await loadPeerId(options.dataDir))
  const node = await createFabricNode({ dataDir: options.dataDir, listen: options.p2pListen, guard: admission })
  const policy = new DestinationPolicy({ allow: options.sourceAllow ?? [] })
  let seed: Seed | undefined
  const access: { current?: TaskAccess } = {}
  const scheduler = new Scheduler({
    hostTtlMs: options.hostTtlMs,
    seedHostId: options.seed.enabled ? node.peerId.toString() : undefined,
    triggerSeed: options.seed.enabled ? (task) => seed?.trigger(task, access.current?.headersFor(task.id)) : undefined
  }, state)
  state.load(scheduler)
  const verifier = new ClusterVerifier(signer.publicKey)
  if (options.seed.enabled) {
    await secureDir(join(options.dataDir, 'seed'))
    seed = await Seed.create(node, scheduler, {
      dataDir: join(options.dataDir, 'seed'),
      cacheQuota: options.seed.cacheQuota,
      uploadSlots: options.seed.uploadSlots,
      download: options.seed.download,
      origin: options.seed.origin,
      p2pListen: options.p2pListen,
      data: options.seed.data,
      policy,
      access: new ClusterAccess({ verifier: () => verifier, credential: () => admission.credential(), revoked: (id) => admission.nodes.isRevoked(id) }),
      logger: options.logger.child({ module: 'seed' })
    })
  }
  // Access checks go through the seed's origin client (same policy, same CAs), or one of their own without a seed.
  const probes = seed === undefined ? new OriginClient({ ...options.seed.origin, policy }) : undefined
  access.current = new TaskAccess(seed?.engine.origin ?? probes!)
  const gate = new SchedulerGate({ admission, access: access.current, policy, knows: (id) => scheduler.tasks.has(id) }, { ...GATE_DEFAULTS, announceNetworks: options.announceNetworks ?? [] })
  return new Supernode({ node, scheduler, state, shared, seed, admission, gate, policy, probes }, options)
}
