// Which supernodes are alive. Several supernodes of one cluster find each other through the
// shared database: each writes a heartbeat, and each task belongs to one of the live ones
// (rendezvous hashing of the task ID, see ownership). The database's own clock stamps the
// heartbeats, so the supernodes' clocks need not agree.
//
// Implementations: `MemoryMembership` (one supernode, and in-process tests) here; the
// SQLite and PostgreSQL stores each provide their own. All run the shared suite in
// supernode/test/membership-suite.ts.

export interface SupernodeMember {
  /** The supernode's fabric peer ID. */
  readonly id: string
  /** Its HTTP URL, as daemons and the other supernodes reach it (e.g. http://10.0.0.1:8002). */
  readonly apiUrl: string
  /** Its fabric multiaddrs, each ending in /p2p/<id>. */
  readonly multiaddrs: readonly string[]
  /** When its last heartbeat landed, in ms since the epoch by the store's clock. */
  readonly seenAt: number
}

export interface MembershipStore {
  /** Records that `self` is alive now: inserts it, or refreshes its addresses and seenAt. */
  heartbeat(self: Omit<SupernodeMember, 'seenAt'>, signal?: AbortSignal): Promise<void>
  /** The members whose last heartbeat is at most `ttlMs` old by the store's clock, ordered by id. */
  live(ttlMs: number, signal?: AbortSignal): Promise<SupernodeMember[]>
  /** Removes `id` (a clean shutdown), so its tasks move to the next owner at once. */
  leave(id: string, signal?: AbortSignal): Promise<void>
}

/** One process's membership: what a single supernode uses, and what in-process tests share. */
export class MemoryMembership implements MembershipStore {
  private readonly members = new Map<string, SupernodeMember>()
  private readonly now: () => number

  constructor(now: () => number = Date.now) {
    this.now = now
  }

  async heartbeat(self: Omit<SupernodeMember, 'seenAt'>): Promise<void> {
    this.members.set(self.id, { id: self.id, apiUrl: self.apiUrl, multiaddrs: [...self.multiaddrs], seenAt: this.now() })
  }

  async live(ttlMs: number): Promise<SupernodeMember[]> {
    const since = this.now() - ttlMs
    return [...this.members.values()].filter((m) => m.seenAt >= since).sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
  }

  async leave(id: string): Promise<void> {
    this.members.delete(id)
  }
}
