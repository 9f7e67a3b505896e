/**
 * @naiad/proto/contracts — the parts of proto that need no libp2p: error codes, option
 * parsing, units, task IDs and the local API types. Command-line tools that only talk
 * HTTP import this entry and start in a fraction of the time.
 */

export * from './errors.ts'
export * from './cli.ts'
export * from './config/units.ts'
export * from './config/options.ts'
export * from './task/task-id.ts'
export * from './task/owner.ts'
export * from './task/bitmap.ts'
export * from './api/local-api.ts'
export * from './api/local-api-client.ts'
export * from './api/range.ts'
export * from './control/commands.ts'
export * from './task/priority.ts'
export * from './codec/wire.ts'
export * from './lazy-image/format.ts'
export * from './snapshots/snapshots.ts'
export * from './log.ts'
export * from './admission/credentials.ts'
export * from './admission/token.ts'
