// The latest doctor report of every node, in the shared database (table `doctor_reports`).

import type { Sql } from '../../database/sql.ts'

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
  private readonly sql: Sql

  constructor(sql: Sql) {
    this.sql = sql
  }

  async put(r: StoredReport, signal?: AbortSignal): Promise<void> {
    await this.sql.run(`INSERT INTO doctor_reports (peer_id, hostname, received_at, report) VALUES (?, ?, ?, ?)
      ON CONFLICT (peer_id) DO UPDATE SET hostname = excluded.hostname, received_at = excluded.received_at, report = excluded.report`,
    [r.peerId, r.hostname, r.receivedAt, r.report], signal)
  }

  async get(peerId: string, signal?: AbortSignal): Promise<StoredReport | undefined> {
    const r = await this.sql.get<Row>('SELECT * FROM doctor_reports WHERE peer_id = ?', [peerId], signal)
    return r === undefined ? undefined : fromRow(r)
  }

  async all(signal?: AbortSignal): Promise<StoredReport[]> {
    return (await this.sql.all<Row>('SELECT * FROM doctor_reports ORDER BY peer_id', [], signal)).map(fromRow)
  }
}
