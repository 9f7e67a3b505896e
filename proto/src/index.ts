/**
 * @naiad/proto — the contracts every Naiad part shares: fabric protocol IDs and limits,
 * message schemas and their codec, typed request/response helpers over libp2p, error
 * codes, the plugin interface, option parsing and event names.
 *
 * @example
 * import { createFabricNode, call, PROTOCOLS, SchedulerRequest, SchedulerResponse } from '@naiad/proto'
 * const node = await createFabricNode({ dataDir: '/var/lib/naiad', listen: ['/ip4/0.0.0.0/tcp/0'] })
 * const res = await call(node, supernodeAddr, PROTOCOLS.scheduler, SchedulerRequest, SchedulerResponse,
 *   { getParents: { taskId, limit: 4 } }, { timeoutMs: 2000 })
 */

export * from './codec/wire.ts'
export * from './errors.ts'
export * from './messages/index.ts'
export * from './protocols.ts'
export * from './events.ts'
export * from './plugin.ts'
export * from './log.ts'
export * from './cli.ts'
export * from './fabric/node.ts'
export * from './fabric/rpc.ts'
export * from './fabric/session.ts'
export * from './fabric/socket-writes.ts'
export * from './fabric/window-updates.ts'
export * from './data-channel/frames.ts'
export * from './fabric/membership.ts'
export * from './fabric/seed-fetch.ts'
export * from './admission/credentials.ts'
export * from './admission/token.ts'
export * from './task/bitmap.ts'
export * from './task/task-id.ts'
export * from './task/owner.ts'
export * from './config/units.ts'
export * from './config/options.ts'
export * from './api/local-api.ts'
export * from './api/local-api-client.ts'
export * from './control/commands.ts'
export * from './task/priority.ts'
export * from './api/range.ts'
export * from './lazy-image/format.ts'
export * from './snapshots/snapshots.ts'
export * from './messages/slo.ts'
export * from './messages/health.ts'
export * from './messages/seed-fetch.ts'
