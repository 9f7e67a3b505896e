// The nodes that joined the cluster, in the supernode's database (table
// `admission_nodes`): who joined with which token, and who was revoked. The running
// supernode keeps a copy in memory for the handshake's check and picks up what
// `supernode node revoke` (another process on the same database) wrote, with `refresh`.

import type Database from 'better-sqlite3'
import { NaiadError } from '@naiad/proto'

export interface NodeRecord {
  id: string
  hostname: string
  /** The ID of the join token it last joined with. */
  tokenId: string
  joinedAt: number
  lastJoinAt: number
  revokedAt: number | null
}

interface Row { id: string; hostname: string; token_id: string; joined_at: number; last_join_at: number; revoked_at: number | null; changed_at: number }

/** A libp2p peer ID in its usual base58 text form (Ed25519 keys: 12D3KooW…). */
export const PEER_ID = /^[1-9A-HJ-NP-Za-km-z]{40,64}$/

function toRecord(r: Row): NodeRecord {
  return { id: r.id, hostname: r.hostname, tokenId: r.token_id, joinedAt: r.joined_at, lastJoinAt: r.last_join_at, revokedAt: r.revoked_at }
}

export class NodeRegistry {
  private readonly db: Database.Database
  /** id → revokedAt (null while admitted). */
  private readonly nodes = new Map<string, number | null>()
  private seen = 0
  private seq = 0

  constructor(db: Database.Database) {
    this.db = db
    db.exec(`CREATE TABLE IF NOT EXISTS admission_nodes (
      id TEXT PRIMARY KEY, hostname TEXT NOT NULL, token_id TEXT NOT NULL, joined_at INTEGER NOT NULL,
      last_join_at INTEGER NOT NULL, revoked_at INTEGER, changed_at INTEGER NOT NULL)`)
    this.refresh()
  }

  /** Joins or joins again (a node whose credential lapsed); a revoked node stays out. */
  join(id: string, hostname: string, tokenId: string, now = Date.now()): NodeRecord {
    if (!PEER_ID.test(id)) throw new NaiadError('SN_ERR_BAD_REQUEST', `"${id.slice(0, 80)}" is not a peer ID`)
    const existing = this.get(id)
    if (existing?.revokedAt != null) throw new NaiadError('SN_ERR_NODE_REVOKED', `node ${id} was revoked at ${new Date(existing.revokedAt).toISOString()}; it cannot join again under this identity`)
    this.db.prepare(`INSERT INTO admission_nodes VALUES (@id, @hostname, @tokenId, @now, @now, NULL, @changed)
      ON CONFLICT(id) DO UPDATE SET hostname = @hostname, token_id = @tokenId, last_join_at = @now, changed_at = @changed`)
      .run({ id, hostname: hostname.slice(0, 255), tokenId, now, changed: this.stamp(now) })
    this.nodes.set(id, null)
    return this.get(id)!
  }

  /** Joined and not revoked. */
  isAdmitted(id: string): boolean {
    return this.nodes.has(id) && this.nodes.get(id) === null
  }

  isRevoked(id: string): boolean {
    return typeof this.nodes.get(id) === 'number'
  }

  revoke(id: string, now = Date.now()): NodeRecord {
    const existing = this.get(id)
    if (existing === undefined) throw new NaiadError('SN_ERR_NODE_NOT_FOUND', `no node ${id.slice(0, 80)} joined this cluster (see supernode node list)`)
    if (existing.revokedAt !== null) return existing
    this.db.prepare('UPDATE admission_nodes SET revoked_at = ?, changed_at = ? WHERE id = ?').run(now, this.stamp(now), id)
    this.nodes.set(id, now)
    return this.get(id)!
  }

  get(id: string): NodeRecord | undefined {
    const r = this.db.prepare<[string], Row>('SELECT * FROM admission_nodes WHERE id = ?').get(id)
    return r === undefined ? undefined : toRecord(r)
  }

  list(): NodeRecord[] {
    return this.db.prepare<[], Row>('SELECT * FROM admission_nodes ORDER BY joined_at, id').all().map(toRecord)
  }

  /** Nodes revoked at or after `since` (their credentials may not have run out yet). */
  revokedSince(since: number): string[] {
    return this.db.prepare<[number], { id: string }>('SELECT id FROM admission_nodes WHERE revoked_at >= ? ORDER BY revoked_at').all(since).map((r) => r.id)
  }

  /** Reads what changed in the table since the last look (another process's joins and revocations); returns the newly revoked. */
  refresh(): string[] {
    const rows = this.db.prepare<[number], Row>('SELECT * FROM admission_nodes WHERE changed_at > ? ORDER BY changed_at').all(this.seen)
    const revoked: string[] = []
    for (const r of rows) {
      if (r.revoked_at !== null && this.nodes.get(r.id) === null) revoked.push(r.id)
      this.nodes.set(r.id, r.revoked_at)
      this.seen = Math.max(this.seen, r.changed_at)
    }
    return revoked
  }

  /** A change stamp above every earlier one, even within the same millisecond. */
  private stamp(now: number): number {
    this.seq = Math.max(this.seq + 1, now * 1000)
    return this.seq
  }
}
