// createSupernode: the scheduler and its state, the seed, the fabric service, the HTTP API
// and plugins.

import { join } from 'node:path'

import type { FastifyInstance } from 'fastify'
import type { Logger } from 'pino'
import { PluginHost, splitHostPort, type Stats } from '@naiad/host'
import type { DataTransport } from '@naiad/peer'
import { createFabricNode, type FabricNode, type NaiadPlugin } from '@naiad/proto'

import { buildHttpApi } from './api/http.ts'
import { ControlClient } from './control/control-client.ts'
import { Scheduler } from './scheduler/scheduler.ts'
import { serveScheduler } from './scheduler/service.ts'
import { Seed } from './seed/seed.ts'
import { StateStore } from './state/store.ts'

export interface SupernodeOptions {
  dataDir: string
  logger: Logger
  listen: string
  p2pListen: string[]
  seed: { enabled: boolean; cacheQuota: number; uploadSlots: number; caFile?: string; data: { host: string; port: number; transport: DataTransport } }
  hostTtlMs: number
  plugins?: NaiadPlugin[]
  pluginSettings?: Record<string, Record<string, unknown>>
}

export class Supernode {
  readonly node: FabricNode
  readonly scheduler: Scheduler
  readonly http: FastifyInstance
  readonly seed: Seed | undefined
  /** Commands to daemons; plugins reach it as `ctx.extensions.control`. */
  readonly control: ControlClient
  private readonly state: StateStore
  private readonly plugins: PluginHost
  private readonly options: SupernodeOptions
  private ready = false
  private httpAddress = ''

  constructor(node: FabricNode, scheduler: Scheduler, state: StateStore, seed: Seed | undefined, options: SupernodeOptions) {
    this.node = node
    this.scheduler = scheduler
    this.state = state
    this.seed = seed
    this.options = options
    this.control = new ControlClient({ node, hosts: scheduler.hosts }, { hostTtlMs: options.hostTtlMs, defaultTimeoutMs: 10 * 60_000 })
    this.http = buildHttpApi({ scheduler, node, ready: () => this.ready, seed: seed !== undefined })
    const stats: Stats = {
      scheduler_tasks: { help: 'Tasks the scheduler knows', read: () => scheduler.tasks.size },
      scheduler_hosts: { help: 'Hosts that announced themselves and did not leave', read: () => [...scheduler.hosts.values()].filter((h) => !h.gone).length },
      scheduler_peers: { help: 'Peers over all tasks', read: () => { let n = 0; for (const t of scheduler.tasks.values()) n += t.peers.size; return n } }
    }
    this.plugins = new PluginHost({ host: 'supernode', http: this.http, fabric: node, logger: options.logger, settings: options.pluginSettings ?? {}, extensions: { stats, scheduler, seed, database: state.database, control: this.control } })
  }

  get url(): string {
    return this.httpAddress
  }

  async start(): Promise<void> {
    await serveScheduler(this.node, this.scheduler)
    if (this.seed !== undefined) {
      await this.seed.engine.start()
      this.scheduler.announceHost(this.node.peerId.toString(), {
        id: this.node.peerId.toString(), hostname: 'supernode-seed', ip: '', idc: '', location: '',
        multiaddrs: this.node.getMultiaddrs().map(String), uploadSlots: this.options.seed.uploadSlots, isSeed: true, labels: [], dataPort: this.seed.engine.dataChannel.port, dataTransport: this.seed.engine.dataChannel.transport
      })
    }
    await this.plugins.setup(this.options.plugins ?? [])
    const [host, port] = splitHostPort(this.options.listen)
    this.httpAddress = await this.http.listen({ host, port: Number(port) })
    this.ready = true
    this.options.logger.info({ http: this.httpAddress, peerId: this.node.peerId.toString(), p2p: this.node.getMultiaddrs().map(String), seed: this.seed !== undefined }, 'supernode ready')
  }

  async stop(): Promise<void> {
    this.ready = false
    await this.http.close()
    await this.plugins.close()
    await this.seed?.engine.stop()
    await this.node.stop()
    this.state.close()
  }
}

export async function createSupernode(options: SupernodeOptions): Promise<Supernode> {
  const node = await createFabricNode({ dataDir: options.dataDir, listen: options.p2pListen })
  const state = new StateStore(options.dataDir)
  let seed: Seed | undefined
  const scheduler = new Scheduler({
    hostTtlMs: options.hostTtlMs,
    seedHostId: options.seed.enabled ? node.peerId.toString() : undefined,
    triggerSeed: options.seed.enabled ? (task) => seed?.trigger(task) : undefined
  }, state)
  state.load(scheduler)
  if (options.seed.enabled) {
    seed = await Seed.create(node, scheduler, {
      dataDir: join(options.dataDir, 'seed'),
      cacheQuota: options.seed.cacheQuota,
      uploadSlots: options.seed.uploadSlots,
      caFile: options.seed.caFile,
      p2pListen: options.p2pListen,
      data: options.seed.data,
      logger: options.logger.child({ module: 'seed' })
    })
  }
  return new Supernode(node, scheduler, state, seed, options)
}
