// Membership in the shared database (table `supernodes`, see database/migrations.ts). On
// PostgreSQL the database's clock stamps every heartbeat and judges liveness, so the
// supernodes' clocks need not agree; on SQLite (one machine, one supernode or a test) the
// process clock does.

import type { Sql } from '../database/sql.ts'
import type { MembershipStore, SupernodeMember } from './membership.ts'

interface Row { id: string; api_url: string; multiaddrs: string; seen_at: number }

/** Milliseconds since the epoch by the database's clock. */
const PG_NOW_MS = '(EXTRACT(EPOCH FROM now()) * 1000)::BIGINT'

export class SqlMembership implements MembershipStore {
  private readonly sql: Sql
  private readonly now: () => number

  /** `now` is SQLite's clock only; PostgreSQL uses its own. */
  constructor(sql: Sql, now: () => number = Date.now) {
    this.sql = sql
    this.now = now
  }

  async heartbeat(self: Omit<SupernodeMember, 'seenAt'>, signal?: AbortSignal): Promise<void> {
    const [stamp, params] = this.sql.dialect === 'postgres' ? [PG_NOW_MS, []] : ['?', [this.now()]]
    await this.sql.run(`INSERT INTO supernodes (id, api_url, multiaddrs, seen_at) VALUES (?, ?, ?, ${stamp})
      ON CONFLICT (id) DO UPDATE SET api_url = excluded.api_url, multiaddrs = excluded.multiaddrs, seen_at = excluded.seen_at`,
    [self.id, self.apiUrl, JSON.stringify(self.multiaddrs), ...params], signal)
  }

  async live(ttlMs: number, signal?: AbortSignal): Promise<SupernodeMember[]> {
    const rows = this.sql.dialect === 'postgres'
      ? await this.sql.all<Row>(`SELECT * FROM supernodes WHERE seen_at >= ${PG_NOW_MS} - ? ORDER BY id`, [ttlMs], signal)
      : await this.sql.all<Row>('SELECT * FROM supernodes WHERE seen_at >= ? ORDER BY id', [this.now() - ttlMs], signal)
    // ORDER BY id sorts by the database's collation; the contract is code-point order, as everywhere else.
    return rows
      .map((r) => ({ id: r.id, apiUrl: r.api_url, multiaddrs: JSON.parse(r.multiaddrs) as string[], seenAt: r.seen_at }))
      .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
  }

  async leave(id: string, signal?: AbortSignal): Promise<void> {
    await this.sql.run('DELETE FROM supernodes WHERE id = ?', [id], signal)
  }
}
