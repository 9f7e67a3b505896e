// What a daemon plugin may reach: the base every host offers (routes, events, timers, fabric
// protocols, the metrics registry) and the daemon's own extension points, each typed. A
// plugin for the daemon is made with `daemonPlugin`, which types its settings from its
// schema; it is a type error in the supernode's catalog and refused by the supernode at load.

import type { HostContext } from '@naiad/host'
import type { PieceStore, QosLimiter, SchedulerClient } from '@naiad/peer'
import {
  definePlugin,
  type ControlArgs, type ControlCommandName, type ControlResult, type Disposer, type Fields, type Infer, type MessageSchema,
  type NaiadPlugin, type OptionSpec, type PluginDefinition
} from '@naiad/proto'

/** The daemon's own settings and, once listening, its addresses (base URLs, multiaddrs). */
export interface DaemonInfo {
  dataDir: string
  supernodeUrl: string
  cacheQuota: number
  proxyListen: string
  addresses(): { proxy: string | undefined; api: string | undefined; p2p: string[] }
}

/** Calls to this daemon's supernode over the fabric, at the address the scheduler client knows. */
export interface SupernodeLink {
  /**
   * One request/response call; an `error` the supernode's handler set comes back thrown
   * (its code kept). PROTO_ERR_DIAL while the supernode is unknown or unreachable.
   */
  call<Q extends Fields, R extends Fields>(
    protocol: string, request: MessageSchema<Q>, response: MessageSchema<R>, message: Partial<Infer<Q>>,
    options: { signal?: AbortSignal; timeoutMs: number }
  ): Promise<Infer<R>>
}

/** A control command's handler: its checked arguments and a signal for the caller's timeout, the caller going away or shutdown. */
export type ControlHandler<K extends ControlCommandName> = (args: ControlArgs<K>, signal: AbortSignal) => Promise<ControlResult<K>>

export interface DaemonPluginContext extends HostContext<'dfdaemon'> {
  readonly daemon: DaemonInfo
  /** The piece store: read, verify, drop tasks. */
  readonly store: PieceStore
  /** The scheduler client: tell the scheduler what this node holds. */
  readonly scheduler: SchedulerClient
  /** Typed calls to the supernode. */
  readonly supernode: SupernodeLink
  /** Announces this host to the scheduler again (after its cache changed under it). */
  announce(): Promise<void>
  /**
   * Handles a control command from the supernode (see proto's ControlCommands). `parse`
   * checks a plugin's own command's arguments; the core's commands have theirs.
   */
  handle<K extends ControlCommandName>(command: K, handler: ControlHandler<K>, parse?: (raw: unknown) => ControlArgs<K>): Disposer
  /** Installs the QoS limits the daemon's hot paths ask (one at a time); disposed, they do nothing again. */
  installQos(limiter: QosLimiter): Disposer
}

export type DaemonPlugin = NaiadPlugin<DaemonPluginContext>

/** A daemon plugin; its settings are typed by the schema it declares. */
export function daemonPlugin<const O extends readonly OptionSpec[] = readonly []>(def: Omit<PluginDefinition<DaemonPluginContext, O>, 'host'>): DaemonPlugin {
  return definePlugin<DaemonPluginContext, O>({ ...def, host: 'dfdaemon' })
}
