// Service-level indicators and objectives over stored pull traces.
//
// Every objective counts pulls: each pull in its window is eligible or not, and good or
// not, for its SLI. Compliance = good / eligible; the error budget is 1 - target; burn
// rate = (1 - compliance) / (1 - target), so 1 spends the budget exactly over the window
// and the budget remaining over the window is 1 - burn rate.

import { defineOptions, loadSettings, NaiadError, parseDuration, type OptionValues } from '@naiad/proto'

import { GIB, type TraceStore } from './trace-store.ts'

export const SLIS = ['success-rate', 'seconds-per-gib', 'back-to-source-ratio'] as const
export type Sli = (typeof SLIS)[number]

export interface Objective {
  name: string
  sli: Sli
  /** seconds-per-gib: the most seconds per GiB of a good pull; back-to-source-ratio: the largest share of a good pull's bytes from the origin. */
  threshold: number | null
  target: number
  windowMs: number
  /** The shorter window of the fast burn rate; window / 12 unless given. */
  shortWindowMs: number
  window: string
  shortWindow: string
}

export interface SloSettings {
  objectives: Objective[]
  retentionMs: number
  windowMs: number
  window: string
  pruneIntervalMs: number
}

export const DEFAULT_OBJECTIVES = [
  { name: 'pull-speed', sli: 'seconds-per-gib', threshold: 30, target: 0.99, window: '1h' },
  { name: 'success', sli: 'success-rate', target: 0.999, window: '1h' }
]

const bad = (key: string, want: string): NaiadError => new NaiadError('PROTO_ERR_BAD_CONFIG', `plugin-config.slo.${key}: expected ${want}`)

/** `30s`, `1h`, and days as `7d`. */
export function parseSloDuration(raw: unknown, key: string): number {
  if (typeof raw !== 'string') throw bad(key, 'a duration such as 1h or 7d')
  const days = /^(\d+)d$/.exec(raw.trim())
  if (days !== null) return Number(days[1]) * 86_400_000
  try {
    return parseDuration(raw, `plugin-config.slo.${key}`)
  } catch (err) {
    throw new NaiadError('PROTO_ERR_BAD_CONFIG', (err as Error).message, { cause: err })
  }
}

export const formatMs = (ms: number): string => (ms % 3_600_000 === 0 ? `${ms / 3_600_000}h` : ms % 60_000 === 0 ? `${ms / 60_000}m` : ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`)

function readObjective(raw: unknown, i: number): Objective {
  const key = `objectives[${i}]`
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw bad(key, 'an object {name, sli, target, window}')
  const o = raw as Record<string, unknown>
  if (typeof o.name !== 'string' || !/^[a-z0-9][a-z0-9_.-]{0,62}$/i.test(o.name)) throw bad(`${key}.name`, 'a name of letters, digits, - _ .')
  if (!SLIS.includes(o.sli as Sli)) throw bad(`${key}.sli`, `one of ${SLIS.join(', ')}`)
  const sli = o.sli as Sli
  if (typeof o.target !== 'number' || !(o.target > 0 && o.target < 1)) throw bad(`${key}.target`, 'a number between 0 and 1 (exclusive), such as 0.99')
  let threshold: number | null = null
  if (sli !== 'success-rate') {
    const max = sli === 'back-to-source-ratio' ? 1 : Infinity
    if (typeof o.threshold !== 'number' || !(o.threshold >= 0 && o.threshold <= max)) {
      throw bad(`${key}.threshold`, sli === 'back-to-source-ratio' ? 'a share from 0 to 1' : 'seconds per GiB, a number >= 0')
    }
    threshold = o.threshold
  }
  const windowMs = parseSloDuration(o.window ?? '1h', `${key}.window`)
  const shortWindowMs = o.shortWindow === undefined ? Math.max(1000, Math.round(windowMs / 12)) : parseSloDuration(o.shortWindow, `${key}.shortWindow`)
  if (windowMs < 1000 || shortWindowMs > windowMs) throw bad(`${key}.window`, 'at least 1s, and no shorter than shortWindow')
  return { name: o.name, sli, threshold, target: o.target, windowMs, shortWindowMs, window: formatMs(windowMs), shortWindow: formatMs(shortWindowMs) }
}

function readObjectives(list: unknown): Objective[] {
  if (!Array.isArray(list)) throw bad('objectives', 'a list of objectives')
  const objectives = list.map(readObjective)
  const names = new Set<string>()
  for (const o of objectives) {
    if (names.has(o.name)) throw bad('objectives', `unique names ("${o.name}" appears twice)`)
    names.add(o.name)
  }
  return objectives
}

/** The schema of `plugin-config.slo`; durations also take days (`7d`). */
export const SLO_SETTINGS = defineOptions([
  { key: 'objectives', type: 'any', default: DEFAULT_OBJECTIVES, parse: readObjectives, help: 'objectives: {name, sli, threshold?, target, window, shortWindow?}' },
  { key: 'window', type: 'string', default: '1h', parse: (v: string) => parseSloDuration(v, 'window'), help: 'the window of the SLIs GET /api/v1/slo shows' },
  { key: 'retention', type: 'string', default: '7d', parse: (v: string) => parseSloDuration(v, 'retention'), help: 'how long traces are kept' },
  { key: 'pruneInterval', type: 'string', default: '1m', parse: (v: string) => parseSloDuration(v, 'pruneInterval'), help: 'how often traces past their retention are deleted' }
])

export function sloSettings(v: OptionValues<typeof SLO_SETTINGS>): SloSettings {
  const longest = Math.max(v.window, ...v.objectives.map((o) => o.windowMs))
  if (v.retention < longest) throw bad('retention', `at least the longest window (${formatMs(longest)})`)
  return { objectives: v.objectives, retentionMs: v.retention, windowMs: v.window, window: formatMs(v.window), pruneIntervalMs: v.pruneInterval }
}

export function readSloSettings(raw: Record<string, unknown>): SloSettings {
  return sloSettings(loadSettings(SLO_SETTINGS, raw, 'plugin-config.slo'))
}

/** A threshold as a real number in both dialects (PostgreSQL would otherwise guess the column's BIGINT for it). */
const THRESHOLD = 'CAST(? AS DOUBLE PRECISION)'

/** Which pulls count for an SLI and which of them are good, as SQL over one `slo_traces` row. */
function conditions(o: Objective): { eligible: string; good: string; params: number[] } {
  switch (o.sli) {
    case 'success-rate':
      return { eligible: 'TRUE', good: "result = 'succeeded'", params: [] }
    case 'seconds-per-gib':
      return { eligible: "result = 'succeeded' AND content_length > 0", good: `duration_ms / 1000.0 <= ${THRESHOLD} * (content_length / ${GIB}.0)`, params: [o.threshold!] }
    case 'back-to-source-ratio':
      return { eligible: 'bytes_peer + bytes_seed + bytes_origin > 0', good: `bytes_origin <= ${THRESHOLD} * (bytes_peer + bytes_seed + bytes_origin)`, params: [o.threshold!] }
  }
}

export interface ObjectiveReport {
  name: string
  sli: Sli
  threshold: number | null
  target: number
  window: string
  eligible: number
  good: number
  /** good / eligible; null with no eligible pull. */
  compliance: number | null
  errorBudget: number
  /** 1 - burnRate: negative once the budget is overspent. */
  errorBudgetRemaining: number
  burnRate: number
  shortWindow: string
  burnRateShort: number
  met: boolean
}

function burn(good: number, eligible: number, target: number): number {
  return eligible === 0 ? 0 : (1 - good / eligible) / (1 - target)
}

export async function evaluate(store: TraceStore, o: Objective, now: number, signal?: AbortSignal): Promise<ObjectiveReport> {
  const c = conditions(o)
  const long = await store.count(now - o.windowMs, c.eligible, c.good, c.params, signal)
  const short = await store.count(now - o.shortWindowMs, c.eligible, c.good, c.params, signal)
  const burnRate = burn(long.good, long.eligible, o.target)
  const compliance = long.eligible === 0 ? null : long.good / long.eligible
  return {
    name: o.name, sli: o.sli, threshold: o.threshold, target: o.target, window: o.window,
    eligible: long.eligible, good: long.good, compliance,
    errorBudget: 1 - o.target,
    errorBudgetRemaining: 1 - burnRate,
    burnRate,
    shortWindow: o.shortWindow,
    burnRateShort: burn(short.good, short.eligible, o.target),
    met: compliance === null || compliance >= o.target
  }
}

export interface SliReport {
  window: string
  pulls: number
  succeeded: number
  failed: number
  successRate: number | null
  /** Seconds of succeeded pulls per GiB they delivered. */
  secondsPerGiB: number | null
  /** Bytes from the origin over all bytes the pulls stored. */
  backToSourceRatio: number | null
  bytes: { peer: number; seed: number; origin: number }
}

export async function indicators(store: TraceStore, windowMs: number, window: string, now: number, signal?: AbortSignal): Promise<SliReport> {
  const t = await store.totals(now - windowMs, signal)
  const all = t.bytesPeer + t.bytesSeed + t.bytesOrigin
  return {
    window,
    pulls: t.pulls,
    succeeded: t.succeeded,
    failed: t.failed,
    successRate: t.pulls === 0 ? null : t.succeeded / t.pulls,
    secondsPerGiB: t.sizedBytes === 0 ? null : t.sizedSeconds / (t.sizedBytes / GIB),
    backToSourceRatio: all === 0 ? null : t.bytesOrigin / all,
    bytes: { peer: t.bytesPeer, seed: t.bytesSeed, origin: t.bytesOrigin }
  }
}

