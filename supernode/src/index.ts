/**
 * @naiad/supernode — scheduler, seed peer and cluster state.
 *
 * @example
 * import { createSupernode } from '@naiad/supernode'
 * const sn = await createSupernode({ dataDir: '/var/lib/naiad/supernode', logger, listen: '0.0.0.0:8002',
 *   p2pListen: ['/ip4/0.0.0.0/tcp/8003'], seed: { enabled: true, cacheQuota: 100 * 2 ** 30, uploadSlots: 64 }, hostTtlMs: 30_000 })
 * await sn.start()
 */

export { createSupernode, Supernode, type SupernodeOptions } from './supernode.ts'
export { SUPERNODE_COMMAND, TOKEN_COMMAND, NODE_COMMAND } from './config/options.ts'
export { tokenCreate, nodeCommand } from './admission/commands.ts'
export { Admission, NODE_CREDENTIAL_TTL_MS, GRANT_TTL_MS } from './admission/admission.ts'
export { PressureGauge, PRESSURE_DEFAULTS, type Pressure, type PressureOptions } from './scheduler/pressure.ts'
export { Scheduler, type TaskState, type PeerState, type HostState, type SchedulerPersistence } from './scheduler/scheduler.ts'
export { scoreCandidate, WEIGHTS, type Candidate, type ParentFilter, type ParentScorer } from './scheduler/scoring.ts'
export { ControlClient, labelsOf, type ControlHost, type ControlSendOptions } from './control/control-client.ts'
