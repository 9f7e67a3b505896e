// Cluster state in SQLite: tasks, their piece digests, hosts and per-task peers survive a
// restart. Changes are collected in memory and written in one transaction every
// `flushMs`, so a burst of piece reports costs one fsync, not thousands. The flush runs on
// the scheduler's event loop, so one turn writes at most FLUSH_ROWS rows (at 10,000 peers
// the marked rows of 200 ms took 15 ms and more, every call queued behind them); the rest
// waits for the next turn (a row marked again meanwhile is written once, as it is then),
// and close() writes everything. A host whose piece counters alone changed (every
// report naming it as a parent) gets an UPDATE of those columns, not its encoded info. A task's request
// headers (which carry registry credentials) are kept in memory only: the database, mode
// 0600, never holds them.

import { chmodSync, closeSync, mkdirSync, openSync } from 'node:fs'
import { join } from 'node:path'

import Database from 'better-sqlite3'
import { Bitmap, Host } from '@naiad/proto'

import type { HostChange, HostState, PeerState, SchedulerPersistence, Scheduler, TaskState } from '../scheduler/scheduler.ts'

/**
 * Rows one flush turn writes at most: about 1 ms of the loop (6 us a row, the transaction
 * included). A loop near saturation takes a stall many times its length to drain the calls
 * that queued behind it, so several short turns are better than one long one. Marked rows are
 * one per task, peer or host, so what waits is bounded by the state's size, not the rate.
 */
export const FLUSH_ROWS = 160
/** A backlog's next turn comes after this share of flushMs: 160 rows every 50 ms, 3,200 rows a second at most. */
const BACKLOG_DELAY = 0.25
/** After a failed flush the next turn waits this many flushMs (a full disk stays full for a while). */
const FAILED_FLUSH_PAUSE = 25

interface TaskRow {
  id: string; url: string; headers: string; digest: string; range: string; filter: string; state: string
  content_length: number; piece_size: number; piece_count: number; sha256: Buffer | null
  error_code: string | null; error_message: string | null; back_source_peer: string; created_at: number; updated_at: number
}

interface Statements {
  upsertTask: Database.Statement
  insertPiece: Database.Statement
  upsertPeer: Database.Statement
  deletePeer: Database.Statement
  upsertHost: Database.Statement
  updateCounters: Database.Statement
}

export class StateStore implements SchedulerPersistence {
  private readonly db: Database.Database
  private readonly dirtyTasks = new Map<string, TaskState>()
  private readonly dirtyPieces = new Map<string, { task: TaskState; nums: Set<number> }>()
  /**
   * Task → host → its peer, or undefined when the peer is to be deleted. Nested so that a
   * report marking a peer already marked allocates nothing (a "task/host" key and an entry
   * object for each of 20,000 reports a second were garbage the loop then collected).
   */
  private readonly dirtyPeers = new Map<string, Map<string, PeerState | undefined>>()
  private readonly dirtyHosts = new Map<string, HostState>()
  /** Hosts whose counters alone changed; a host also in dirtyHosts is written there in full. */
  private readonly dirtyCounters = new Map<string, HostState>()
  private timer: NodeJS.Timeout | undefined
  private readonly flushMs: number
  private readonly rowsPerFlush: number
  private statements: Statements | undefined
  /** Flush turns so far: which kind of row a turn writes first. */
  private turn = 0
  /**
   * Told when a timed flush fails (a full disk, a lock held past busy_timeout). The rows stay
   * marked, so the next turn, after a pause, writes them again; the scheduler keeps running on
   * its memory meanwhile. Without it the error escaped a timer and ended the process.
   */
  onFlushError: (err: unknown) => void = () => {}

  constructor(dir: string, flushMs = 200, rowsPerFlush = FLUSH_ROWS) {
    mkdirSync(dir, { recursive: true, mode: 0o700 })
    this.flushMs = flushMs
    this.rowsPerFlush = rowsPerFlush
    const file = join(dir, 'supernode.db')
    // Made 0600 before SQLite opens it: its -wal and -shm files take the database's mode.
    closeSync(openSync(file, 'a', 0o600))
    chmodSync(file, 0o600)
    this.db = new Database(file)
    this.db.pragma('busy_timeout = 5000')
    this.db.pragma('journal_mode = WAL')
    this.db.pragma('synchronous = NORMAL')
    this.db.exec(`
      CREATE TABLE IF NOT EXISTS tasks (
        id TEXT PRIMARY KEY, url TEXT NOT NULL, headers TEXT NOT NULL, digest TEXT NOT NULL, range TEXT NOT NULL,
        filter TEXT NOT NULL, state TEXT NOT NULL, content_length INTEGER NOT NULL, piece_size INTEGER NOT NULL,
        piece_count INTEGER NOT NULL, sha256 BLOB, error_code TEXT, error_message TEXT, back_source_peer TEXT NOT NULL,
        created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);
      CREATE TABLE IF NOT EXISTS task_pieces (
        task_id TEXT NOT NULL, num INTEGER NOT NULL, length INTEGER NOT NULL, sha256 BLOB NOT NULL,
        PRIMARY KEY (task_id, num)) WITHOUT ROWID;
      CREATE TABLE IF NOT EXISTS hosts (
        id TEXT PRIMARY KEY, info BLOB NOT NULL, last_seen INTEGER NOT NULL, bandwidth REAL NOT NULL,
        good_pieces INTEGER NOT NULL, bad_pieces INTEGER NOT NULL, failed_pieces INTEGER NOT NULL, gone INTEGER NOT NULL);
      CREATE TABLE IF NOT EXISTS peers (
        task_id TEXT NOT NULL, host_id TEXT NOT NULL, state TEXT NOT NULL, bitmap BLOB NOT NULL, blocked TEXT NOT NULL,
        updated_at INTEGER NOT NULL, PRIMARY KEY (task_id, host_id)) WITHOUT ROWID;
    `)
    // Databases written before headers stayed in memory may still hold some: wipe them.
    this.db.prepare("UPDATE tasks SET headers = '[]' WHERE headers != '[]'").run()
  }

  /** The database, for plugins that keep their own tables (each under its own name prefix). */
  get database(): Database.Database {
    return this.db
  }

  /** Loads everything into a fresh scheduler. Downloads in flight at shutdown start over. */
  load(scheduler: Scheduler): void {
    for (const r of this.db.prepare<[], { id: string; info: Buffer; last_seen: number; bandwidth: number; good_pieces: number; bad_pieces: number; failed_pieces: number; gone: number }>('SELECT * FROM hosts').all()) {
      scheduler.hosts.set(r.id, {
        info: Host.decode(r.info), lastSeen: r.last_seen, bandwidth: r.bandwidth, goodPieces: r.good_pieces,
        badPieces: r.bad_pieces, failedPieces: r.failed_pieces, consecutiveFailures: 0, gone: r.gone === 1
      })
    }
    const pieces = this.db.prepare<[string], { num: number; length: number; sha256: Buffer }>('SELECT num, length, sha256 FROM task_pieces WHERE task_id = ?')
    const peers = this.db.prepare<[string], { host_id: string; state: string; bitmap: Buffer; blocked: string; updated_at: number }>('SELECT * FROM peers WHERE task_id = ?')
    for (const r of this.db.prepare<[], TaskRow>('SELECT * FROM tasks').all()) {
      const task: TaskState = {
        id: r.id, url: r.url, headers: [], digest: r.digest, range: r.range,
        filter: JSON.parse(r.filter) as string[], state: r.state as TaskState['state'], contentLength: r.content_length,
        pieceSize: r.piece_size, pieceCount: r.piece_count, pieces: new Map(), sha256: r.sha256 ?? new Uint8Array(0),
        error: r.error_code === null ? undefined : { code: r.error_code, message: r.error_message ?? '' },
        backSourcePeer: r.back_source_peer, peers: new Map(), createdAt: r.created_at, updatedAt: r.updated_at
      }
      for (const p of pieces.all(r.id)) task.pieces.set(p.num, { length: p.length, sha256: p.sha256 })
      for (const p of peers.all(r.id)) {
        task.peers.set(p.host_id, {
          hostId: p.host_id,
          state: p.state === 'running' ? 'failed' : p.state as PeerState['state'],
          bitmap: Bitmap.from(p.bitmap), parents: new Map(), blocked: new Set(JSON.parse(p.blocked) as string[]), updatedAt: p.updated_at
        })
      }
      if (task.state === 'running' || task.state === 'pending') {
        // Nobody is fetching it any more; the next registration starts the seed again.
        task.state = 'pending'
        task.backSourcePeer = ''
      }
      scheduler.adoptTask(task)
    }
  }

  private schedule(delayMs = this.flushMs): void {
    if (this.timer !== undefined) return
    this.timer = setTimeout(() => {
      this.timer = undefined
      try {
        this.flush()
      } catch (err) {
        this.onFlushError(err)
        this.schedule(this.flushMs * FAILED_FLUSH_PAUSE)
      }
    }, delayMs)
    this.timer.unref()
  }

  markTask(task: TaskState): void { this.dirtyTasks.set(task.id, task); this.schedule() }
  markHost(host: HostState, change: HostChange = 'all'): void {
    const id = host.info.id
    if (change === 'all') {
      this.dirtyHosts.set(id, host)
      this.dirtyCounters.delete(id)
    } else if (!this.dirtyHosts.has(id)) {
      this.dirtyCounters.set(id, host)
    }
    this.schedule()
  }
  markPeer(taskId: string, peer: PeerState): void { this.peersOf(taskId).set(peer.hostId, peer); this.schedule() }
  deletePeer(taskId: string, hostId: string): void { this.peersOf(taskId).set(hostId, undefined); this.schedule() }

  private peersOf(taskId: string): Map<string, PeerState | undefined> {
    let peers = this.dirtyPeers.get(taskId)
    if (peers === undefined) {
      peers = new Map()
      this.dirtyPeers.set(taskId, peers)
    }
    return peers
  }
  markPieces(task: TaskState, nums: number[]): void {
    if (nums.length === 0) return
    let e = this.dirtyPieces.get(task.id)
    if (e === undefined) { e = { task, nums: new Set() }; this.dirtyPieces.set(task.id, e) }
    for (const n of nums) e.nums.add(n)
    this.schedule()
  }

  /** Rows marked and not yet written. */
  get pending(): number {
    let n = this.dirtyTasks.size + this.dirtyHosts.size + this.dirtyCounters.size
    for (const e of this.dirtyPieces.values()) n += e.nums.size
    for (const peers of this.dirtyPeers.values()) n += peers.size
    return n
  }

  /** Prepared once: preparing five statements on every flush was a parse each on the loop. */
  private prepared(): Statements {
    this.statements ??= {
      upsertTask: this.db.prepare(`INSERT OR REPLACE INTO tasks VALUES (@id, @url, @headers, @digest, @range, @filter, @state,
        @content_length, @piece_size, @piece_count, @sha256, @error_code, @error_message, @back_source_peer, @created_at, @updated_at)`),
      insertPiece: this.db.prepare('INSERT OR REPLACE INTO task_pieces VALUES (?, ?, ?, ?)'),
      upsertPeer: this.db.prepare('INSERT OR REPLACE INTO peers VALUES (?, ?, ?, ?, ?, ?)'),
      deletePeer: this.db.prepare('DELETE FROM peers WHERE task_id = ? AND host_id = ?'),
      upsertHost: this.db.prepare('INSERT OR REPLACE INTO hosts VALUES (?, ?, ?, ?, ?, ?, ?, ?)'),
      updateCounters: this.db.prepare('UPDATE hosts SET last_seen = ?, bandwidth = ?, good_pieces = ?, bad_pieces = ?, failed_pieces = ? WHERE id = ?')
    }
    return this.statements
  }

  /**
   * Writes what is marked, at most rowsPerFlush rows (`all` writes everything), oldest marks
   * of each kind first; what is left is written on the next turn. Each turn starts at the
   * next kind: with a fixed order, peers re-marked by every report filled every turn and the
   * hosts' counters after them were never written. No kind needs another written first: an
   * orphan piece or peer row waits for its task row, and a host's counters are marked only
   * while its row is not waiting to be written in full.
   */
  flush(all = false): void {
    if (this.pending === 0) return
    const st = this.prepared()
    let budget = all ? Infinity : this.rowsPerFlush
    // What was written leaves the marks only once the transaction commits: a failed one
    // leaves every mark for the next turn.
    const tasks: string[] = []
    const pieces: Array<[string, number]> = []
    const peers: Array<[string, string]> = []
    const hosts: string[] = []
    const counters: string[] = []
    // Each writes rows of one kind while the budget lasts; false once it is spent.
    const kinds: Array<() => boolean> = [
      () => {
        for (const [id, t] of this.dirtyTasks) {
          if (budget-- <= 0) return false
          st.upsertTask.run({
            id: t.id, url: t.url, headers: '[]', digest: t.digest, range: t.range, filter: JSON.stringify(t.filter),
            state: t.state, content_length: t.contentLength, piece_size: t.pieceSize, piece_count: t.pieceCount,
            sha256: t.sha256.length === 0 ? null : Buffer.from(t.sha256), error_code: t.error?.code ?? null,
            error_message: t.error?.message ?? null, back_source_peer: t.backSourcePeer, created_at: t.createdAt, updated_at: t.updatedAt
          })
          tasks.push(id)
        }
        return true
      },
      () => {
        for (const [id, e] of this.dirtyPieces) {
          for (const n of e.nums) {
            if (budget-- <= 0) return false
            const p = e.task.pieces.get(n)
            if (p !== undefined) st.insertPiece.run(e.task.id, n, p.length, Buffer.from(p.sha256))
            pieces.push([id, n])
          }
        }
        return true
      },
      () => {
        for (const [taskId, marked] of this.dirtyPeers) {
          for (const [hostId, peer] of marked) {
            if (budget-- <= 0) return false
            if (peer === undefined) st.deletePeer.run(taskId, hostId)
            else st.upsertPeer.run(taskId, hostId, peer.state, Buffer.from(peer.bitmap.toBytes()), JSON.stringify([...peer.blocked]), peer.updatedAt)
            peers.push([taskId, hostId])
          }
        }
        return true
      },
      () => {
        for (const [id, h] of this.dirtyHosts) {
          if (budget-- <= 0) return false
          st.upsertHost.run(h.info.id, Buffer.from(Host.encode(h.info)), h.lastSeen, h.bandwidth, h.goodPieces, h.badPieces, h.failedPieces, h.gone ? 1 : 0)
          hosts.push(id)
        }
        return true
      },
      () => {
        for (const [id, h] of this.dirtyCounters) {
          if (budget-- <= 0) return false
          st.updateCounters.run(h.lastSeen, h.bandwidth, h.goodPieces, h.badPieces, h.failedPieces, id)
          counters.push(id)
        }
        return true
      }
    ]
    const first = this.turn++ % kinds.length
    this.db.transaction(() => {
      for (let k = 0; k < kinds.length; k++) if (!kinds[(first + k) % kinds.length]()) return
    })()
    for (const id of tasks) this.dirtyTasks.delete(id)
    for (const [id, n] of pieces) {
      const e = this.dirtyPieces.get(id)
      if (e === undefined) continue
      e.nums.delete(n)
      if (e.nums.size === 0) this.dirtyPieces.delete(id)
    }
    for (const [taskId, hostId] of peers) {
      const marked = this.dirtyPeers.get(taskId)
      if (marked === undefined) continue
      marked.delete(hostId)
      if (marked.size === 0) this.dirtyPeers.delete(taskId)
    }
    for (const id of hosts) this.dirtyHosts.delete(id)
    for (const id of counters) this.dirtyCounters.delete(id)
    if (this.pending > 0) this.schedule(this.flushMs * BACKLOG_DELAY)
  }

  close(): void {
    if (this.timer !== undefined) clearTimeout(this.timer)
    this.timer = undefined
    this.flush(true)
    this.db.close()
  }
}
