import type { Logger } from 'pino'
import { NaiadError } from '@naiad/proto'

import type { DaemonOptions } from '../daemon.ts'
import { DOWNLOAD_DEFAULTS } from '../daemon.ts'
import { loadDockerCredentials } from '../mirror/upstream.ts'
import { loadPlugins } from '../plugins/catalog.ts'

/** Turns validated option values (see options.ts) into DaemonOptions. */
export async function daemonOptionsFromConfig(v: Record<string, unknown>, logger: Logger): Promise<DaemonOptions> {
  if (v.supernode === undefined) throw new NaiadError('PROTO_ERR_USAGE', 'missing --supernode URL (or supernode: in the config file, or NAIAD_SUPERNODE)')
  const positive = (key: string): number => {
    const n = v[key] as number
    if (!(n > 0)) throw new NaiadError('PROTO_ERR_BAD_CONFIG', `${key} must be above zero`)
    return n
  }
  return {
    dataDir: v['data-dir'] as string,
    logger,
    supernodeUrl: v.supernode as string,
    apiListen: v['api.listen'] as string,
    proxyListen: v['proxy.listen'] as string,
    mirror: {
      defaultRegistry: v['default-registry'] as string,
      insecure: v['insecure-registry'] as string[],
      caFile: v['registry.ca-file'] as string,
      credentials: v['registry.auth-file'] === '' ? new Map() : loadDockerCredentials(v['registry.auth-file'] as string),
      rules: (v['proxy.rules'] as string[]).map((r) => {
        try {
          return new RegExp(r)
        } catch (err) {
          throw new NaiadError('PROTO_ERR_BAD_CONFIG', `proxy.rules: bad regular expression "${r}": ${(err as Error).message}`, { cause: err })
        }
      })
    },
    p2pListen: [v['p2p.listen'] as string],
    cacheQuota: positive('cache-quota'),
    uploadSlots: positive('upload.slots'),
    download: {
      ...DOWNLOAD_DEFAULTS,
      concurrency: positive('download.concurrency'),
      perParent: positive('download.per-parent'),
      pieceTimeoutMs: positive('download.piece-timeout'),
      stallTimeoutMs: positive('download.stall-timeout'),
      schedulerTimeoutMs: positive('scheduler.timeout'),
      dataChannel: v['piece.data-channel'] as boolean
    },
    origin: {
      connectTimeoutMs: positive('origin.connect-timeout'),
      idleTimeoutMs: positive('origin.idle-timeout'),
      retries: v['origin.retries'] as number,
      caFile: v['registry.ca-file'] as string,
      maxRedirections: 5
    },
    keepaliveMs: positive('scheduler.keepalive'),
    host: { idc: v['host.idc'] as string, location: v['host.location'] as string },
    plugins: await loadPlugins(v.plugins as string[]),
    pluginSettings: v['plugin-config'] as Record<string, Record<string, unknown>>
  }
}
