// Every health decision as a row in the supernode's SQLite database: remedies applied and
// suppressed (with why), recoveries, heal results, the breaker opening and closing.

import type Database from 'better-sqlite3'

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
}

/** A host's remedy state, kept across supernode restarts so an isolated host stays isolated. */
export interface HostStateRow {
  id: string
  level: string
  step: string
  stepAt: number
}

export class HealthEventStore {
  private readonly stmt

  constructor(db: Database.Database) {
    db.exec(`
      CREATE TABLE IF NOT EXISTS health_events (
        id INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL, host TEXT NOT NULL, rule TEXT NOT NULL,
        action TEXT NOT NULL, decision TEXT NOT NULL, reason TEXT NOT NULL, facts TEXT);
      CREATE INDEX IF NOT EXISTS health_events_host ON health_events (host, id);
      CREATE TABLE IF NOT EXISTS health_hosts (
        id TEXT PRIMARY KEY, level TEXT NOT NULL, step TEXT NOT NULL, step_at INTEGER NOT NULL);
    `)
    this.stmt = {
      appliedSince: db.prepare<[number], { at: number }>("SELECT at FROM health_events WHERE decision = 'applied' AND at >= ? ORDER BY at"),
      saveHost: db.prepare('INSERT OR REPLACE INTO health_hosts (id, level, step, step_at) VALUES (?, ?, ?, ?)'),
      deleteHost: db.prepare('DELETE FROM health_hosts WHERE id = ?'),
      hosts: db.prepare<[], { id: string; level: string; step: string; step_at: number }>('SELECT * FROM health_hosts'),
      insert: db.prepare('INSERT INTO health_events (at, host, rule, action, decision, reason, facts) VALUES (?, ?, ?, ?, ?, ?, ?)'),
      recent: db.prepare<[number, number], Row>('SELECT * FROM health_events WHERE id > ? ORDER BY id DESC LIMIT ?'),
      recentForHost: db.prepare<[string, number, number], Row>('SELECT * FROM health_events WHERE host = ? AND id > ? ORDER BY id DESC LIMIT ?'),
      prune: db.prepare('DELETE FROM health_events WHERE at < ?')
    }
  }

  add(e: Omit<HealthEvent, 'id'>): HealthEvent {
    const info = this.stmt.insert.run(e.at, e.host, e.rule, e.action, e.decision, e.reason, e.facts === null ? null : JSON.stringify(e.facts))
    return { ...e, id: Number(info.lastInsertRowid) }
  }

  /** The newest `limit` events after `afterId`, oldest first. */
  list(options: { host?: string; afterId?: number; limit?: number } = {}): HealthEvent[] {
    const limit = Math.max(1, Math.min(options.limit ?? 500, 5000))
    const after = options.afterId ?? 0
    const rows = options.host === undefined ? this.stmt.recent.all(after, limit) : this.stmt.recentForHost.all(options.host, after, limit)
    return rows.reverse().map((r) => ({ ...r, facts: r.facts === null ? null : JSON.parse(r.facts) as Record<string, unknown> }))
  }

  /** When the remedies still inside the budget window were taken: the budget survives a restart. */
  appliedSince(since: number): number[] {
    return this.stmt.appliedSince.all(since).map((r) => r.at)
  }

  saveHost(h: HostStateRow): void {
    if (h.step === 'none' && h.level === 'healthy') this.stmt.deleteHost.run(h.id)
    else this.stmt.saveHost.run(h.id, h.level, h.step, h.stepAt)
  }

  hosts(): HostStateRow[] {
    return this.stmt.hosts.all().map((r) => ({ id: r.id, level: r.level, step: r.step, stepAt: r.step_at }))
  }

  prune(before: number): void {
    this.stmt.prune.run(before)
  }
}
