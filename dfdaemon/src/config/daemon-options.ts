// What createDaemon takes: the daemon's configuration as typed values, whatever made them
// (the option table through from-config.ts, a test, an embedding program).

import type { PeerEngineOptions } from '@naiad/peer'

import type { ProxyServerOptions } from '../mirror/proxy-server.ts'
import type { DaemonPlugin } from '../plugin-api/context.ts'

/** The piece engine's part (store, fabric, downloads, origin, data channel), then the daemon's own. */
export interface DaemonOptions extends Pick<PeerEngineOptions, 'dataDir' | 'logger' | 'supernodeUrl' | 'supernodeUrls' | 'p2pListen' | 'cacheQuota' | 'uploadSlots' | 'download' | 'origin' | 'data'> {
  /** Join token (`supernode token create`); not needed once the node holds a credential. */
  joinToken?: string
  /** `source.allow`: destinations besides public addresses and the configured registries. */
  sourceAllow?: string[]
  /** HOST:PORT of the local API; omitted for an embedded seed. */
  apiListen?: string
  /** HOST:PORT of the registry mirror and forward proxy; omitted for an embedded seed. */
  proxyListen?: string
  mirror?: ProxyServerOptions
  keepaliveMs: number
  host: { idc: string; location: string; labels?: Record<string, string> }
  plugins?: DaemonPlugin[]
  pluginSettings?: Record<string, Record<string, unknown>>
}
