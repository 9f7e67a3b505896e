// The snapshotter's state: snapshots (containerd's model: active, view, committed; a name or
// key, a parent, labels, times) and the lazy images they stand on, in SQLite under the root
// (`<root>/snapshotter.db`), so both survive a restart. better-sqlite3 is synchronous: every
// method here runs whole within one turn of the event loop, which is what makes the
// snapshotter's check-then-write sequences atomic without locks.

import { join } from 'node:path'

import Database from 'better-sqlite3'
import { NaiadError, SNAPSHOT_KIND, type SnapshotKind } from '@naiad/proto/contracts'

export interface SnapshotRow {
  id: number
  /** The key of an active or view snapshot, the name of a committed one. */
  key: string
  /** Name of the parent (committed) snapshot, '' for none. */
  parent: string
  kind: SnapshotKind
  labels: Record<string, string>
  createdNs: bigint
  updatedNs: bigint
  /** For a claimed layer of a lazy image: the lazy manifest's digest and the layer's place. */
  lazyImage: string | undefined
  lazyLayer: number
  lazyLayers: number
  /** Bytes and inodes, measured at commit. */
  size: number
  inodes: number
}

export interface LazyImageRow {
  /** Digest of the lazy manifest. */
  image: string
  /** `registry/repository@digest` to mount. */
  ref: string
  mountpoint: string
}

interface RawSnapshot {
  id: number
  key: string
  parent: string
  kind: number
  labels: string
  created_ns: bigint
  updated_ns: bigint
  lazy_image: string | null
  lazy_layer: number
  lazy_layers: number
  size: number
  inodes: number
}

function nowNs(): bigint {
  return BigInt(Date.now()) * 1_000_000n
}

function fromRaw(r: RawSnapshot): SnapshotRow {
  return {
    id: r.id, key: r.key, parent: r.parent, kind: r.kind as SnapshotKind, labels: JSON.parse(r.labels) as Record<string, string>,
    createdNs: r.created_ns, updatedNs: r.updated_ns, lazyImage: r.lazy_image ?? undefined, lazyLayer: r.lazy_layer,
    lazyLayers: r.lazy_layers, size: r.size, inodes: r.inodes
  }
}

export class SnapshotStore {
  private readonly db: Database.Database

  constructor(root: string) {
    this.db = new Database(join(root, 'snapshotter.db'))
    this.db.pragma('journal_mode = WAL')
    this.db.pragma('synchronous = NORMAL')
    this.db.defaultSafeIntegers(false)
    this.db.exec(`
      CREATE TABLE IF NOT EXISTS snapshots (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        key TEXT NOT NULL UNIQUE,
        parent TEXT NOT NULL DEFAULT '',
        kind INTEGER NOT NULL,
        labels TEXT NOT NULL DEFAULT '{}',
        created_ns INTEGER NOT NULL,
        updated_ns INTEGER NOT NULL,
        lazy_image TEXT,
        lazy_layer INTEGER NOT NULL DEFAULT 0,
        lazy_layers INTEGER NOT NULL DEFAULT 0,
        size INTEGER NOT NULL DEFAULT 0,
        inodes INTEGER NOT NULL DEFAULT 0
      );
      CREATE INDEX IF NOT EXISTS snapshots_parent ON snapshots(parent);
      CREATE INDEX IF NOT EXISTS snapshots_lazy ON snapshots(lazy_image);
      CREATE TABLE IF NOT EXISTS lazy_images (
        image TEXT PRIMARY KEY,
        ref TEXT NOT NULL,
        mountpoint TEXT NOT NULL
      );
    `)
  }

  close(): void {
    this.db.close()
  }

  get(key: string): SnapshotRow | undefined {
    const r = this.db.prepare('SELECT * FROM snapshots WHERE key = ?').safeIntegers(true).get(key) as RawSnapshot | undefined
    return r === undefined ? undefined : fromRaw(this.numbers(r))
  }

  all(): SnapshotRow[] {
    return (this.db.prepare('SELECT * FROM snapshots ORDER BY id').safeIntegers(true).all() as RawSnapshot[]).map((r) => fromRaw(this.numbers(r)))
  }

  ids(): Set<number> {
    return new Set((this.db.prepare('SELECT id FROM snapshots').all() as Array<{ id: number }>).map((r) => r.id))
  }

  hasChildren(name: string): boolean {
    return this.db.prepare('SELECT 1 FROM snapshots WHERE parent = ? LIMIT 1').get(name) !== undefined
  }

  /** Snapshots that stand on the lazy image (claimed layers, or anything mounting it). */
  lazyUsers(image: string): number {
    return (this.db.prepare('SELECT COUNT(*) AS n FROM snapshots WHERE lazy_image = ?').get(image) as { n: number }).n
  }

  create(input: { key: string; parent: string; kind: SnapshotKind; labels: Record<string, string>; lazy?: { image: string; layer: number; layers: number } }): SnapshotRow {
    const t = nowNs()
    try {
      const info = this.db.prepare(`INSERT INTO snapshots (key, parent, kind, labels, created_ns, updated_ns, lazy_image, lazy_layer, lazy_layers)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`).run(input.key, input.parent, input.kind, JSON.stringify(input.labels), t, t,
        input.lazy?.image ?? null, input.lazy?.layer ?? 0, input.lazy?.layers ?? 0)
      return this.get(input.key) ?? this.missing(input.key, Number(info.lastInsertRowid))
    } catch (err) {
      if ((err as { code?: string }).code === 'SQLITE_CONSTRAINT_UNIQUE') throw new NaiadError('NFS_ERR_SNAPSHOT_EXISTS', `snapshot ${input.key} already exists`, { cause: err })
      throw err
    }
  }

  /** Turns the active snapshot `key` into the committed snapshot `name` (same id, same directories). */
  commit(key: string, name: string, labels: Record<string, string>, usage: { size: number; inodes: number }): SnapshotRow {
    if (this.get(name) !== undefined) throw new NaiadError('NFS_ERR_SNAPSHOT_EXISTS', `snapshot ${name} already exists`)
    this.db.prepare('UPDATE snapshots SET key = ?, kind = ?, labels = ?, updated_ns = ?, size = ?, inodes = ? WHERE key = ?')
      .run(name, SNAPSHOT_KIND.committed, JSON.stringify(labels), nowNs(), usage.size, usage.inodes, key)
    return this.get(name)!
  }

  setLabels(key: string, labels: Record<string, string>): SnapshotRow {
    this.db.prepare('UPDATE snapshots SET labels = ?, updated_ns = ? WHERE key = ?').run(JSON.stringify(labels), nowNs(), key)
    return this.get(key)!
  }

  remove(key: string): void {
    this.db.prepare('DELETE FROM snapshots WHERE key = ?').run(key)
  }

  lazyImage(image: string): LazyImageRow | undefined {
    return this.db.prepare('SELECT image, ref, mountpoint FROM lazy_images WHERE image = ?').get(image) as LazyImageRow | undefined
  }

  lazyImages(): LazyImageRow[] {
    return this.db.prepare('SELECT image, ref, mountpoint FROM lazy_images').all() as LazyImageRow[]
  }

  putLazyImage(row: LazyImageRow): void {
    this.db.prepare('INSERT INTO lazy_images (image, ref, mountpoint) VALUES (?, ?, ?) ON CONFLICT(image) DO UPDATE SET ref = excluded.ref, mountpoint = excluded.mountpoint')
      .run(row.image, row.ref, row.mountpoint)
  }

  removeLazyImage(image: string): void {
    this.db.prepare('DELETE FROM lazy_images WHERE image = ?').run(image)
  }

  private numbers(r: RawSnapshot): RawSnapshot {
    return { ...r, id: Number(r.id), kind: Number(r.kind), lazy_layer: Number(r.lazy_layer), lazy_layers: Number(r.lazy_layers), size: Number(r.size), inodes: Number(r.inodes) }
  }

  private missing(key: string, id: number): never {
    throw new NaiadError('NFS_ERR_SNAPSHOT', `snapshot ${key} (row ${id}) vanished after it was written`)
  }
}
