// The judge: keeps each host's latest facts, evaluates the rules, and walks a host down the
// remedy ladder (heal → degrade → isolate) while its rules keep holding, and back to healthy
// once they have stayed false for a while. Every step goes through the risk controls: a
// cluster-wide budget of remedies per window, and a breaker that stops automatic remedies
// while too many hosts look unhealthy at once (then the cause is more likely the network or
// the supernode than the hosts, and remedies would only make it worse).

import type { Logger } from 'pino'
import type { HealthFacts } from '@naiad/proto'

import type { HealthEvent, HealthEventStore } from './event-store.ts'
import type { FactValue } from './expression.ts'
import type { Action, HealthSettings, Rule } from './settings.ts'

export type Step = 'none' | Action
export type HostLevel = 'healthy' | 'degraded' | 'isolated'

const LADDER: readonly Action[] = ['heal', 'degrade', 'isolate']
const rank = (s: Step): number => s === 'none' ? -1 : LADDER.indexOf(s)

export interface HostHealth {
  id: string
  facts: Record<string, FactValue>
  reportedAt: number
  level: HostLevel
  /** The highest remedy taken in the current episode; 'none' while healthy. */
  step: Step
  stepAt: number
  /** Rules whose condition holds, with the time it started holding. */
  firing: Map<string, number>
  /** Since when no rule has held, while a remedy is in force. */
  clearSince: number
  /** The last suppression recorded, so a remedy held back for the same reason is logged once. */
  suppressed: string
}

export interface EngineComponents {
  settings: HealthSettings
  events: HealthEventStore
  logger: Logger
  /** True for hosts that left the cluster (they neither count nor get remedies). */
  isGone(hostId: string): boolean
  /** What the scheduler observed of the host as a parent (facts the host cannot see itself). */
  schedulerFacts(hostId: string): Record<string, FactValue>
  /** Sends the `heal` command; undefined when there is no control service to send it with. */
  heal: ((hostId: string) => Promise<unknown>) | undefined
  now?: () => number
}

export class HealthEngine {
  readonly hosts = new Map<string, HostHealth>()
  private readonly applied: number[] = []
  private breaker = { open: false, since: 0, unhealthy: 0, population: 0 }
  /** Since when an open breaker's count has been under the limit. */
  private calmSince = 0
  private readonly c: EngineComponents
  private readonly now: () => number

  constructor(components: EngineComponents) {
    this.c = components
    this.now = components.now ?? Date.now
    // What was decided before a restart stands: remedies in force and the budget they used.
    // Restored hosts count as just heard from, and are judged again on their next reports.
    const now = this.now()
    this.applied.push(...components.events.appliedSince(now - components.settings.remedies.windowMs))
    for (const row of components.events.hosts()) {
      if (!['healthy', 'degraded', 'isolated'].includes(row.level) || !['none', ...LADDER].includes(row.step)) continue
      this.hosts.set(row.id, {
        id: row.id, facts: {}, reportedAt: now, level: row.level as HostLevel, step: row.step as Step, stepAt: row.stepAt,
        firing: new Map(), clearSince: 0, suppressed: ''
      })
    }
  }

  get breakerState(): { open: boolean; since: number; unhealthy: number; population: number } {
    return { ...this.breaker }
  }

  levelOf(hostId: string): HostLevel {
    return this.hosts.get(hostId)?.level ?? 'healthy'
  }

  /** Stores a host's report, with the facts the supernode derives from it. */
  report(hostId: string, f: HealthFacts): HostHealth {
    let h = this.hosts.get(hostId)
    if (h === undefined) {
      h = { id: hostId, facts: {}, reportedAt: 0, level: 'healthy', step: 'none', stepAt: 0, firing: new Map(), clearSince: 0, suppressed: '' }
      this.hosts.set(hostId, h)
    }
    h.facts = {
      ...f,
      clockSkewMs: Math.abs(f.clockOffsetMs),
      fuseAvailable: f.fuseDevice && f.fusermount
    }
    h.reportedAt = this.now()
    return h
  }

  isStale(h: HostHealth, now = this.now()): boolean {
    return now - h.reportedAt > this.c.settings.staleAfterMs
  }

  factsOf(h: HostHealth): Record<string, FactValue> {
    return { ...h.facts, ...this.c.schedulerFacts(h.id) }
  }

  /** One round: update which rules hold, the breaker, then remedies and recoveries. */
  evaluate(): void {
    const now = this.now()
    const { settings } = this.c
    const live: HostHealth[] = []
    let unhealthy = 0
    for (const h of this.hosts.values()) {
      if (this.c.isGone(h.id)) continue
      if (now - h.reportedAt > settings.forgetAfterMs) {
        // Long silent: a dead or removed node, no longer part of "at once". Its events stay.
        this.hosts.delete(h.id)
        this.c.events.saveHost({ id: h.id, level: 'healthy', step: 'none', stepAt: 0 })
        continue
      }
      live.push(h)
      if (this.isStale(h, now)) {
        // Facts too old to judge: keep what was decided, count the silence against the cluster.
        unhealthy++
        continue
      }
      const facts = this.factsOf(h)
      for (const rule of settings.rules) {
        if (rule.when.test(facts)) {
          if (!h.firing.has(rule.name)) h.firing.set(rule.name, now)
        } else {
          h.firing.delete(rule.name)
        }
      }
      if (h.firing.size > 0) unhealthy++
    }
    this.updateBreaker(unhealthy, live.length, now)

    for (const h of live) {
      if (this.isStale(h, now)) continue
      if (h.firing.size === 0) {
        h.suppressed = ''
        if (h.step === 'none') continue
        if (h.clearSince === 0) h.clearSince = now
        if (now - h.clearSince >= settings.recoverAfterMs) this.recover(h, now)
        continue
      }
      h.clearSince = 0
      let top: Rule | undefined
      for (const rule of settings.rules) {
        const since = h.firing.get(rule.name)
        if (since === undefined || now - since < rule.forMs) continue
        if (top === undefined || rank(rule.action) > rank(top.action)) top = rule
      }
      if (top === undefined) continue
      if (rank(top.action) > rank(h.step)) {
        this.attempt(h, top.action, top, `rule ${top.name} holds: ${top.when.source}`, now)
      } else if (h.step !== 'isolate' && now - h.stepAt >= settings.escalateAfterMs) {
        const next = LADDER[rank(h.step) + 1]
        this.attempt(h, next, top, `escalation: rule ${top.name} (${top.when.source}) still holds ${seconds(now - h.stepAt)} after ${h.step}`, now)
      }
    }
  }

  private updateBreaker(unhealthy: number, population: number, now: number): void {
    const { maxUnhealthyPercent, minHosts, closeAfterMs } = this.c.settings.breaker
    const percent = population === 0 ? 0 : (100 * unhealthy) / population
    const trip = population >= minHosts && percent > maxUnhealthyPercent
    this.breaker.unhealthy = unhealthy
    this.breaker.population = population
    if (trip) {
      this.calmSince = 0
      if (this.breaker.open) return
    } else {
      if (!this.breaker.open) return
      if (this.calmSince === 0) this.calmSince = now
      if (now - this.calmSince < closeAfterMs) return
      this.calmSince = 0
    }
    this.breaker.open = trip
    this.breaker.since = now
    const reason = `${unhealthy} of ${population} hosts unhealthy or silent (${percent.toFixed(0)} % ${trip ? '>' : '<='} ${maxUnhealthyPercent} %)` +
      (trip ? ': automatic remedies stop until it closes' : `, for ${seconds(closeAfterMs)}: automatic remedies resume`)
    this.record({ host: '', rule: '', action: '', decision: trip ? 'breaker-open' : 'breaker-close', reason, facts: null }, now)
  }

  private attempt(h: HostHealth, action: Action, rule: Rule, why: string, now: number): void {
    const { settings } = this.c
    const facts = this.factsOf(h)
    if (this.breaker.open) {
      const b = this.breaker
      this.suppress(h, action, rule, 'breaker', `${why}; suppressed: breaker open (${b.unhealthy} of ${b.population} hosts unhealthy or silent, limit ${settings.breaker.maxUnhealthyPercent} %)`, facts, now)
      return
    }
    while (this.applied.length > 0 && now - this.applied[0] >= settings.remedies.windowMs) this.applied.shift()
    if (this.applied.length >= settings.remedies.max) {
      const nextSlot = this.applied.length === 0 ? 0 : this.applied[0] + settings.remedies.windowMs - now
      this.suppress(h, action, rule, 'limit',
        `${why}; suppressed: risk limit of ${settings.remedies.max} remedies per ${seconds(settings.remedies.windowMs)} reached (next slot in ${seconds(nextSlot)})`, facts, now)
      return
    }
    if (action === 'heal' && this.c.heal === undefined) {
      // Without a way to reach the daemon the heal step is passed over, so escalation goes on.
      h.step = 'heal'
      h.stepAt = now
      this.c.events.saveHost(h)
      this.record({ host: h.id, rule: rule.name, action, decision: 'suppressed', reason: `${why}; suppressed: no control service to send heal with`, facts }, now)
      return
    }
    this.applied.push(now)
    h.step = action
    h.stepAt = now
    h.suppressed = ''
    if (action === 'degrade') h.level = h.level === 'isolated' ? 'isolated' : 'degraded'
    if (action === 'isolate') h.level = 'isolated'
    this.c.events.saveHost(h)
    this.record({ host: h.id, rule: rule.name, action, decision: 'applied', reason: why, facts }, now)
    this.c.logger.warn({ host: h.id, rule: rule.name, action }, 'health remedy applied')
    if (action === 'heal') this.sendHeal(h.id, rule.name)
  }

  private sendHeal(hostId: string, rule: string): void {
    this.c.heal!(hostId).then(
      (result) => this.record({ host: hostId, rule, action: 'heal', decision: 'heal-done', reason: 'the daemon re-verified its cache', facts: { result } }, this.now()),
      (err: unknown) => this.record({ host: hostId, rule, action: 'heal', decision: 'heal-failed', reason: `heal failed: ${(err as Error).message}`, facts: null }, this.now())
    )
  }

  private suppress(h: HostHealth, action: Action, rule: Rule, kind: string, reason: string, facts: Record<string, FactValue>, now: number): void {
    const key = `${action}:${kind}`
    if (h.suppressed === key) return
    h.suppressed = key
    this.record({ host: h.id, rule: rule.name, action, decision: 'suppressed', reason, facts }, now)
  }

  private recover(h: HostHealth, now: number): void {
    const was = h.level === 'healthy' ? h.step : h.level
    h.level = 'healthy'
    h.step = 'none'
    h.stepAt = 0
    h.clearSince = 0
    this.c.events.saveHost(h)
    this.record({ host: h.id, rule: '', action: 'recover', decision: 'recovered', reason: `no rule held for ${seconds(this.c.settings.recoverAfterMs)} (was ${was})`, facts: this.factsOf(h) }, now)
    this.c.logger.info({ host: h.id }, 'host recovered')
  }

  private record(e: Omit<HealthEvent, 'id' | 'at'>, at: number): void {
    this.c.events.add({ ...e, at })
  }
}

function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(ms % 1000 === 0 ? 0 : 1)} s`
}
