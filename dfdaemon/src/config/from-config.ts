// Turns the option table's values into DaemonOptions: the one place that knows both the
// config keys and what the daemon's parts take. The plugins named in `plugins` are loaded by
// the binary (the core loads none).

import { readFileSync } from 'node:fs'

import type { Logger } from 'pino'
import { dataListen } from '@naiad/host'
import { loadDockerCredentials } from '@naiad/oci'
import { downloadSettings, originSettings } from '@naiad/peer'
import { NaiadError } from '@naiad/proto'

import type { DaemonOptions } from './daemon-options.ts'
import type { DaemonConfig } from './options.ts'

function joinToken(v: DaemonConfig): string {
  const file = v['join-token-file']
  if (file === '') return v['join-token']
  if (v['join-token'] !== '') throw new NaiadError('PROTO_ERR_USAGE', 'give --join-token or --join-token-file, not both')
  try {
    return readFileSync(file, 'utf8').trim()
  } catch (err) {
    throw new NaiadError('PROTO_ERR_BAD_CONFIG', `join-token-file: cannot read ${file}: ${(err as Error).message}`, { cause: err })
  }
}

export function daemonOptionsFromConfig(v: DaemonConfig, logger: Logger): DaemonOptions {
  if (v.supernode.length === 0) throw new NaiadError('PROTO_ERR_USAGE', 'missing --supernode URL (or supernode: in the config file, or NAIAD_SUPERNODE)')
  return {
    dataDir: v['data-dir'],
    logger,
    supernodeUrl: v.supernode[0],
    supernodeUrls: v.supernode,
    joinToken: joinToken(v),
    sourceAllow: v['source.allow'],
    apiListen: v['api.listen'],
    proxyListen: v['proxy.listen'],
    mirror: {
      defaultRegistry: v['default-registry'],
      insecure: v['insecure-registry'],
      caFile: v['registry.ca-file'],
      credentials: v['registry.auth-file'] === '' ? new Map() : loadDockerCredentials(v['registry.auth-file']),
      connectAllow: v['proxy.connect-allow'],
      rules: v['proxy.rules']
    },
    p2pListen: [v['p2p.listen']],
    cacheQuota: v['cache-quota'],
    uploadSlots: v['upload.slots'],
    download: downloadSettings(v, v['scheduler.timeout']),
    data: { ...dataListen(v['piece.listen'], v['p2p.listen'], 65004), transport: v['piece.transport'] },
    origin: originSettings(v, { caFile: v['registry.ca-file'] }),
    keepaliveMs: v['scheduler.keepalive'],
    host: { idc: v['host.idc'], location: v['host.location'], labels: v['host.labels'] },
    pluginSettings: v['plugin-config']
  }
}
