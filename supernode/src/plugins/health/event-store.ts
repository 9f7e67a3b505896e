// Every health decision as a row in the shared database: remedies applied and suppressed
// (with why), recoveries, heal results, the breaker opening and closing. The remedy budget
// is counted from these rows, and taken in the same transaction that records the remedy,
// so supernodes sharing one database never exceed it together.

import type { Sql } from '../../database/sql.ts'

export const DECISIONS = ['applied', 'suppressed', 'recovered', 'heal-done', 'heal-failed', 'breaker-open', 'breaker-close'] as const
export type Decision = (typeof DECISIONS)[number]

export interface HealthEvent {
  id: number
  at: number
  /** Empty for cluster-wide events (the breaker). */
  host: string
  rule: string
  action: string
  decision: Decision
  reason: string
  facts: Record<string, unknown> | null
  /** The supernode (peer ID) that recorded it; null in events from before this was kept. */
  supernode?: string | null
}

interface Row {
  id: number
  at: number
  host: string
  rule: string
  action: string
  decision: Decision
  reason: string
  facts: string | null
  supernode: string | null
}

/** A host's remedy state, kept across supernode restarts so an isolated host stays isolated. */
export interface HostStateRow {
  id: string
  level: string
  step: string
  stepAt: number
  /** The supernode that judges the host (it reports there); null in rows from before several supernodes. */
  supernode?: string | null
}

/** The breaker as every supernode sees it: open or not since when, over the cluster's hosts. */
export interface BreakerState {
  open: boolean
  since: number
  /** Since when an open breaker's count has been under the limit (0: it is not). */
  calmSince: number
  /** Over every supernode's hosts that reported recently. */
  unhealthy: number
  population: number
}

/** What a breaker round decides: the next state, and the event to record when it flips. */
export type BreakerDecision = (counts: { unhealthy: number; population: number }, prev: Pick<BreakerState, 'open' | 'since' | 'calmSince'>) =>
  { state: Pick<BreakerState, 'open' | 'since' | 'calmSince'>; event?: Omit<HealthEvent, 'id'> }

/** What reserving a remedy gave: the recorded event, or (budget spent) when the oldest remedy in the window was taken. */
export type Reservation = { event: HealthEvent } | { full: { count: number; oldestAt: number } }

const fromRow = (r: Row): HealthEvent => ({ ...r, facts: r.facts === null ? null : JSON.parse(r.facts) as Record<string, unknown> })

export class HealthEventStore {
  private readonly sql: Sql
  /** This supernode's peer ID, stamped on the events it records. */
  private readonly self: string | null

  constructor(sql: Sql, self?: string) {
    this.sql = sql
    this.self = self ?? null
  }

  async add(e: Omit<HealthEvent, 'id'>, signal?: AbortSignal): Promise<HealthEvent> {
    return this.insert(this.sql, e, signal)
  }

  /** The newest `limit` events after `afterId`, oldest first. */
  async list(options: { host?: string; afterId?: number; limit?: number } = {}, signal?: AbortSignal): Promise<HealthEvent[]> {
    const limit = Math.max(1, Math.min(options.limit ?? 500, 5000))
    const after = options.afterId ?? 0
    const rows = options.host === undefined
      ? await this.sql.all<Row>('SELECT * FROM health_events WHERE id > ? ORDER BY id DESC LIMIT ?', [after, limit], signal)
      : await this.sql.all<Row>('SELECT * FROM health_events WHERE host = ? AND id > ? ORDER BY id DESC LIMIT ?', [options.host, after, limit], signal)
    return rows.reverse().map(fromRow)
  }

  /**
   * Records `event` as applied if fewer than `max` remedies were applied after `event.at -
   * windowMs` (by anyone on this database). The count and the insert are one transaction
   * holding the budget row, so two supernodes racing cannot both take the last slot.
   */
  async reserve(event: Omit<HealthEvent, 'id' | 'decision'>, budget: { max: number; windowMs: number }, signal?: AbortSignal): Promise<Reservation> {
    return this.sql.transaction(async (tx) => {
      // SQLite's BEGIN IMMEDIATE already holds the database's write lock; PostgreSQL locks the row.
      if (tx.dialect === 'postgres') await tx.get('SELECT reserved_at FROM health_budget WHERE id = 1 FOR UPDATE')
      const used = await this.used(tx, event.at - budget.windowMs)
      if (used.count >= budget.max) return { full: used }
      await tx.run('UPDATE health_budget SET reserved_at = ? WHERE id = 1', [event.at])
      return { event: await this.insert(tx, { ...event, decision: 'applied' }) }
    }, signal)
  }

  /** Remedies applied after `since` (by anyone on this database), and when the oldest of them was. */
  async budgetUsed(since: number, signal?: AbortSignal): Promise<{ count: number; oldestAt: number }> {
    return this.used(this.sql, since, signal)
  }

  private async used(sql: Sql, since: number, signal?: AbortSignal): Promise<{ count: number; oldestAt: number }> {
    const r = await sql.get<{ n: number; oldest: number | null }>(
      "SELECT COUNT(*) AS n, MIN(at) AS oldest FROM health_events WHERE decision = 'applied' AND at > ?", [since], signal)
    return { count: r?.n ?? 0, oldestAt: r?.oldest ?? since }
  }

  /**
   * One round of the cluster-wide breaker, under its row's lock: records `self`'s counts,
   * sums every supernode's counts newer than `since`, and lets `decide` move the shared
   * state (and record the flip, once, by whichever supernode made it).
   */
  async breakerRound(self: string, mine: { unhealthy: number; population: number }, now: number, since: number, decide: BreakerDecision, signal?: AbortSignal): Promise<BreakerState> {
    return this.sql.transaction(async (tx) => {
      const prev = await tx.get<{ open: number; since: number; calm_since: number }>(
        `SELECT open, since, calm_since FROM health_breaker WHERE id = 1${tx.dialect === 'postgres' ? ' FOR UPDATE' : ''}`)
      await tx.run(`INSERT INTO health_breaker_counts (supernode, unhealthy, population, at) VALUES (?, ?, ?, ?)
        ON CONFLICT (supernode) DO UPDATE SET unhealthy = excluded.unhealthy, population = excluded.population, at = excluded.at`,
      [self, mine.unhealthy, mine.population, now])
      const sum = await tx.get<{ unhealthy: number | null; population: number | null }>(
        'SELECT SUM(unhealthy) AS unhealthy, SUM(population) AS population FROM health_breaker_counts WHERE at >= ?', [since])
      const counts = { unhealthy: sum?.unhealthy ?? 0, population: sum?.population ?? 0 }
      const { state, event } = decide(counts, { open: prev?.open === 1, since: prev?.since ?? 0, calmSince: prev?.calm_since ?? 0 })
      await tx.run('UPDATE health_breaker SET open = ?, since = ?, calm_since = ? WHERE id = 1', [state.open ? 1 : 0, state.since, state.calmSince])
      if (event !== undefined) await this.insert(tx, event)
      return { ...state, ...counts }
    }, signal)
  }

  /** Drops `self`'s breaker counts (a clean shutdown): its hosts no longer count. */
  async leaveBreaker(self: string, signal?: AbortSignal): Promise<void> {
    await this.sql.run('DELETE FROM health_breaker_counts WHERE supernode = ?', [self], signal)
  }

  /** Records the state `self` judged; a healthy host's row goes, unless another supernode judges it since. */
  async saveHost(h: HostStateRow, self: string, signal?: AbortSignal): Promise<void> {
    if (h.step === 'none' && h.level === 'healthy') {
      await this.sql.run('DELETE FROM health_hosts WHERE id = ? AND (supernode IS NULL OR supernode = ?)', [h.id, self], signal)
      return
    }
    await this.sql.run(`INSERT INTO health_hosts (id, level, step, step_at, supernode) VALUES (?, ?, ?, ?, ?)
      ON CONFLICT (id) DO UPDATE SET level = excluded.level, step = excluded.step, step_at = excluded.step_at, supernode = excluded.supernode`,
    [h.id, h.level, h.step, h.stepAt, self], signal)
  }

  async hosts(signal?: AbortSignal): Promise<HostStateRow[]> {
    const rows = await this.sql.all<{ id: string; level: string; step: string; step_at: number; supernode: string | null }>('SELECT * FROM health_hosts', [], signal)
    return rows.map((r) => ({ id: r.id, level: r.level, step: r.step, stepAt: r.step_at, supernode: r.supernode }))
  }

  async prune(before: number, signal?: AbortSignal): Promise<void> {
    await this.sql.run('DELETE FROM health_events WHERE at < ?', [before], signal)
  }

  private async insert(sql: Sql, e: Omit<HealthEvent, 'id'>, signal?: AbortSignal): Promise<HealthEvent> {
    const r = await sql.get<{ id: number }>('INSERT INTO health_events (at, host, rule, action, decision, reason, facts, supernode) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id',
      [e.at, e.host, e.rule, e.action, e.decision, e.reason, e.facts === null ? null : JSON.stringify(e.facts), this.self], signal)
    return { ...e, supernode: this.self, id: r!.id }
  }
}
