// What createDaemon takes: the daemon's configuration as typed values, whatever made them
// (the option table through from-config.ts, a test, an embedding program).

import type { DataTransport, OriginOptions, PeerTaskOptions } from '@naiad/peer'
import type { Logger } from 'pino'

import type { ProxyServerOptions } from '../mirror/proxy-server.ts'
import type { DaemonPlugin } from '../plugin-api/context.ts'

export interface DaemonOptions {
  dataDir: string
  logger: Logger
  /** Supernode HTTP URL; required unless a scheduler component is given. */
  supernodeUrl?: string
  /** Join token (`supernode token create`); not needed once the node holds a credential. */
  joinToken?: string
  /** `source.allow`: destinations besides public addresses and the configured registries. */
  sourceAllow?: string[]
  /** HOST:PORT of the local API; omitted for an embedded seed. */
  apiListen?: string
  /** HOST:PORT of the registry mirror and forward proxy; omitted for an embedded seed. */
  proxyListen?: string
  mirror?: ProxyServerOptions
  p2pListen: string[]
  cacheQuota: number
  uploadSlots: number
  download: PeerTaskOptions
  origin?: OriginOptions
  /** The data channel (piece bytes to and from peers): where it listens, TLS or plain TCP. */
  data: { host: string; port: number; transport: DataTransport }
  keepaliveMs: number
  host: { idc: string; location: string; labels?: Record<string, string> }
  plugins?: DaemonPlugin[]
  pluginSettings?: Record<string, Record<string, unknown>>
}
