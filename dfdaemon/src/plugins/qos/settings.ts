// `plugin-config.qos`: every setting of the QoS plugin, its default and its validation.

import { NaiadError, parseSize } from '@naiad/proto'

import { PRIORITIES, type Priority } from '@naiad/peer'

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

const TOP = new Set(['download-rate', 'upload-rate', 'weights', 'slots', 'tenants'])
const TENANT = new Set(['match', 'rate', 'burst', 'concurrency', 'download-rate', 'upload-rate'])

export function parseQosSettings(raw: Record<string, unknown>): QosSettings {
  for (const k of Object.keys(raw)) if (!TOP.has(k)) throw bad(k, `unknown setting (known: ${[...TOP].join(', ')})`)
  const weights = { ...QOS_DEFAULTS.weights }
  if (raw.weights !== undefined) {
    if (typeof raw.weights !== 'object' || raw.weights === null) throw bad('weights', `expected a map of ${PRIORITIES.join(', ')} to numbers`)
    for (const [k, v] of Object.entries(raw.weights)) {
      if (!(PRIORITIES as readonly string[]).includes(k)) throw bad(`weights.${k}`, `unknown class (known: ${PRIORITIES.join(', ')})`)
      if (typeof v !== 'number' || !(v > 0)) throw bad(`weights.${k}`, 'must be a number above zero')
      weights[k as Priority] = v
    }
  }
  const slots = count(raw.slots, 'slots', QOS_DEFAULTS.slots)
  if (slots < 1) throw bad('slots', 'must be at least 1')
  const tenantsRaw = raw.tenants ?? []
  if (!Array.isArray(tenantsRaw)) throw bad('tenants', 'expected a list')
  const tenants = tenantsRaw.map((t: unknown, i): TenantSettings => {
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
  return {
    downloadRate: rate(raw['download-rate'], 'download-rate'),
    uploadRate: rate(raw['upload-rate'], 'upload-rate'),
    weights,
    slots,
    tenants
  }
}
