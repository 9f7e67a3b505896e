// The judge: keeps each host's latest facts, evaluates the rules, and walks a host down the
// remedy ladder (heal → degrade → isolate) while its rules keep holding, and back to healthy
// once they have stayed false for a while. Every step goes through the risk controls: a
// cluster-wide budget of remedies per window (counted and taken in the shared database, so
// it holds across supernodes), and a breaker (one for the cluster, in the shared database,
// judged on every supernode's hosts) that stops automatic remedies
// while too many hosts look unhealthy at once (then the cause is more likely the network or
// the supernode than the hosts, and remedies would only make it worse).

import type { Logger } from 'pino'
import type { HealthFacts } from '@naiad/proto'

import type { BreakerDecision, BreakerState, HealthEvent, HealthEventStore, HostStateRow } from './event-store.ts'
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
  /** This supernode's ID, under which its hosts' counts go into the cluster's breaker. */
  self?: string
  now?: () => number
}

/** How many rounds a supernode's breaker counts stay in the sum after its last one (it may have died). */
const COUNT_ROUNDS = 3

export class HealthEngine {
  readonly hosts = new Map<string, HostHealth>()
  private breaker: BreakerState = { open: false, since: 0, calmSince: 0, unhealthy: 0, population: 0 }
  /**
   * Hosts another supernode of the cluster judges (they report to it): their level holds
   * here too (isolated everywhere), but they are not counted or forgotten here.
   */
  private remote = new Map<string, HostStateRow>()
  private readonly c: EngineComponents
  private readonly self: string
  private readonly now: () => number
  private running: Promise<void> | undefined

  constructor(components: EngineComponents) {
    this.c = components
    this.self = components.self ?? 'local'
    this.now = components.now ?? Date.now
  }

  /**
   * What was decided before a restart stands: remedies in force (the budget they used is
   * read from the database at each remedy). Restored hosts count as just heard from, and are
   * judged again on their next reports.
   */
  async restore(signal?: AbortSignal): Promise<void> {
    const now = this.now()
    for (const row of await this.readHosts(signal)) {
      if (row.supernode !== null && row.supernode !== this.self) continue
      this.hosts.set(row.id, {
        id: row.id, facts: {}, reportedAt: now, level: row.level as HostLevel, step: row.step as Step, stepAt: row.stepAt,
        firing: new Map(), clearSince: 0, suppressed: ''
      })
    }
    await this.readRemote(now)
  }

  get breakerState(): { open: boolean; since: number; unhealthy: number; population: number } {
    const { open, since, unhealthy, population } = this.breaker
    return { open, since, unhealthy, population }
  }

  /** Takes this supernode's hosts out of the cluster's breaker (a clean shutdown). */
  async leave(signal?: AbortSignal): Promise<void> {
    await this.c.events.leaveBreaker(this.self, signal)
  }

  levelOf(hostId: string): HostLevel {
    return this.hosts.get(hostId)?.level ?? (this.remote.get(hostId)?.level as HostLevel | undefined) ?? 'healthy'
  }

  /** Stores a host's report, with the facts the supernode derives from it. */
  report(hostId: string, f: HealthFacts): HostHealth {
    let h = this.hosts.get(hostId)
    if (h === undefined) {
      // A host that reported to another supernode before keeps the remedy that one took.
      const was = this.remote.get(hostId)
      this.remote.delete(hostId)
      h = {
        id: hostId, facts: {}, reportedAt: 0, level: (was?.level ?? 'healthy') as HostLevel, step: (was?.step ?? 'none') as Step, stepAt: was?.stepAt ?? 0,
        firing: new Map(), clearSince: 0, suppressed: ''
      }
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

  /** One round: update which rules hold, the breaker, then remedies and recoveries. A round still running is not started again. */
  evaluate(): Promise<void> {
    this.running ??= this.round().finally(() => { this.running = undefined })
    return this.running
  }

  private async round(): Promise<void> {
    const now = this.now()
    const { settings } = this.c
    await this.readRemote(now)
    const live: HostHealth[] = []
    let unhealthy = 0
    for (const h of this.hosts.values()) {
      if (this.c.isGone(h.id)) continue
      if (now - h.reportedAt > settings.forgetAfterMs) {
        // Long silent: a dead or removed node, no longer part of "at once". Its events stay.
        this.hosts.delete(h.id)
        await this.c.events.saveHost({ id: h.id, level: 'healthy', step: 'none', stepAt: 0 }, this.self)
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
    await this.updateBreaker(unhealthy, live.length, now)

    for (const h of live) {
      if (this.isStale(h, now)) continue
      if (h.firing.size === 0) {
        h.suppressed = ''
        if (h.step === 'none') continue
        if (h.clearSince === 0) h.clearSince = now
        if (now - h.clearSince >= settings.recoverAfterMs) await this.recover(h, now)
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
        await this.attempt(h, top.action, top, `rule ${top.name} holds: ${top.when.source}`, now)
      } else if (h.step !== 'isolate' && now - h.stepAt >= settings.escalateAfterMs) {
        const next = LADDER[rank(h.step) + 1]
        await this.attempt(h, next, top, `escalation: rule ${top.name} (${top.when.source}) still holds ${seconds(now - h.stepAt)} after ${h.step}`, now)
      }
    }
  }

  /** The valid rows of health_hosts. */
  private async readHosts(signal?: AbortSignal): Promise<HostStateRow[]> {
    return (await this.c.events.hosts(signal)).filter((r) => ['healthy', 'degraded', 'isolated'].includes(r.level) && ['none', ...LADDER].includes(r.step))
  }

  /** The hosts other supernodes judge now; a silent host of ours that another judges since has moved there. */
  private async readRemote(now: number): Promise<void> {
    const remote = new Map<string, HostStateRow>()
    for (const row of await this.readHosts()) {
      if (row.supernode === null || row.supernode === this.self) continue
      const mine = this.hosts.get(row.id)
      if (mine !== undefined && !this.isStale(mine, now)) continue
      this.hosts.delete(row.id)
      remote.set(row.id, row)
    }
    this.remote = remote
  }

  /** Adds this supernode's counts to the cluster's and moves the shared breaker (under its lock, so one supernode records each flip). */
  private async updateBreaker(unhealthy: number, population: number, now: number): Promise<void> {
    const { settings } = this.c
    const decide: BreakerDecision = (counts, prev) => {
      const { maxUnhealthyPercent, minHosts, closeAfterMs } = settings.breaker
      const percent = counts.population === 0 ? 0 : (100 * counts.unhealthy) / counts.population
      const trip = counts.population >= minHosts && percent > maxUnhealthyPercent
      let calmSince = prev.calmSince
      if (trip) {
        calmSince = 0
        if (prev.open) return { state: { ...prev, calmSince } }
      } else {
        if (!prev.open) return { state: prev }
        if (calmSince === 0) calmSince = now
        if (now - calmSince < closeAfterMs) return { state: { ...prev, calmSince } }
        calmSince = 0
      }
      const reason = `${counts.unhealthy} of ${counts.population} hosts unhealthy or silent (${percent.toFixed(0)} % ${trip ? '>' : '<='} ${maxUnhealthyPercent} %)` +
        (trip ? ': automatic remedies stop until it closes' : `, for ${seconds(closeAfterMs)}: automatic remedies resume`)
      return {
        state: { open: trip, since: now, calmSince },
        event: { at: now, host: '', rule: '', action: '', decision: trip ? 'breaker-open' : 'breaker-close', reason, facts: null }
      }
    }
    this.breaker = await this.c.events.breakerRound(this.self, { unhealthy, population }, now, now - COUNT_ROUNDS * settings.evaluateIntervalMs, decide)
  }

  private async attempt(h: HostHealth, action: Action, rule: Rule, why: string, now: number): Promise<void> {
    const { settings } = this.c
    const facts = this.factsOf(h)
    if (this.breaker.open) {
      const b = this.breaker
      await this.suppress(h, action, rule, 'breaker', `${why}; suppressed: breaker open (${b.unhealthy} of ${b.population} hosts unhealthy or silent, limit ${settings.breaker.maxUnhealthyPercent} %)`, facts, now)
      return
    }
    const { max, windowMs } = settings.remedies
    const full = (used: { count: number; oldestAt: number }): Promise<void> => this.suppress(h, action, rule, 'limit',
      `${why}; suppressed: risk limit of ${max} remedies per ${seconds(windowMs)} reached (next slot in ${seconds(Math.max(0, used.oldestAt + windowMs - now))})`, facts, now)
    if (action === 'heal' && this.c.heal === undefined) {
      // A heal step passed over takes no slot, but is held back like the rest while the budget is spent.
      const used = await this.c.events.budgetUsed(now - windowMs)
      if (used.count >= max) return full(used)
      // Without a way to reach the daemon the heal step is passed over, so escalation goes on.
      h.step = 'heal'
      h.stepAt = now
      await this.c.events.saveHost(h, this.self)
      await this.record({ host: h.id, rule: rule.name, action, decision: 'suppressed', reason: `${why}; suppressed: no control service to send heal with`, facts }, now)
      return
    }
    const taken = await this.c.events.reserve({ at: now, host: h.id, rule: rule.name, action, reason: why, facts }, { max, windowMs })
    if ('full' in taken) return full(taken.full)
    h.step = action
    h.stepAt = now
    h.suppressed = ''
    if (action === 'degrade') h.level = h.level === 'isolated' ? 'isolated' : 'degraded'
    if (action === 'isolate') h.level = 'isolated'
    await this.c.events.saveHost(h, this.self)
    this.c.logger.warn({ host: h.id, rule: rule.name, action }, 'health remedy applied')
    if (action === 'heal') this.sendHeal(h.id, rule.name)
  }

  private sendHeal(hostId: string, rule: string): void {
    this.c.heal!(hostId).then(
      (result) => this.record({ host: hostId, rule, action: 'heal', decision: 'heal-done', reason: 'the daemon re-verified its cache', facts: { result } }, this.now()),
      (err: unknown) => this.record({ host: hostId, rule, action: 'heal', decision: 'heal-failed', reason: `heal failed: ${(err as Error).message}`, facts: null }, this.now())
    ).catch((err: unknown) => this.c.logger.warn({ host: hostId, err: (err as Error).message }, 'cannot record a heal result'))
  }

  private async suppress(h: HostHealth, action: Action, rule: Rule, kind: string, reason: string, facts: Record<string, FactValue>, now: number): Promise<void> {
    const key = `${action}:${kind}`
    if (h.suppressed === key) return
    h.suppressed = key
    await this.record({ host: h.id, rule: rule.name, action, decision: 'suppressed', reason, facts }, now)
  }

  private async recover(h: HostHealth, now: number): Promise<void> {
    const was = h.level === 'healthy' ? h.step : h.level
    h.level = 'healthy'
    h.step = 'none'
    h.stepAt = 0
    h.clearSince = 0
    await this.c.events.saveHost(h, this.self)
    await this.record({ host: h.id, rule: '', action: 'recover', decision: 'recovered', reason: `no rule held for ${seconds(this.c.settings.recoverAfterMs)} (was ${was})`, facts: this.factsOf(h) }, now)
    this.c.logger.info({ host: h.id }, 'host recovered')
  }

  private async record(e: Omit<HealthEvent, 'id' | 'at'>, at: number): Promise<void> {
    await this.c.events.add({ ...e, at })
  }
}

function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(ms % 1000 === 0 ? 0 : 1)} s`
}
