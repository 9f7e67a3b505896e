import { readFileSync } from 'node:fs'

import type { Logger } from 'pino'
import { NaiadError } from '@naiad/proto'

import { dataListen, dataTransport, loadPlugins } from '@naiad/host'
import { DOWNLOAD_DEFAULTS } from '@naiad/peer'

import type { DaemonOptions } from '../daemon.ts'
import { loadDockerCredentials } from '../mirror/upstream.ts'
import { DAEMON_PLUGINS } from '../plugins/catalog.ts'

const LABEL_KEY = /^[A-Za-z0-9]([A-Za-z0-9._/-]{0,62}[A-Za-z0-9])?$/

/** `host.labels`: a mapping of label → value, announced as `key=value` (keys hold no `=`; values no line breaks). */
export function hostLabels(raw: unknown): Record<string, string> {
  const bad = (why: string): NaiadError => new NaiadError('PROTO_ERR_BAD_CONFIG', `host.labels: ${why}`)
  if (raw === null || raw === undefined) return {}
  if (typeof raw !== 'object' || Array.isArray(raw)) throw bad('expected a mapping of label to value, e.g. {zone: a}')
  const out: Record<string, string> = {}
  for (const [k, v] of Object.entries(raw as Record<string, unknown>)) {
    if (!LABEL_KEY.test(k)) throw bad(`bad label "${k}": letters, digits, . _ / -, at most 64 characters`)
    if (typeof v !== 'string' && typeof v !== 'number' && typeof v !== 'boolean') throw bad(`label "${k}" must have a string value`)
    const value = String(v)
    if (value.length > 256 || /[\r\n]/.test(value)) throw bad(`label "${k}": value too long or has a line break`)
    out[k] = value
  }
  return out
}

/** Turns validated option values (see options.ts) into DaemonOptions. */
export async function daemonOptionsFromConfig(v: Record<string, unknown>, logger: Logger): Promise<DaemonOptions> {
  if (v.supernode === undefined) throw new NaiadError('PROTO_ERR_USAGE', 'missing --supernode URL (or supernode: in the config file, or NAIAD_SUPERNODE)')
  const positive = (key: string): number => {
    const n = v[key] as number
    if (!(n > 0)) throw new NaiadError('PROTO_ERR_BAD_CONFIG', `${key} must be above zero`)
    return n
  }
  const tokenFile = v['join-token-file'] as string
  let joinToken = v['join-token'] as string
  if (tokenFile !== '') {
    if (joinToken !== '') throw new NaiadError('PROTO_ERR_USAGE', 'give --join-token or --join-token-file, not both')
    try {
      joinToken = readFileSync(tokenFile, 'utf8').trim()
    } catch (err) {
      throw new NaiadError('PROTO_ERR_BAD_CONFIG', `join-token-file: cannot read ${tokenFile}: ${(err as Error).message}`, { cause: err })
    }
  }
  return {
    dataDir: v['data-dir'] as string,
    logger,
    supernodeUrl: v.supernode as string,
    joinToken,
    sourceAllow: v['source.allow'] as string[],
    apiListen: v['api.listen'] as string,
    proxyListen: v['proxy.listen'] as string,
    mirror: {
      defaultRegistry: v['default-registry'] as string,
      insecure: v['insecure-registry'] as string[],
      caFile: v['registry.ca-file'] as string,
      credentials: v['registry.auth-file'] === '' ? new Map() : loadDockerCredentials(v['registry.auth-file'] as string),
      connectAllow: v['proxy.connect-allow'] as string[],
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
      schedulerTimeoutMs: positive('scheduler.timeout')
    },
    data: { ...dataListen(v['piece.listen'] as string, v['p2p.listen'] as string, 65004), transport: dataTransport(v['piece.transport'] as string) },
    origin: {
      connectTimeoutMs: positive('origin.connect-timeout'),
      idleTimeoutMs: positive('origin.idle-timeout'),
      retries: v['origin.retries'] as number,
      caFile: v['registry.ca-file'] as string,
      maxRedirections: 5
    },
    keepaliveMs: positive('scheduler.keepalive'),
    host: { idc: v['host.idc'] as string, location: v['host.location'] as string, labels: hostLabels(v['host.labels']) },
    plugins: await loadPlugins(v.plugins as string[], DAEMON_PLUGINS),
    pluginSettings: v['plugin-config'] as Record<string, Record<string, unknown>>
  }
}
