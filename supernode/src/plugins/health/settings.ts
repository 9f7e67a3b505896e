// The supernode half's settings (`plugin-config.health`), validated at start-up with
// messages that name the key. Every default lives here.

import { NaiadError, parseDuration } from '@naiad/proto'

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

function number(raw: Record<string, unknown>, key: string, fallback: number, min: number, max: number, label = key): number {
  const v = raw[key] ?? fallback
  if (typeof v !== 'number' || !Number.isFinite(v) || v < min || v > max) throw bad(label, `a number from ${min} to ${max}`)
  return v
}

function object(raw: Record<string, unknown>, key: string): Record<string, unknown> {
  const v = raw[key] ?? {}
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw bad(key, 'a mapping')
  return v as Record<string, unknown>
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

export function readHealthSettings(raw: Record<string, unknown>): HealthSettings {
  const remedies = object(raw, 'remedies')
  const breaker = object(raw, 'breaker')
  const settings: HealthSettings = {
    rules: readRules(raw.rules ?? DEFAULT_RULES),
    evaluateIntervalMs: duration(raw, 'evaluateInterval', 1000),
    escalateAfterMs: duration(raw, 'escalateAfter', 120_000),
    recoverAfterMs: duration(raw, 'recoverAfter', 300_000),
    staleAfterMs: duration(raw, 'staleAfter', 60_000),
    forgetAfterMs: duration(raw, 'forgetAfter', 600_000),
    penalty: number(raw, 'penalty', 0.5, 0, 10),
    remedies: {
      max: number(remedies, 'max', 5, 0, 1e6, 'remedies.max'),
      windowMs: duration(remedies, 'window', 600_000, 'remedies.window')
    },
    breaker: {
      maxUnhealthyPercent: number(breaker, 'maxUnhealthyPercent', 30, 0, 100, 'breaker.maxUnhealthyPercent'),
      minHosts: number(breaker, 'minHosts', 3, 1, 1e6, 'breaker.minHosts'),
      closeAfterMs: duration(breaker, 'closeAfter', 30_000, 'breaker.closeAfter')
    },
    healTimeoutMs: duration(raw, 'healTimeout', 300_000)
  }
  if (settings.evaluateIntervalMs <= 0) throw bad('evaluateInterval', 'a duration above zero')
  if (settings.forgetAfterMs <= settings.staleAfterMs) throw bad('forgetAfter', 'a duration longer than staleAfter')
  if (settings.remedies.windowMs <= 0) throw bad('remedies.window', 'a duration above zero')
  return settings
}
