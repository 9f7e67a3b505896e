/**
 * @naiad/supernode — scheduler, seed peer, cluster state and admission, HTTP API, and the
 * typed context its plugins get.
 *
 * @example
 * import { loadOptions } from '@naiad/proto'
 * import { createSupernode, supernodeOptionsFromConfig, SUPERNODE_COMMAND } from '@naiad/supernode'
 * const sn = await createSupernode(supernodeOptionsFromConfig(loadOptions(SUPERNODE_COMMAND, argv).values, logger))
 * await sn.start()
 *
 * // an out-of-tree plugin, typed from this entry (load it with `plugins: [./my-plugin.ts]`):
 * import { supernodePlugin } from '@naiad/supernode'
 * export default supernodePlugin({
 *   name: 'my-plugin', version: '1.0.0',
 *   settings: [{ key: 'penalty', type: 'number', default: 0.5, help: 'score taken from slow hosts' }],
 *   setup(ctx) { ctx.scheduler.addScorer((c) => c.host.info.idc === 'slow' ? -ctx.settings.penalty : 0) }
 * })
 */

export { createSupernode, Supernode } from './supernode.ts'
export type { SupernodeOptions, SeedSettings, ClusterSettings } from './config/supernode-options.ts'
export { MemoryMembership, type MembershipStore, type SupernodeMember } from './cluster/membership.ts'
export { SUPERNODE_COMMAND, TOKEN_COMMAND, NODE_COMMAND, type SupernodeConfig } from './config/options.ts'
export { supernodeOptionsFromConfig } from './config/from-config.ts'
export { tokenCreate, nodeCommand } from './admission/commands.ts'
export { SUPERNODE_PLUGINS } from './plugins/catalog.ts'
export { supernodePlugin, type SupernodePlugin, type SupernodePluginContext, type SchedulerView, type SeedDownloader } from './plugin-api/context.ts'
export type { HostState, PeerState, TaskState } from './scheduler/scheduler.ts'
export type { Candidate, ParentFilter, ParentScorer } from './scheduler/scoring.ts'
export type { ControlHost, ControlSendOptions } from './control/control-client.ts'
// What a plugin's `ctx.database` is (the shared database), and the cluster's membership store.
export type { Dialect, Param, Sql } from './database/sql.ts'
// The scheduler's saturation signal, for bench/sim (it runs the gauge itself).
export { PressureGauge } from './scheduler/pressure.ts'
export { paceShare, spreadPace } from './scheduler/service.ts'
