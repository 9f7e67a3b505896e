// The latest doctor report of every node: in the supernode's SQLite database when it has
// one (table `doctor_reports`), else in memory.

import type Database from 'better-sqlite3'

export interface StoredReport {
  peerId: string
  hostname: string
  receivedAt: number
  /** The report JSON as the node sent it (validated). */
  report: string
}

interface Row { peer_id: string; hostname: string; received_at: number; report: string }
const fromRow = (r: Row): StoredReport => ({ peerId: r.peer_id, hostname: r.hostname, receivedAt: r.received_at, report: r.report })

export class ReportStore {
  private readonly db: Database.Database | undefined
  private readonly memory = new Map<string, StoredReport>()

  constructor(db: Database.Database | undefined) {
    this.db = db
    db?.exec(`CREATE TABLE IF NOT EXISTS doctor_reports (
      peer_id TEXT PRIMARY KEY, hostname TEXT NOT NULL, received_at INTEGER NOT NULL, report TEXT NOT NULL
    )`)
  }

  put(r: StoredReport): void {
    if (this.db === undefined) {
      this.memory.set(r.peerId, r)
      return
    }
    this.db.prepare('INSERT INTO doctor_reports (peer_id, hostname, received_at, report) VALUES (?, ?, ?, ?) ON CONFLICT(peer_id) DO UPDATE SET hostname = excluded.hostname, received_at = excluded.received_at, report = excluded.report')
      .run(r.peerId, r.hostname, r.receivedAt, r.report)
  }

  get(peerId: string): StoredReport | undefined {
    if (this.db === undefined) return this.memory.get(peerId)
    const r = this.db.prepare<[string], Row>('SELECT * FROM doctor_reports WHERE peer_id = ?').get(peerId)
    return r === undefined ? undefined : fromRow(r)
  }

  all(): StoredReport[] {
    if (this.db === undefined) return [...this.memory.values()].sort((a, b) => a.peerId.localeCompare(b.peerId))
    return this.db.prepare<[], Row>('SELECT * FROM doctor_reports ORDER BY peer_id').all().map(fromRow)
  }
}
