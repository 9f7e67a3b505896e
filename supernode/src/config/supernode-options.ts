// What createSupernode takes: the supernode's configuration as typed values, whatever made
// them (the option table through from-config.ts, a test, an embedding program).

import type { Logger } from 'pino'
import type { DataTransport, OriginOptions, PeerTaskOptions } from '@naiad/peer'

import type { MembershipStore } from '../cluster/membership.ts'
import type { SupernodePlugin } from '../plugin-api/context.ts'

export interface SeedSettings {
  enabled: boolean
  cacheQuota: number
  uploadSlots: number
  /** The seed's downloads (a piece engine's settings; its scheduler is in-process). */
  download: PeerTaskOptions
  /** The seed's origin client (also used for access checks); its CA file too. */
  origin: OriginOptions
  data: { host: string; port: number; transport: DataTransport }
}

export interface SupernodeOptions {
  dataDir: string
  /** `database`: a postgres:// URL for state shared by several supernodes; empty: SQLite in dataDir. */
  database?: string
  logger: Logger
  listen: string
  p2pListen: string[]
  seed: SeedSettings
  hostTtlMs: number
  /** How long a daemon may run a control command when the caller names no timeout. */
  controlTimeoutMs: number
  /** `source.allow`: what the seed, preheat and access checks may fetch besides public addresses. */
  sourceAllow?: string[]
  /** `scheduler.announce-networks`: announced addresses accepted even when not the connection's own. */
  announceNetworks?: string[]
  /** `api.public-read`: GET endpoints that reveal tasks and peers need no API token. */
  publicRead?: boolean
  /** The supernodes of the cluster: heartbeats, the live set, each task's owner. */
  cluster?: ClusterSettings
  plugins?: SupernodePlugin[]
  pluginSettings?: Record<string, Record<string, unknown>>
}

export interface ClusterSettings {
  /** Where the heartbeats go; shared by every supernode of the cluster (default: in memory, a cluster of one). */
  membership?: MembershipStore
  heartbeatMs: number
  /** A supernode silent for longer is not live. */
  ttlMs: number
  /** This supernode's HTTP URL as others reach it ('' or absent: derived from the listen address). */
  advertiseUrl?: string
}
