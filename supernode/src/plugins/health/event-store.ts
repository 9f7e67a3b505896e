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

export class HealthEventStore {
  private readonly stmt

  constructor(db: Database.Database) {
    db.exec(`
      CREATE TABLE IF NOT EXISTS health_events (
        id INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL, host TEXT NOT NULL, rule TEXT NOT NULL,
        action TEXT NOT NULL, decision TEXT NOT NULL, reason TEXT NOT NULL, facts TEXT);
      CREATE INDEX IF NOT EXISTS health_events_host ON health_events (host, id);
    `)
    this.stmt = {
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

  prune(before: number): void {
    this.stmt.prune.run(before)
  }
}
