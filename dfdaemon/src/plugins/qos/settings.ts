// `plugin-config.qos`: every setting of the QoS plugin, its default and its validation.

import { defineOptions, isPriority, loadSettings, NaiadError, parseSize, PRIORITIES, type OptionValues, type Priority } from '@naiad/proto'

export interface TenantSettings {
  /** Prefix of the tenant's URLs: `host[:port]/repo/prefix/` (registry paths without /v2/), or a full URL prefix. */
  match: string
  /** Requests a second (token bucket); 0: no limit. */
  rate: number
  /** Requests allowed at once above the rate; defaults to the rate (at least 1). */
  burst: number
  /** Requests in progress at once; 0: no limit. */
  concurrency: number
  /** Bytes a second downloaded for the tenant's tasks; 0: no limit. */
  downloadRate: number
  /** Bytes a second uploaded to peers from the tenant's tasks; 0: no limit. */
  uploadRate: number
}

export interface QosSettings {
  /** The daemon's download bandwidth in bytes a second, shared by the classes; 0: unlimited. */
  downloadRate: number
  /** The daemon's upload bandwidth in bytes a second; 0: unlimited. */
  uploadRate: number
  weights: Record<Priority, number>
  /** Piece transfers from peers in flight at once, over every download. */
  slots: number
  tenants: TenantSettings[]
}

export const QOS_DEFAULTS: QosSettings = {
  downloadRate: 0,
  uploadRate: 0,
  weights: { 'on-demand': 70, preheat: 20, prefetch: 10 },
  slots: 16,
  tenants: []
}

const KEY = 'plugin-config.qos'

function bad(key: string, why: string): NaiadError {
  return new NaiadError('PROTO_ERR_BAD_CONFIG', `${KEY}.${key}: ${why}`)
}

/** `40MiB`, `40MiB/s`, or a number of bytes: bytes a second. */
function rate(v: unknown, key: string): number {
  if (v === undefined || v === null) return 0
  if (typeof v === 'number') {
    if (!(v >= 0) || !Number.isFinite(v)) throw bad(key, 'must be zero or more')
    return v
  }
  if (typeof v !== 'string') throw bad(key, 'expected a size a second such as 40MiB')
  try {
    return parseSize(v.replace(/\/s$/i, ''), `${KEY}.${key}`)
  } catch (err) {
    throw bad(key, (err as Error).message)
  }
}

function count(v: unknown, key: string, fallback: number): number {
  if (v === undefined || v === null) return fallback
  if (typeof v !== 'number' || !(v >= 0) || !Number.isFinite(v)) throw bad(key, 'must be a number, zero or more')
  return v
}

const TENANT = new Set(['match', 'rate', 'burst', 'concurrency', 'download-rate', 'upload-rate'])

function weights(raw: Record<string, unknown>): Record<Priority, number> {
  const out = { ...QOS_DEFAULTS.weights }
  for (const [k, v] of Object.entries(raw)) {
    if (!isPriority(k)) throw bad(`weights.${k}`, `unknown class (known: ${PRIORITIES.join(', ')})`)
    if (typeof v !== 'number' || !(v > 0)) throw bad(`weights.${k}`, 'must be a number above zero')
    out[k] = v
  }
  return out
}

function tenants(raw: unknown): TenantSettings[] {
  if (!Array.isArray(raw)) throw bad('tenants', 'expected a list')
  return raw.map((t: unknown, i): TenantSettings => {
    const key = `tenants[${i}]`
    if (typeof t !== 'object' || t === null) throw bad(key, 'expected a map')
    const o = t as Record<string, unknown>
    for (const k of Object.keys(o)) if (!TENANT.has(k)) throw bad(`${key}.${k}`, `unknown setting (known: ${[...TENANT].join(', ')})`)
    if (typeof o.match !== 'string' || o.match === '') throw bad(`${key}.match`, 'expected a host, repository or URL prefix')
    const r = count(o.rate, `${key}.rate`, 0)
    return {
      match: o.match,
      rate: r,
      burst: count(o.burst, `${key}.burst`, Math.max(1, r)),
      concurrency: count(o.concurrency, `${key}.concurrency`, 0),
      downloadRate: rate(o['download-rate'], `${key}.download-rate`),
      uploadRate: rate(o['upload-rate'], `${key}.upload-rate`)
    }
  })
}

/** The schema of `plugin-config.qos`; the structured values check their own parts. */
export const QOS_SETTINGS = defineOptions([
  { key: 'download-rate', type: 'any', default: 0, parse: (v: unknown) => rate(v, 'download-rate'), help: "the daemon's download bandwidth shared by the classes (40MiB, 40MiB/s, bytes); 0: unlimited" },
  { key: 'upload-rate', type: 'any', default: 0, parse: (v: unknown) => rate(v, 'upload-rate'), help: "the daemon's upload bandwidth; 0: unlimited" },
  { key: 'weights', type: 'object', default: {}, parse: weights, help: 'bandwidth shares of on-demand, preheat and prefetch' },
  { key: 'slots', type: 'int', min: 1, default: QOS_DEFAULTS.slots, help: 'piece transfers from peers in flight at once, over every download' },
  { key: 'tenants', type: 'any', default: [], parse: tenants, help: 'per-tenant limits: match, rate, burst, concurrency, download-rate, upload-rate' }
])

export function qosSettings(v: OptionValues<typeof QOS_SETTINGS>): QosSettings {
  return { downloadRate: v['download-rate'], uploadRate: v['upload-rate'], weights: v.weights, slots: v.slots, tenants: v.tenants }
}

/** `plugin-config.qos` checked against QOS_SETTINGS. */
export function parseQosSettings(raw: Record<string, unknown>): QosSettings {
  return qosSettings(loadSettings(QOS_SETTINGS, raw, KEY))
}
