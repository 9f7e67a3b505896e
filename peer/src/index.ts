/**
 * @naiad/peer — the piece engine every node runs: the piece store, downloads from parents
 * and the origin, uploads to other peers, and the scheduler client. The daemon and the
 * supernode's seed are both built on it.
 *
 * @example
 * import { createPeerEngine, DOWNLOAD_DEFAULTS } from '@naiad/peer'
 * const engine = await createPeerEngine({
 *   dataDir: '/var/lib/naiad/dfdaemon', logger, supernodeUrl: 'http://10.0.0.1:8002',
 *   p2pListen: ['/ip4/0.0.0.0/tcp/65002'], cacheQuota: 20 * 2 ** 30, uploadSlots: 16, download: DOWNLOAD_DEFAULTS
 * })
 * await engine.start()
 * const result = await engine.tasks.download({ url: 'https://example.com/file', headers: {} })
 */

export { createPeerEngine, PeerEngine, type PeerEngineOptions, type PeerEngineComponents } from './engine.ts'
export {
  DOWNLOAD_OPTIONS, ORIGIN_OPTIONS, SCHEDULER_CLIENT_OPTIONS, DOWNLOAD_DEFAULTS, ORIGIN_DEFAULTS, downloadSettings, originSettings,
  type DownloadValues, type OriginValues
} from './config/options.ts'
export type { DownloadRequest, DownloadResult, DownloadProgress, PeerTaskOptions } from './download/types.ts'
export { TaskManager, TaskHandle } from './download/task-manager.ts'
export type { DataTransport } from './channel/connection.ts'
export { BUSY_MEMORY_MS, FabricSchedulerClient, KEEPALIVE_RETRY_MIN_MS, PACED_INTERVALS, pacedKeepaliveMs, type SchedulerClient } from './scheduler/client.ts'
export { ClusterSchedulerClient, type ClusterSchedulerClientComponents, type ClusterSchedulerClientOptions, type LiveSupernode, type MemberClient } from './scheduler/cluster-client.ts'
export { ReportBatcher, type ReportBatcherOptions } from './download/report-batcher.ts'
// How a download's registration retries and waits, for bench/sim (it models this client).
export {
  REGISTER_ATTEMPTS, REGISTER_ATTEMPTS_AFTER_OUTAGES, REGISTER_BUSY_MAX_MS, REGISTER_BUSY_MIN_MS, SCHEDULER_WAIT_POLL_MS
} from './download/registration.ts'
export { stallAfterMs, stallCountsFrom } from './download/poll-policy.ts'
export { DiskPieceStore, type PieceStore, type Reservation, type StoredPiece, type StoredTask } from './storage/piece-store.ts'
export { contentStream, sendContent, sendServable, waitServable } from './storage/send-content.ts'
export { OriginClient, discard, redact, trustedCAs, type OriginOptions } from './source/origin.ts'
export { QosHooks, type Admission, type QosLimiter, type Traffic } from './qos/hooks.ts'
export { OPEN_ACCESS, type PeerAccess } from './access/access.ts'
export { nodeIdentity, type NodeIdentity } from './channel/identity.ts'
export { ClusterAccess, type ClusterAccessOptions } from './access/cluster-access.ts'
export { DestinationPolicy, destinationDenied, ownAddresses, policyConnect, type DestinationPolicyOptions } from './source/destination-policy.ts'
export { DataClient, type DataTarget, type PieceSink, type Flow } from './channel/data-client.ts'
