// The supernode half's settings (`plugin-config.health`): a schema the plugin host validates
// at start-up with messages that name the key. Every default lives here.

import { defineOptions, loadSettings, NaiadError, parseDuration, type OptionValues } from '@naiad/proto'

import { ConditionError, parseCondition, type Condition, type FactType } from './expression.ts'

export const ACTIONS = ['heal', 'degrade', 'isolate'] as const
export type Action = (typeof ACTIONS)[number]

export interface Rule {
  name: string
  when: Condition
  action: Action
  /** How long the condition must hold before the action is taken. */
  forMs: number
}

export interface HealthSettings {
  rules: Rule[]
  evaluateIntervalMs: number
  /** A remedy whose condition still holds this long later escalates: heal → degrade → isolate. */
  escalateAfterMs: number
  /** A host whose rules all stayed false this long returns to healthy. */
  recoverAfterMs: number
  /** A host that has not reported for this long is unknown: no remedy, counted unhealthy by the breaker. */
  staleAfterMs: number
  /** A host silent this long is forgotten: a dead node must not hold the breaker open for ever. */
  forgetAfterMs: number
  /** Subtracted from a degraded host's parent score (scores are about 0..1). */
  penalty: number
  /** At most `max` remedies in any `windowMs`, cluster-wide. */
  remedies: { max: number; windowMs: number }
  /**
   * No automatic remedy while more than `maxUnhealthyPercent` of at least `minHosts` hosts are
   * unhealthy; once open, the breaker closes only after staying under the limit `closeAfterMs`,
   * so a count hovering at the limit does not flap it.
   */
  breaker: { maxUnhealthyPercent: number; minHosts: number; closeAfterMs: number }
  healTimeoutMs: number
}

/** Facts a rule may name: what daemons measure, what the supernode derives, what the scheduler saw. */
export const FACT_TYPES: Readonly<Record<string, FactType>> = {
  diskFreeBytes: 'number',
  diskFreeRatio: 'number',
  samples: 'number',
  pieceFailureRate: 'number',
  uploadSamples: 'number',
  uploadErrorRate: 'number',
  meanPieceCostMs: 'number',
  clockOffsetMs: 'number',
  clockSkewMs: 'number',
  clockRttMs: 'number',
  fuseDevice: 'boolean',
  fusermount: 'boolean',
  fuseAvailable: 'boolean',
  servedBadPieces: 'number',
  servedFailedPieces: 'number',
  servedGoodPieces: 'number'
}

export const DEFAULT_RULES = [
  { name: 'failing-pieces', when: 'pieceFailureRate > 0.3 and samples >= 10', action: 'degrade' },
  { name: 'failing-uploads', when: 'uploadErrorRate > 0.3 and uploadSamples >= 10', action: 'heal' },
  { name: 'serves-corrupt-pieces', when: 'servedBadPieces >= 3', action: 'isolate' },
  { name: 'disk-full', when: 'diskFreeRatio < 0.02', action: 'degrade' }
]

const bad = (key: string, want: string): NaiadError => new NaiadError('PROTO_ERR_BAD_CONFIG', `plugin-config.health.${key}: expected ${want}`)

function duration(raw: Record<string, unknown>, key: string, fallback: number, label = key): number {
  const v = raw[key]
  if (v === undefined) return fallback
  if (typeof v !== 'string') throw bad(label, 'a duration such as 30s')
  try {
    return parseDuration(v, label)
  } catch (err) {
    throw new NaiadError('PROTO_ERR_BAD_CONFIG', `plugin-config.health.${label}: ${(err as Error).message}`, { cause: err })
  }
}

function readRules(list: unknown): Rule[] {
  if (!Array.isArray(list)) throw bad('rules', 'a list of {name, when, action}')
  const names = new Set<string>()
  return list.map((r: unknown, i) => {
    const key = `rules[${i}]`
    if (typeof r !== 'object' || r === null) throw bad(key, 'a mapping {name, when, action}')
    const { name, when, action } = r as Record<string, unknown>
    if (typeof name !== 'string' || !/^[A-Za-z0-9_.-]{1,64}$/.test(name)) throw bad(`${key}.name`, 'a name of letters, digits, ".", "_" or "-"')
    if (names.has(name)) throw bad(`${key}.name`, `a unique name ("${name}" is used twice)`)
    names.add(name)
    if (typeof action !== 'string' || !(ACTIONS as readonly string[]).includes(action)) throw bad(`${key}.action`, `one of ${ACTIONS.join(', ')}`)
    if (typeof when !== 'string') throw bad(`${key}.when`, 'a condition such as "pieceFailureRate > 0.3 and samples >= 10"')
    let condition: Condition
    try {
      condition = parseCondition(when, FACT_TYPES)
    } catch (err) {
      if (!(err instanceof ConditionError)) throw err
      throw new NaiadError('PROTO_ERR_BAD_CONFIG', `plugin-config.health.${key}.when: ${err.message}: ${when}`, { cause: err })
    }
    return { name, when: condition, action: action as Action, forMs: duration(r as Record<string, unknown>, 'for', 0, `${key}.for`) }
  })
}

/** The schema of `plugin-config.health`: every default here. */
export const HEALTH_SETTINGS = defineOptions([
  { key: 'rules', type: 'any', default: DEFAULT_RULES, parse: readRules, help: 'rules: {name, when, action, for?}' },
  { key: 'evaluateInterval', type: 'duration', min: 1, default: '1s', help: 'how often the rules are evaluated' },
  { key: 'escalateAfter', type: 'duration', default: '2m', help: 'a remedy whose condition still holds this long later escalates' },
  { key: 'recoverAfter', type: 'duration', default: '5m', help: 'a host whose rules all stayed false this long is healthy again' },
  { key: 'staleAfter', type: 'duration', default: '60s', help: 'a host silent this long is unknown' },
  { key: 'forgetAfter', type: 'duration', default: '10m', help: 'a host silent this long is forgotten (longer than staleAfter)' },
  { key: 'penalty', type: 'number', min: 0, max: 10, default: 0.5, help: "taken from a degraded host's parent score" },
  { key: 'remedies.max', type: 'number', min: 0, max: 1e6, default: 5, help: 'at most this many remedies in any window, cluster-wide' },
  { key: 'remedies.window', type: 'duration', min: 1, default: '10m', help: 'the window of remedies.max' },
  { key: 'breaker.maxUnhealthyPercent', type: 'number', min: 0, max: 100, default: 30, help: 'no automatic remedy while more hosts than this are unhealthy' },
  { key: 'breaker.minHosts', type: 'number', min: 1, max: 1e6, default: 3, help: 'the breaker counts only with at least this many hosts' },
  { key: 'breaker.closeAfter', type: 'duration', default: '30s', help: 'an open breaker closes after this long under the limit' },
  { key: 'healTimeout', type: 'duration', default: '5m', help: 'how long a daemon may take to heal' }
])

export function healthSettings(v: OptionValues<typeof HEALTH_SETTINGS>): HealthSettings {
  if (v.forgetAfter <= v.staleAfter) throw bad('forgetAfter', 'a duration longer than staleAfter')
  return {
    rules: v.rules,
    evaluateIntervalMs: v.evaluateInterval,
    escalateAfterMs: v.escalateAfter,
    recoverAfterMs: v.recoverAfter,
    staleAfterMs: v.staleAfter,
    forgetAfterMs: v.forgetAfter,
    penalty: v.penalty,
    remedies: { max: v['remedies.max'], windowMs: v['remedies.window'] },
    breaker: { maxUnhealthyPercent: v['breaker.maxUnhealthyPercent'], minHosts: v['breaker.minHosts'], closeAfterMs: v['breaker.closeAfter'] },
    healTimeoutMs: v.healTimeout
  }
}

export function readHealthSettings(raw: Record<string, unknown>): HealthSettings {
  return healthSettings(loadSettings(HEALTH_SETTINGS, raw, 'plugin-config.health'))
}
