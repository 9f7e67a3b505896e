// Turns the option table's values into SupernodeOptions: the one place that knows both the
// config keys and what the supernode's parts take. The plugins named in `plugins` are loaded
// by the binary (the core loads none).

import type { Logger } from 'pino'
import { dataListen } from '@naiad/host'
import { downloadSettings, DOWNLOAD_DEFAULTS, originSettings } from '@naiad/peer'

import type { SupernodeConfig } from './options.ts'
import type { SupernodeOptions } from './supernode-options.ts'

export function supernodeOptionsFromConfig(v: SupernodeConfig, logger: Logger): SupernodeOptions {
  const seedDownload = {
    'download.concurrency': v['seed.download.concurrency'],
    'download.per-parent': v['seed.download.per-parent'],
    'download.piece-timeout': v['seed.download.piece-timeout'],
    'download.stall-timeout': v['seed.download.stall-timeout'],
    'download.refresh-interval': v['seed.download.refresh-interval'],
    'download.slow-piece-min': v['seed.download.slow-piece-min']
  }
  return {
    dataDir: v['data-dir'],
    database: v.database,
    logger,
    listen: v.listen,
    p2pListen: [v['p2p.listen']],
    seed: {
      enabled: v['seed.enabled'],
      cacheQuota: v['seed.cache-quota'],
      uploadSlots: v['seed.upload-slots'],
      // The seed's scheduler is in-process: its call timeout never applies.
      download: downloadSettings(seedDownload, DOWNLOAD_DEFAULTS.schedulerTimeoutMs),
      origin: originSettings(v, { caFile: v['origin.ca-file'] }),
      data: { ...dataListen(v['piece.listen'], v['p2p.listen'], 8004), transport: v['piece.transport'] }
    },
    hostTtlMs: v['scheduler.host-ttl'],
    controlTimeoutMs: v['control.timeout'],
    sourceAllow: v['source.allow'],
    announceNetworks: v['scheduler.announce-networks'],
    publicRead: v['api.public-read'],
    cluster: { heartbeatMs: v['cluster.heartbeat'], ttlMs: v['cluster.ttl'], advertiseUrl: v['cluster.advertise-url'] },
    pluginSettings: v['plugin-config']
  }
}
