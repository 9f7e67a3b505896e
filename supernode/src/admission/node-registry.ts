// The nodes that joined the cluster, in the shared database (table `admission_nodes`): who
// joined with which token, and who was revoked. The running supernode keeps a copy in
// memory for the handshake's check and picks up what other processes on the same database
// wrote (`supernode node revoke`, the other supernodes of the cluster), with `refresh`.

import { NaiadError } from '@naiad/proto'

import type { Sql } from '../database/sql.ts'

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
  private readonly sql: Sql
  /** id → revokedAt (null while admitted). */
  private readonly nodes = new Map<string, number | null>()
  private seen = 0
  private seq = 0
  private refreshing: Promise<string[]> | undefined

  private constructor(sql: Sql) {
    this.sql = sql
  }

  /** The registry with what the database holds now. */
  static async open(sql: Sql, signal?: AbortSignal): Promise<NodeRegistry> {
    const registry = new NodeRegistry(sql)
    await registry.refresh(signal)
    return registry
  }

  /** Joins or joins again (a node whose credential lapsed); a revoked node stays out. */
  async join(id: string, hostname: string, tokenId: string, now = Date.now(), signal?: AbortSignal): Promise<NodeRecord> {
    if (!PEER_ID.test(id)) throw new NaiadError('SN_ERR_BAD_REQUEST', `"${id.slice(0, 80)}" is not a peer ID`)
    const existing = await this.get(id, signal)
    if (existing?.revokedAt != null) throw new NaiadError('SN_ERR_NODE_REVOKED', `node ${id} was revoked at ${new Date(existing.revokedAt).toISOString()}; it cannot join again under this identity`)
    const [changed, params] = this.stamp(now)
    await this.sql.run(`INSERT INTO admission_nodes (id, hostname, token_id, joined_at, last_join_at, revoked_at, changed_at) VALUES (?, ?, ?, ?, ?, NULL, ${changed})
      ON CONFLICT (id) DO UPDATE SET hostname = excluded.hostname, token_id = excluded.token_id, last_join_at = excluded.last_join_at, changed_at = excluded.changed_at`,
    [id, hostname.slice(0, 255), tokenId, now, now, ...params], signal)
    this.nodes.set(id, null)
    return (await this.get(id, signal))!
  }

  /** Joined and not revoked (as of the last refresh). */
  isAdmitted(id: string): boolean {
    return this.nodes.has(id) && this.nodes.get(id) === null
  }

  /** Whether `id` was ever seen here (admitted or revoked). */
  knows(id: string): boolean {
    return this.nodes.has(id)
  }

  isRevoked(id: string): boolean {
    return typeof this.nodes.get(id) === 'number'
  }

  async revoke(id: string, now = Date.now(), signal?: AbortSignal): Promise<NodeRecord> {
    const existing = await this.get(id, signal)
    if (existing === undefined) throw new NaiadError('SN_ERR_NODE_NOT_FOUND', `no node ${id.slice(0, 80)} joined this cluster (see supernode node list)`)
    if (existing.revokedAt !== null) return existing
    const [changed, params] = this.stamp(now)
    await this.sql.run(`UPDATE admission_nodes SET revoked_at = ?, changed_at = ${changed} WHERE id = ?`, [now, ...params, id], signal)
    this.nodes.set(id, now)
    return (await this.get(id, signal))!
  }

  async get(id: string, signal?: AbortSignal): Promise<NodeRecord | undefined> {
    const r = await this.sql.get<Row>('SELECT * FROM admission_nodes WHERE id = ?', [id], signal)
    return r === undefined ? undefined : toRecord(r)
  }

  async list(signal?: AbortSignal): Promise<NodeRecord[]> {
    return (await this.sql.all<Row>('SELECT * FROM admission_nodes ORDER BY joined_at, id', [], signal)).map(toRecord)
  }

  /** Nodes revoked at or after `since`, as of the last refresh (their credentials may not have run out yet). */
  revokedSince(since: number): string[] {
    return [...this.nodes].filter((e): e is [string, number] => e[1] !== null && e[1] >= since).sort((a, b) => a[1] - b[1]).map(([id]) => id)
  }

  /**
   * Reads what changed in the table since the last look (other processes' joins and
   * revocations); returns the newly revoked. Calls while one runs share it.
   */
  refresh(signal?: AbortSignal): Promise<string[]> {
    this.refreshing ??= this.readChanges(signal).finally(() => { this.refreshing = undefined })
    return this.refreshing
  }

  private async readChanges(signal?: AbortSignal): Promise<string[]> {
    const rows = await this.sql.all<Row>('SELECT * FROM admission_nodes WHERE changed_at > ? ORDER BY changed_at', [this.seen], signal)
    const revoked: string[] = []
    for (const r of rows) {
      if (r.revoked_at !== null && this.nodes.get(r.id) === null) revoked.push(r.id)
      this.nodes.set(r.id, r.revoked_at)
      this.seen = Math.max(this.seen, r.changed_at)
    }
    return revoked
  }

  /**
   * A change stamp above every earlier one. PostgreSQL's comes from a sequence, so the
   * stamps of every supernode writing to it are ordered; on SQLite (one machine) the clock
   * in µs, kept rising within the same millisecond.
   */
  private stamp(now: number): [string, number[]] {
    if (this.sql.dialect === 'postgres') return ["nextval('admission_changes')", []]
    this.seq = Math.max(this.seq + 1, now * 1000)
    return ['?', [this.seq]]
  }
}
