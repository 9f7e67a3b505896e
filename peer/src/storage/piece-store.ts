// The piece store: task data on disk (one sparse file per task, pieces at their offsets)
// with an SQLite index of verified pieces. A piece is in the index only after its bytes
// were verified and written, so whatever the index lists may be served.
//
// A complete task's file is never written again, and dfget may hard-link it as its output
// on this host: the output and the cache then share one inode. So the store records the
// file's identity (fileIdentity: device, inode, size, mtime) when the task completes, checks
// it after every read of a complete task and before a download reuses it (checkFile), and
// drops a task whose file changed — someone wrote into a linked output — instead of serving
// its bytes; the next download fetches it again into a new file. Deleting a task only
// unlinks the store's own name: a linked output keeps its bytes.

import { chmodSync, closeSync, fstatSync, mkdirSync, openSync, statSync } from 'node:fs'
import { mkdir, open, rm, type FileHandle } from 'node:fs/promises'
import { join } from 'node:path'
import { channel } from 'node:diagnostics_channel'

import Database from 'better-sqlite3'
import { Bitmap, EVENTS, fileIdentity, NaiadError, type FileStatus } from '@naiad/proto'

export interface StoredTask {
  id: string
  url: string
  contentLength: number // -1 while unknown
  pieceSize: number
  pieceCount: number // -1 while unknown
  sha256: Buffer | null // set once complete and verified
  complete: boolean
  bytes: number
  lastAccess: number
}

export interface StoredPiece {
  num: number
  offset: number
  length: number
  sha256: Buffer
}

/** Room in the quota held for bytes about to be written; see PieceStore.reserve. */
export interface Reservation {
  readonly bytes: number
  /** Gives the room back (a no-op once commitPiece consumed it, or after a first call). */
  release(): void
}

/** The interface download and upload code depends on; tests may wrap it. */
export interface PieceStore {
  ensureTask(id: string, url: string, pieceSize: number): StoredTask
  getTask(id: string): StoredTask | undefined
  setTaskLength(id: string, contentLength: number, pieceCount: number): void
  hasPiece(id: string, num: number): boolean
  getPiece(id: string, num: number): StoredPiece | undefined
  bitmap(id: string): Bitmap
  /** Reserves, writes and commits a whole piece held in memory. */
  writePiece(id: string, piece: StoredPiece, data: Uint8Array): Promise<void>
  /**
   * Holds `bytes` of the quota for a piece about to be written, evicting least recently
   * used tasks nobody uses. When tasks in use hold the room, waits up to `waitMs` for it to
   * free up, then fails with DFD_ERR_CACHE_FULL.
   */
  reserve(id: string, bytes: number, options?: { waitMs?: number; signal?: AbortSignal }): Promise<Reservation>
  /**
   * Writes bytes (one buffer, or several in order: one positional writev) at `offset` of a
   * task's data file. They are not served until commitPiece lists their piece.
   */
  writeAt(id: string, offset: number, data: Uint8Array | readonly Uint8Array[]): Promise<void>
  /** Lists a piece whose bytes were written and verified; consumes its reservation. */
  commitPiece(id: string, piece: StoredPiece, reservation: Reservation): void
  /** The task's data file, for same-host exports (a complete task's file is never written again). */
  dataPath(id: string): string
  /** The identity recorded for a complete task's data file (fileIdentity), if any. */
  fileIdentity(id: string): string | undefined
  /** Whether the task is complete, from memory (getTask reads the database). */
  isComplete(id: string): boolean
  /**
   * Whether a complete task's data file is still the one it completed with; a changed one
   * (written through a hard-linked output) drops the task and answers false. True for a
   * task that is not complete.
   */
  checkFile(id: string): Promise<boolean>
  /** checkFile's test alone, synchronous and without dropping anything: true when a complete task's file changed. */
  fileChanged(id: string): boolean
  readPiece(id: string, num: number): Promise<{ piece: StoredPiece; data: Buffer } | undefined>
  /** Reads [start, end) of a task's content; the caller must hold a pin. */
  read(id: string, start: number, length: number): Promise<Buffer>
  /** Reads `buf.length` bytes of a task's content from `start` into `buf`; the caller must hold a pin. */
  readInto(id: string, start: number, buf: Buffer): Promise<void>
  complete(id: string, sha256: Buffer): void
  /** Keeps a task from eviction until the returned function is called. */
  pin(id: string): () => void
  deleteTask(id: string): Promise<void>
  usage(): number
  /** The quota: bytes the store may hold. */
  capacity(): number
  listTasks(): StoredTask[]
  close(): Promise<void>
}

export interface DiskPieceStoreOptions {
  dir: string
  /** Bytes the store may hold; least recently used unpinned tasks go first when full. */
  quota: number
  /** Called after a task was evicted to make room (the scheduler must stop naming this node as its parent). */
  onEvicted?: (taskId: string) => void
  /** Written bytes of a task after which its file is written back to disk (see writeBehind); default 32 MiB, 0: never. */
  writeBehindBytes?: number
}

interface TaskRow {
  id: string
  url: string
  content_length: number
  piece_size: number
  piece_count: number
  sha256: Buffer | null
  complete: number
  bytes: number
  last_access: number
  file_id: string | null
}

const evicted = channel(EVENTS.cacheEvicted)
/** A task's last-access time is written at most this often (see pin). */
const TOUCH_EVERY_MS = 1000
/** How long an unpinned task's file stays open for the next pin. */
const FILE_LINGER_MS = 1000
/**
 * Written bytes of one task after which the store starts writing its file back to disk (see
 * writeBehind): small enough that an fsync at the end has little left, large enough that a
 * flush is one system call per tens of pieces.
 */
const WRITE_BEHIND_BYTES = 32 * 1024 * 1024

function rowToTask(r: TaskRow): StoredTask {
  return {
    id: r.id,
    url: r.url,
    contentLength: r.content_length,
    pieceSize: r.piece_size,
    pieceCount: r.piece_count,
    sha256: r.sha256,
    complete: r.complete === 1,
    bytes: r.bytes,
    lastAccess: r.last_access
  }
}

export class DiskPieceStore implements PieceStore {
  private readonly db: Database.Database
  private readonly dir: string
  private readonly quota: number
  private readonly onEvicted: ((taskId: string) => void) | undefined
  private readonly pins = new Map<string, number>()
  /** When pin last wrote each task's last-access time. */
  private readonly touchedAt = new Map<string, number>()
  private readonly files = new Map<string, Promise<FileHandle>>()
  /** Per task file: bytes written since its last write-behind flush began, and whether one runs. */
  private readonly unflushed = new Map<string, { bytes: number; flushing: boolean }>()
  private readonly writeBehindBytes: number
  /** Write-behind flushes started (for tests and benchmarks). */
  writeBehinds = 0
  private readonly bitmaps = new Map<string, Bitmap>()
  /** Complete tasks and their files' identities (null: completed before identities were recorded). */
  private readonly completed = new Map<string, string | null>()
  private used: number
  /** Bytes of writes in flight: counted against the quota before they land. */
  private reserved = 0
  /** Reservations waiting for room, woken whenever room may have freed up. */
  private readonly roomWaiters = new Set<() => void>()
  private readonly stmt

  constructor(options: DiskPieceStoreOptions) {
    this.dir = options.dir
    this.quota = options.quota
    this.writeBehindBytes = options.writeBehindBytes ?? WRITE_BEHIND_BYTES
    this.onEvicted = options.onEvicted
    // The cache holds private blobs: its directories are the owner's alone, its files 0600.
    mkdirSync(join(this.dir, 'data'), { recursive: true, mode: 0o700 })
    const dbPath = join(this.dir, 'index.db')
    closeSync(openSync(dbPath, 'a', 0o600))
    chmodSync(dbPath, 0o600)
    this.db = new Database(dbPath)
    this.db.pragma('journal_mode = WAL')
    this.db.pragma('synchronous = NORMAL')
    this.db.exec(`
      CREATE TABLE IF NOT EXISTS tasks (
        id TEXT PRIMARY KEY, url TEXT NOT NULL, content_length INTEGER NOT NULL, piece_size INTEGER NOT NULL,
        piece_count INTEGER NOT NULL, sha256 BLOB, complete INTEGER NOT NULL DEFAULT 0,
        bytes INTEGER NOT NULL DEFAULT 0, last_access INTEGER NOT NULL);
      CREATE TABLE IF NOT EXISTS pieces (
        task_id TEXT NOT NULL, num INTEGER NOT NULL, offset INTEGER NOT NULL, length INTEGER NOT NULL,
        sha256 BLOB NOT NULL, PRIMARY KEY (task_id, num)) WITHOUT ROWID;
      CREATE INDEX IF NOT EXISTS tasks_lru ON tasks (last_access);
    `)
    // Stores made before file identities were recorded gain the column; their complete tasks
    // record one at their next check.
    if (!this.db.prepare<[], { name: string }>('PRAGMA table_info(tasks)').all().some((c) => c.name === 'file_id')) {
      this.db.exec('ALTER TABLE tasks ADD COLUMN file_id TEXT')
    }
    this.stmt = {
      getTask: this.db.prepare<[string], TaskRow>('SELECT * FROM tasks WHERE id = ?'),
      insertTask: this.db.prepare('INSERT OR IGNORE INTO tasks (id, url, content_length, piece_size, piece_count, last_access) VALUES (?, ?, -1, ?, -1, ?)'),
      setLength: this.db.prepare('UPDATE tasks SET content_length = ?, piece_count = ? WHERE id = ?'),
      touch: this.db.prepare('UPDATE tasks SET last_access = ? WHERE id = ?'),
      complete: this.db.prepare('UPDATE tasks SET complete = 1, sha256 = ?, last_access = ?, file_id = ? WHERE id = ?'),
      setFileId: this.db.prepare('UPDATE tasks SET file_id = ? WHERE id = ?'),
      completed: this.db.prepare<[], { id: string; file_id: string | null }>('SELECT id, file_id FROM tasks WHERE complete = 1'),
      getPiece: this.db.prepare<[string, number], { num: number; offset: number; length: number; sha256: Buffer }>('SELECT num, offset, length, sha256 FROM pieces WHERE task_id = ? AND num = ?'),
      pieceNums: this.db.prepare<[string], { num: number }>('SELECT num FROM pieces WHERE task_id = ?'),
      insertPiece: this.db.prepare('INSERT OR IGNORE INTO pieces (task_id, num, offset, length, sha256) VALUES (?, ?, ?, ?, ?)'),
      addBytes: this.db.prepare('UPDATE tasks SET bytes = bytes + ? WHERE id = ?'),
      lru: this.db.prepare<[], TaskRow>('SELECT * FROM tasks ORDER BY last_access ASC'),
      deleteTask: this.db.prepare('DELETE FROM tasks WHERE id = ?'),
      deletePieces: this.db.prepare('DELETE FROM pieces WHERE task_id = ?'),
      usage: this.db.prepare<[], { total: number | null }>('SELECT SUM(bytes) AS total FROM tasks'),
      all: this.db.prepare<[], TaskRow>('SELECT * FROM tasks ORDER BY last_access DESC')
    }
    this.used = this.stmt.usage.get()?.total ?? 0
    for (const t of this.stmt.completed.all()) this.completed.set(t.id, t.file_id)
  }

  dataPath(id: string): string {
    return join(this.dir, 'data', id.slice(0, 2), id)
  }

  ensureTask(id: string, url: string, pieceSize: number): StoredTask {
    this.stmt.insertTask.run(id, url, pieceSize, Date.now())
    this.stmt.touch.run(Date.now(), id)
    return this.getTask(id)!
  }

  getTask(id: string): StoredTask | undefined {
    const row = this.stmt.getTask.get(id)
    return row === undefined ? undefined : rowToTask(row)
  }

  setTaskLength(id: string, contentLength: number, pieceCount: number): void {
    this.stmt.setLength.run(contentLength, pieceCount, id)
  }

  hasPiece(id: string, num: number): boolean {
    return this.bitmap(id).has(num)
  }

  getPiece(id: string, num: number): StoredPiece | undefined {
    return this.stmt.getPiece.get(id, num)
  }

  bitmap(id: string): Bitmap {
    let bm = this.bitmaps.get(id)
    if (bm === undefined) {
      bm = new Bitmap()
      // Only tasks the store holds are remembered: a peer asking about unknown task IDs
      // must not make the store grow.
      if (this.stmt.getTask.get(id) === undefined) return bm
      for (const { num } of this.stmt.pieceNums.all(id)) bm.set(num)
      this.bitmaps.set(id, bm)
    }
    return bm
  }

  private file(id: string): Promise<FileHandle> {
    let fh = this.files.get(id)
    if (fh === undefined) {
      const path = this.dataPath(id)
      fh = mkdir(join(path, '..'), { recursive: true, mode: 0o700 }).then(() => open(path, 'a+', 0o600).then(async (h) => {
        await h.close()
        return open(path, 'r+')
      }))
      fh.catch(() => this.files.delete(id))
      this.files.set(id, fh)
    }
    return fh
  }

  async writePiece(id: string, piece: StoredPiece, data: Uint8Array): Promise<void> {
    if (this.hasPiece(id, piece.num)) return
    const unpin = this.pin(id)
    let reservation: Reservation | undefined
    try {
      reservation = await this.reserve(id, data.length)
      await this.writeAt(id, piece.offset, data)
      this.commitPiece(id, piece, reservation)
    } finally {
      reservation?.release()
      unpin()
    }
  }

  async reserve(id: string, bytes: number, options: { waitMs?: number; signal?: AbortSignal } = {}): Promise<Reservation> {
    const until = Date.now() + (options.waitMs ?? 0)
    for (;;) {
      options.signal?.throwIfAborted()
      try {
        await this.makeRoom(bytes, id)
        break
      } catch (err) {
        const left = until - Date.now()
        if ((err as NaiadError).code !== 'DFD_ERR_CACHE_FULL' || left <= 0) throw err
        await this.roomFreed(Math.min(left, 1000), options.signal)
      }
    }
    let held = true
    return {
      bytes,
      release: () => {
        if (!held) return
        held = false
        this.reserved -= bytes
        this.wakeRoomWaiters()
      }
    }
  }

  /** Resolves when room may have freed up (a release, an unpin, a deletion), or after `ms`. */
  private roomFreed(ms: number, signal: AbortSignal | undefined): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer)
        this.roomWaiters.delete(done)
        signal?.removeEventListener('abort', done)
        resolve()
      }
      const timer = setTimeout(done, ms)
      this.roomWaiters.add(done)
      signal?.addEventListener('abort', done, { once: true })
    })
  }

  private wakeRoomWaiters(): void {
    for (const w of [...this.roomWaiters]) w()
  }

  /**
   * Starts writing a task's file back to disk once WRITE_BEHIND_BYTES more were written, one
   * flush at a time per task, without waiting for it. The bytes reach the disk while the
   * download still runs (on a link-bound pull the disk is idle), so the fsync that makes an
   * output durable — dfget's, of its hard link to this file — finds little left to write
   * instead of the whole file. The kernel would write the same pages back later anyway.
   */
  private writeBehind(id: string, fh: FileHandle, bytes: number): void {
    if (this.writeBehindBytes <= 0) return
    const state = this.unflushed.get(id) ?? { bytes: 0, flushing: false }
    state.bytes += bytes
    this.unflushed.set(id, state)
    if (state.flushing || state.bytes < this.writeBehindBytes) return
    state.flushing = true
    state.bytes = 0
    this.writeBehinds++
    // A failure here is not the write's: the write landed in the page cache, and the fsync
    // that needs durability (dfget's) reports its own error.
    fh.datasync().catch(() => {}).finally(() => {
      state.flushing = false
      if (this.unflushed.get(id) === state && state.bytes === 0) this.unflushed.delete(id)
    })
  }

  async writeAt(id: string, offset: number, data: Uint8Array | readonly Uint8Array[]): Promise<void> {
    // A complete task's file may be a user's output too (a hard link): never write into it.
    if (this.completed.has(id)) throw new NaiadError('DFD_ERR_STORE', `task ${id} is complete: its file is not written again`)
    try {
      const fh = await this.file(id)
      if (data instanceof Uint8Array) {
        let written = 0
        while (written < data.length) {
          const r = await fh.write(data, written, data.length - written, offset + written)
          written += r.bytesWritten
        }
        this.writeBehind(id, fh, data.length)
        return
      }
      let total = 0
      for (const d of data) total += d.length
      const r = await fh.writev(data as Uint8Array[], offset)
      this.writeBehind(id, fh, r.bytesWritten)
      if (r.bytesWritten === total) return
      // A short writev (rare for a regular file): write what is left buffer by buffer.
      let pos = 0
      for (const d of data) {
        const skip = Math.max(0, Math.min(d.length, r.bytesWritten - pos))
        if (skip < d.length) await this.writeAt(id, offset + pos + skip, d.subarray(skip))
        pos += d.length
      }
    } catch (err) {
      if (err instanceof NaiadError) throw err
      throw new NaiadError('DFD_ERR_STORE', `cannot write task ${id} at ${offset}: ${(err as Error).message}`, { cause: err })
    }
  }

  commitPiece(id: string, piece: StoredPiece, reservation: Reservation): void {
    if (this.hasPiece(id, piece.num)) {
      // Stored meanwhile by another writer of the same bytes: this room is not needed.
      reservation.release()
      return
    }
    if (reservation.bytes < piece.length) throw new NaiadError('DFD_ERR_STORE', `piece ${piece.num} of task ${id} has ${piece.length} bytes, ${reservation.bytes} were reserved`)
    this.db.transaction(() => {
      this.stmt.insertPiece.run(id, piece.num, piece.offset, piece.length, piece.sha256)
      this.stmt.addBytes.run(piece.length, id)
    })()
    // The reservation becomes use: the bytes stay counted, now as held by the task.
    this.used += piece.length
    reservation.release()
    this.bitmap(id).set(piece.num)
  }

  async readPiece(id: string, num: number): Promise<{ piece: StoredPiece; data: Buffer } | undefined> {
    const piece = this.getPiece(id, num)
    if (piece === undefined) return undefined
    const data = await this.read(id, piece.offset, piece.length)
    return { piece, data }
  }

  /** Reads [start, start + length) of a task's content into a new buffer; see readInto. */
  async read(id: string, start: number, length: number): Promise<Buffer> {
    const buf = Buffer.allocUnsafe(length)
    await this.readInto(id, start, buf)
    return buf
  }

  async readInto(id: string, start: number, buf: Buffer): Promise<void> {
    let intact = true
    try {
      const fh = await this.file(id)
      const length = buf.length
      let got = 0
      while (got < length) {
        const r = await fh.read(buf, got, length - got, start + got)
        if (r.bytesRead === 0) throw new Error(`unexpected end of data at ${start + got}`)
        got += r.bytesRead
      }
      // After the read: a write into the file changes its mtime before its bytes, so an
      // unchanged identity now means these bytes are the verified ones.
      if (this.completed.has(id)) intact = this.matches(id, fstatSync(fh.fd, { bigint: true }))
    } catch (err) {
      throw new NaiadError('DFD_ERR_STORE', `cannot read task ${id}: ${(err as Error).message}`, { cause: err })
    }
    if (!intact) {
      await this.dropModified(id)
      throw new NaiadError('DFD_ERR_TASK_NOT_FOUND', `task ${id} was dropped: its data file was changed outside the daemon (written through a hard-linked output?)`)
    }
  }

  complete(id: string, sha256: Buffer): void {
    const file = this.identify(id)
    this.stmt.complete.run(sha256, Date.now(), file, id)
    this.completed.set(id, file)
  }

  fileIdentity(id: string): string | undefined {
    return this.completed.get(id) ?? undefined
  }

  isComplete(id: string): boolean {
    return this.completed.has(id)
  }

  async checkFile(id: string): Promise<boolean> {
    if (!this.fileChanged(id)) return true
    await this.dropModified(id)
    return false
  }

  fileChanged(id: string): boolean {
    if (!this.completed.has(id)) return false
    try {
      return !this.matches(id, statSync(this.dataPath(id), { bigint: true }))
    } catch {
      return true // the file is gone
    }
  }

  /** The identity of a task's data file now, creating it if no byte was ever written (an empty task). */
  private identify(id: string): string {
    const path = this.dataPath(id)
    mkdirSync(join(path, '..'), { recursive: true, mode: 0o700 })
    closeSync(openSync(path, 'a', 0o600))
    return fileIdentity(statSync(path, { bigint: true }))
  }

  /** Whether `st` is the complete task's recorded file; a task recorded without one adopts it. */
  private matches(id: string, st: FileStatus): boolean {
    const recorded = this.completed.get(id)
    const now = fileIdentity(st)
    if (recorded === null || recorded === undefined) {
      this.stmt.setFileId.run(now, id)
      this.completed.set(id, now)
      return true
    }
    return recorded === now
  }

  /** Forgets a task whose file changed; the scheduler must stop naming this node for it. */
  private async dropModified(id: string): Promise<void> {
    const task = this.getTask(id)
    if (task === undefined) return
    await this.deleteTask(id)
    evicted.publish({ taskId: id, bytes: task.bytes, reason: 'modified' })
    this.onEvicted?.(id)
  }

  pin(id: string): () => void {
    this.pins.set(id, (this.pins.get(id) ?? 0) + 1)
    // The data channel pins a task for every piece it serves: a database write per piece cost
    // more than the piece's disk read. The LRU order needs no finer grain than a second.
    const now = Date.now()
    if (now - (this.touchedAt.get(id) ?? Number.NEGATIVE_INFINITY) >= TOUCH_EVERY_MS) {
      this.stmt.touch.run(now, id)
      this.touchedAt.set(id, now)
    }
    let done = false
    return () => {
      if (done) return
      done = true
      const n = (this.pins.get(id) ?? 1) - 1
      if (n > 0) {
        this.pins.set(id, n)
        return
      }
      // Nothing uses the task any more: give its file descriptor back — a moment later, since
      // the data channel unpins after each piece it serves and pins again for the next one
      // (closing and opening the file per piece was four system calls and a FileHandle each).
      this.pins.delete(id)
      this.wakeRoomWaiters()
      const fh = this.files.get(id)
      if (fh === undefined) return
      setTimeout(() => {
        if (this.pins.has(id) || this.files.get(id) !== fh) return
        this.files.delete(id)
        this.unflushed.delete(id)
        fh.then((h) => h.close()).catch(() => {})
      }, FILE_LINGER_MS).unref()
    }
  }

  /** Evicts least recently used unpinned tasks until `bytes` more fit in the quota. */
  private async makeRoom(bytes: number, forTask: string): Promise<void> {
    const excess = (): number => this.used + this.reserved + bytes - this.quota
    const full = (): NaiadError =>
      new NaiadError('DFD_ERR_CACHE_FULL', `cache quota of ${this.quota} bytes is full: ${this.used + this.reserved} bytes are held by tasks in use`)
    if (excess() > 0) {
      // Pick victims first, and evict only if they free enough: never throw data away for nothing.
      const victims: Array<{ id: string; bytes: number }> = []
      let freed = 0
      for (const row of this.stmt.lru.all()) {
        if (freed >= excess()) break
        if (row.id === forTask || this.pins.has(row.id)) continue
        victims.push({ id: row.id, bytes: row.bytes })
        freed += row.bytes
      }
      if (freed < excess()) throw full()
      for (const v of victims) {
        if (this.pins.has(v.id)) continue // pinned while we were evicting
        await this.deleteTask(v.id)
        evicted.publish({ taskId: v.id, bytes: v.bytes })
        this.onEvicted?.(v.id)
      }
      if (excess() > 0) throw full()
    }
    // Reserve before returning: concurrent writers must not all see the same free room.
    this.reserved += bytes
  }

  async deleteTask(id: string): Promise<void> {
    const task = this.getTask(id)
    if (task === undefined) return
    this.db.transaction(() => {
      this.stmt.deletePieces.run(id)
      this.stmt.deleteTask.run(id)
    })()
    this.used -= task.bytes
    this.bitmaps.delete(id)
    this.touchedAt.delete(id)
    this.completed.delete(id)
    this.wakeRoomWaiters()
    const fh = this.files.get(id)
    this.files.delete(id)
    this.unflushed.delete(id)
    if (fh !== undefined) await (await fh.catch(() => undefined))?.close().catch(() => {})
    await rm(this.dataPath(id), { force: true })
  }

  usage(): number {
    return this.used
  }

  capacity(): number {
    return this.quota
  }

  listTasks(): StoredTask[] {
    return this.stmt.all.all().map(rowToTask)
  }

  async close(): Promise<void> {
    for (const fh of this.files.values()) await (await fh.catch(() => undefined))?.close().catch(() => {})
    this.files.clear()
    this.db.close()
  }
}
