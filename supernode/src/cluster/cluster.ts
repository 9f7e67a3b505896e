// A supernode's place in its cluster. It writes a heartbeat to the membership store every
// `heartbeatMs` and reads back the live set (members heard from within `ttlMs`, by the store's
// clock); each task belongs to one live member (rendezvous hashing, proto's ownerOf). Daemons
// learn the same set from GET /api/v1/supernodes and send each task to its owner. A single
// supernode with the in-memory store is a cluster of one and owns everything.

import type { Logger } from 'pino'
import { advertisedAddrs } from '@naiad/host'
import { ownerOf } from '@naiad/proto'

import type { MembershipStore, SupernodeMember } from './membership.ts'

export interface ClusterOptions {
  heartbeatMs: number
  /** A member silent for longer is not live. */
  ttlMs: number
  logger: Logger
}

export class Cluster {
  private view: readonly SupernodeMember[] = []
  private timer: NodeJS.Timeout | undefined
  private beating: Promise<void> | undefined
  /** The last beat failed (logged once per streak). */
  private failing = false
  private readonly stopping = new AbortController()
  private readonly store: MembershipStore
  private readonly self: () => Omit<SupernodeMember, 'seenAt'>
  /** This supernode's ID (its fabric peer ID, fixed for the process), read once from `self`. */
  private id: string | undefined
  private readonly options: ClusterOptions

  constructor(store: MembershipStore, self: () => Omit<SupernodeMember, 'seenAt'>, options: ClusterOptions) {
    this.store = store
    this.self = self
    this.options = options
  }

  /**
   * Read once: `self()` works out the advertised addresses (libp2p's address manager, a
   * parse of every listen address), and owns() asks for the ID on every registerTask, some
   * 200 a second at 10,000 peers, each leaving garbage the old generation collected
   * (bench/README.md, "What holds the heap").
   */
  get selfId(): string {
    this.id ??= this.self().id
    return this.id
  }

  /** Beats once (so that the live set holds this supernode before it reports ready), then on the interval. */
  async start(): Promise<void> {
    await this.beat()
    this.timer = setInterval(() => { this.beating ??= this.beat().finally(() => { this.beating = undefined }) }, this.options.heartbeatMs)
    this.timer.unref()
  }

  /** Stops beating and leaves the set, so that this supernode's tasks move at once rather than after the TTL. */
  async stop(): Promise<void> {
    if (this.timer !== undefined) clearInterval(this.timer)
    this.stopping.abort()
    await this.beating
    await this.store.leave(this.selfId, AbortSignal.timeout(this.options.ttlMs)).catch((err: unknown) => {
      this.options.logger.warn({ err: (err as Error).message }, 'could not leave the cluster; the others drop this supernode after cluster.ttl')
    })
  }

  /**
   * The live members as last read (ordered by ID). While the store cannot be read the last
   * view stands; before any read succeeded it is this supernode alone.
   */
  live(): readonly SupernodeMember[] {
    return this.view.length > 0 ? this.view : [{ ...this.self(), seenAt: Date.now() }]
  }

  /** The live member that owns `taskId`. */
  ownerOf(taskId: string): SupernodeMember {
    const live = this.live()
    const id = ownerOf(taskId, live.map((m) => m.id))
    return live.find((m) => m.id === id) ?? live[0]
  }

  owns(taskId: string): boolean {
    return this.ownerOf(taskId).id === this.selfId
  }

  private async beat(): Promise<void> {
    const signal = AbortSignal.any([this.stopping.signal, AbortSignal.timeout(this.options.ttlMs)])
    try {
      await this.store.heartbeat(this.self(), signal)
      const live = await this.store.live(this.options.ttlMs, signal)
      const before = this.view.map((m) => m.id).join(',')
      this.view = live
      if (live.map((m) => m.id).join(',') !== before) this.options.logger.info({ members: live.map((m) => ({ id: m.id, apiUrl: m.apiUrl })) }, 'live supernodes changed')
      if (this.failing) this.options.logger.info('membership store reachable again')
      this.failing = false
    } catch (err) {
      if (this.stopping.signal.aborted) return
      if (!this.failing) this.options.logger.warn({ err: (err as Error).message }, 'cannot write the heartbeat or read the live supernodes; keeping the last view')
      this.failing = true
    }
  }
}

/**
 * The HTTP URL others reach this supernode at: the one configured, else the address the API
 * listens on — with the host of the first advertised fabric address in place of an address
 * of every interface (0.0.0.0, ::), which nobody can dial.
 */
export function advertiseUrl(configured: string | undefined, listening: string, fabricAddrs: string[]): string {
  if (configured !== undefined && configured !== '') return configured.replace(/\/+$/, '')
  if (listening === '') return '' // not listening yet
  const url = new URL(listening)
  if (url.hostname !== '0.0.0.0' && url.hostname !== '[::]') return url.origin
  for (const a of advertisedAddrs(fabricAddrs)) {
    const m = /^\/ip([46])\/([^/]+)\//.exec(a)
    if (m === null || m[2] === '0.0.0.0' || m[2] === '::') continue
    url.hostname = m[1] === '6' ? `[${m[2]}]` : m[2]
    return url.origin
  }
  return url.origin
}
