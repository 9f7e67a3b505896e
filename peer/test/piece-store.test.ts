// The disk piece store: verified pieces on disk with an SQLite index, surviving restarts,
// held within a quota by evicting the least recently used tasks nobody is using.

import { createHash } from 'node:crypto'
import { subscribe, unsubscribe } from 'node:diagnostics_channel'
import { existsSync } from 'node:fs'
import { chmod, link, mkdtemp, open as openFile, readFile, rm, stat, utimes } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { EVENTS, fileIdentity, NaiadError } from '@naiad/proto'
import { makeBlob } from '@naiad/testkit'

import { DiskPieceStore } from '../src/storage/piece-store.ts'

const PIECE = 1000

const idOf = (name: string): string => createHash('sha256').update(name).digest('hex')
const sha = (data: Uint8Array): Buffer => createHash('sha256').update(data).digest()

async function expectCode(p: Promise<unknown>, code: string): Promise<void> {
  const err = await p.then(() => undefined, (e: unknown) => e)
  expect(err).toBeInstanceOf(NaiadError)
  expect((err as NaiadError).code).toBe(code)
}

describe('DiskPieceStore', () => {
  let dir: string
  let store: DiskPieceStore
  let now: number

  const dataFile = (id: string): string => join(dir, 'data', id.slice(0, 2), id)

  /** Writes piece `num` of a task made of `blob`, cut into PIECE-byte pieces. */
  async function put(s: DiskPieceStore, id: string, blob: Buffer, num: number): Promise<void> {
    const data = blob.subarray(num * PIECE, Math.min(blob.length, (num + 1) * PIECE))
    await s.writePiece(id, { num, offset: num * PIECE, length: data.length, sha256: sha(data) }, data)
  }

  /** A whole task of `size` bytes, written at the (fake) current time; advances the clock. */
  async function putTask(s: DiskPieceStore, name: string, size: number): Promise<{ id: string; blob: Buffer }> {
    const id = idOf(name)
    const blob = makeBlob(size, name)
    s.ensureTask(id, `http://origin/${name}`, PIECE)
    for (let num = 0; num * PIECE < size; num++) await put(s, id, blob, num)
    tick()
    return { id, blob }
  }

  function tick(ms = 1000): void {
    now += ms
    vi.setSystemTime(now)
  }

  function open(quota = 1e9, onEvicted?: (taskId: string) => void): DiskPieceStore {
    return new DiskPieceStore({ dir, quota, onEvicted })
  }

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'naiad-piece-store-'))
    // LRU order is by last-access time: a fake clock makes it deterministic.
    vi.useFakeTimers({ toFake: ['Date'] })
    now = Date.UTC(2025, 0, 1)
    vi.setSystemTime(now)
  })

  afterEach(async () => {
    vi.useRealTimers()
    await store?.close().catch(() => {})
    await rm(dir, { recursive: true, force: true })
  })

  describe('pieces', () => {
    it('writes pieces in any order and reads them back with their metadata', async () => {
      store = open()
      const id = idOf('t')
      const blob = makeBlob(3 * PIECE + 17, 't')
      store.ensureTask(id, 'http://origin/t', PIECE)
      for (const num of [2, 0, 3]) await put(store, id, blob, num)

      expect(store.hasPiece(id, 0)).toBe(true)
      expect(store.hasPiece(id, 1)).toBe(false)
      expect([...store.bitmap(id).pieces()]).toEqual([0, 2, 3])
      expect(store.usage()).toBe(2 * PIECE + 17)
      expect(store.getTask(id)?.bytes).toBe(2 * PIECE + 17)

      const last = await store.readPiece(id, 3)
      expect(last?.piece).toEqual({ num: 3, offset: 3 * PIECE, length: 17, sha256: sha(blob.subarray(3 * PIECE)) })
      expect(last?.data.equals(blob.subarray(3 * PIECE))).toBe(true)
      const first = await store.readPiece(id, 0)
      expect(first?.data.equals(blob.subarray(0, PIECE))).toBe(true)
      expect(store.getPiece(id, 2)).toEqual({ num: 2, offset: 2 * PIECE, length: PIECE, sha256: sha(blob.subarray(2 * PIECE, 3 * PIECE)) })

      expect(await store.readPiece(id, 1)).toBeUndefined()
      expect(store.getPiece(id, 1)).toBeUndefined()

      await put(store, id, blob, 1)
      const all = await store.read(id, 0, blob.length)
      expect(all.equals(blob)).toBe(true)
      // Reads may cross piece boundaries.
      expect((await store.read(id, PIECE - 5, 10)).equals(blob.subarray(PIECE - 5, PIECE + 5))).toBe(true)
    })

    it('counts a piece written twice once', async () => {
      store = open()
      const id = idOf('twice')
      const blob = makeBlob(PIECE, 'twice')
      store.ensureTask(id, 'http://origin/twice', PIECE)
      await put(store, id, blob, 0)
      await put(store, id, blob, 0)
      await Promise.all([put(store, id, blob, 0), put(store, id, blob, 0)])
      expect(store.usage()).toBe(PIECE)
      expect(store.getTask(id)?.bytes).toBe(PIECE)
      expect(store.bitmap(id).count()).toBe(1)
    })

    it('keeps concurrently written pieces of one task apart', async () => {
      store = open()
      const id = idOf('parallel')
      const blob = makeBlob(16 * PIECE, 'parallel')
      store.ensureTask(id, 'http://origin/parallel', PIECE)
      await Promise.all(Array.from({ length: 16 }, (_, num) => put(store, id, blob, num)))
      expect(store.bitmap(id).count()).toBe(16)
      expect((await store.read(id, 0, blob.length)).equals(blob)).toBe(true)
    })

    it('starts writing a task\'s file back to disk every 32 MiB written, without waiting for it', async () => {
      store = open()
      const mib = Buffer.alloc(1024 * 1024, 7)
      const big = idOf('big')
      store.ensureTask(big, 'http://origin/big', mib.length)
      for (let num = 0; num < 40; num++) await store.writeAt(big, num * mib.length, mib)
      // One flush began at 32 MiB; the 8 MiB after it wait for the next 32.
      expect(store.writeBehinds).toBe(1)
      const small = idOf('small')
      store.ensureTask(small, 'http://origin/small', mib.length)
      for (let num = 0; num < 8; num++) await store.writeAt(small, num * mib.length, [mib.subarray(0, 1000), mib.subarray(1000)])
      expect(store.writeBehinds).toBe(1)
      // Deleting the task while its flush may still run neither fails nor keeps its count.
      await store.deleteTask(big)
      await store.close()
    })

    it('fails a read past the written data with DFD_ERR_STORE', async () => {
      store = open()
      const { id } = await putTask(store, 'short', PIECE)
      await expectCode(store.read(id, 0, 2 * PIECE), 'DFD_ERR_STORE')
    })

    it('keeps task metadata: ensureTask is idempotent, length and completion are recorded', async () => {
      store = open()
      const id = idOf('meta')
      const created = store.ensureTask(id, 'http://origin/meta', PIECE)
      expect(created).toMatchObject({ id, url: 'http://origin/meta', contentLength: -1, pieceSize: PIECE, pieceCount: -1, sha256: null, complete: false, bytes: 0 })
      expect(created.lastAccess).toBe(now)

      tick()
      const again = store.ensureTask(id, 'http://elsewhere/meta', 4 * PIECE)
      expect(again).toMatchObject({ url: 'http://origin/meta', pieceSize: PIECE, lastAccess: now })

      store.setTaskLength(id, 2500, 3)
      const digest = sha(Buffer.from('whole'))
      store.complete(id, digest)
      expect(store.getTask(id)).toMatchObject({ contentLength: 2500, pieceCount: 3, complete: true })
      expect(store.getTask(id)?.sha256?.equals(digest)).toBe(true)
      expect(store.getTask(idOf('nope'))).toBeUndefined()
    })

    it('lists tasks most recently used first', async () => {
      store = open()
      const a = await putTask(store, 'a', PIECE)
      const b = await putTask(store, 'b', PIECE)
      expect(store.listTasks().map((t) => t.id)).toEqual([b.id, a.id])
      store.pin(a.id)()
      expect(store.listTasks().map((t) => t.id)).toEqual([a.id, b.id])
    })
  })

  it('persists pieces, bitmaps, metadata and usage across close and reopen', async () => {
    store = open()
    const a = await putTask(store, 'a', 2 * PIECE + 1)
    const b = await putTask(store, 'b', PIECE)
    store.setTaskLength(a.id, a.blob.length, 3)
    store.complete(a.id, sha(a.blob))
    const usage = store.usage()
    await store.close()

    store = open()
    expect(store.usage()).toBe(usage)
    expect(store.getTask(a.id)).toMatchObject({ contentLength: 2 * PIECE + 1, pieceCount: 3, complete: true, bytes: 2 * PIECE + 1 })
    expect(store.getTask(a.id)?.sha256?.equals(sha(a.blob))).toBe(true)
    expect([...store.bitmap(a.id).pieces()]).toEqual([0, 1, 2])
    expect([...store.bitmap(b.id).pieces()]).toEqual([0])
    expect((await store.read(a.id, 0, a.blob.length)).equals(a.blob)).toBe(true)
    expect((await store.readPiece(b.id, 0))?.data.equals(b.blob)).toBe(true)
    expect(store.listTasks()).toHaveLength(2)
  })

  describe('quota', () => {
    let events: Array<{ taskId: string; bytes: number }>
    const onEvicted = (msg: unknown): void => { events.push(msg as { taskId: string; bytes: number }) }

    beforeEach(() => {
      events = []
      subscribe(EVENTS.cacheEvicted, onEvicted)
    })
    afterEach(() => {
      unsubscribe(EVENTS.cacheEvicted, onEvicted)
    })

    it('evicts the least recently used tasks first, and only as many as needed', async () => {
      // The engine tells the scheduler through onEvicted: each victim, once, after it is gone.
      const told: string[] = []
      store = open(3 * PIECE, (taskId) => {
        expect(store.getTask(taskId)).toBeUndefined()
        told.push(taskId)
      })
      const a = await putTask(store, 'a', PIECE)
      const b = await putTask(store, 'b', PIECE)
      const c = await putTask(store, 'c', PIECE)
      // Reading a touches it (readers pin), so b is now the least recently used.
      const unpin = store.pin(a.id)
      await store.readPiece(a.id, 0)
      unpin()
      tick()

      const d = await putTask(store, 'd', PIECE)
      expect(events).toEqual([{ taskId: b.id, bytes: PIECE }])
      expect(told).toEqual([b.id])
      expect(store.getTask(b.id)).toBeUndefined()
      expect(store.bitmap(b.id).count()).toBe(0)
      expect(existsSync(dataFile(b.id))).toBe(false)
      for (const t of [a, c, d]) expect(store.bitmap(t.id).count(), t.id).toBe(1)
      expect(store.usage()).toBe(3 * PIECE)

      // Two pieces' worth: the two oldest (c, then a) go.
      const e = await putTask(store, 'e', 2 * PIECE)
      expect(events.map((x) => x.taskId)).toEqual([b.id, c.id, a.id])
      expect(store.listTasks().map((t) => t.id).sort()).toEqual([d.id, e.id].sort())
      expect(store.usage()).toBe(3 * PIECE)
    })

    it('counts a pin as an access at most once a second (the data channel pins for every piece it serves)', async () => {
      store = open()
      const a = await putTask(store, 'a', PIECE)
      store.pin(a.id)()
      const first = store.getTask(a.id)!.lastAccess
      expect(first).toBe(now)
      tick(500)
      store.pin(a.id)()
      expect(store.getTask(a.id)!.lastAccess).toBe(first)
      // Unpinned, its file lingers for the next pin: reads go on as before.
      expect((await store.readPiece(a.id, 0))!.data.equals(a.blob)).toBe(true)
      tick(500)
      store.pin(a.id)()
      expect(store.getTask(a.id)!.lastAccess).toBe(now)
    })

    it('never evicts a pinned task, even the least recently used one', async () => {
      store = open(2 * PIECE)
      const a = await putTask(store, 'a', PIECE)
      const unpinA = store.pin(a.id)
      tick()
      const b = await putTask(store, 'b', PIECE)
      expect(store.getTask(a.id)!.lastAccess).toBeLessThan(store.getTask(b.id)!.lastAccess)
      await putTask(store, 'c', PIECE)
      expect(events.map((x) => x.taskId)).toEqual([b.id])
      expect(store.bitmap(a.id).count()).toBe(1)
      expect(store.getTask(b.id)).toBeUndefined()
      unpinA()
    })

    it('fails with DFD_ERR_CACHE_FULL when only pinned tasks could make room', async () => {
      store = open(2 * PIECE)
      const a = await putTask(store, 'a', PIECE)
      const b = await putTask(store, 'b', PIECE)
      const unpins = [store.pin(a.id), store.pin(b.id)]
      const c = idOf('c')
      store.ensureTask(c, 'http://origin/c', PIECE)
      await expectCode(put(store, c, makeBlob(PIECE, 'c'), 0), 'DFD_ERR_CACHE_FULL')
      expect(events).toEqual([])
      expect(store.bitmap(a.id).count()).toBe(1)
      expect(store.bitmap(b.id).count()).toBe(1)
      expect(store.hasPiece(c, 0)).toBe(false)
      expect(store.usage()).toBe(2 * PIECE)

      // Once a is released it can go.
      unpins[0]()
      await put(store, c, makeBlob(PIECE, 'c'), 0)
      expect(store.getTask(a.id)).toBeUndefined()
      expect(store.getTask(b.id)).toBeDefined()
      unpins[1]()
    })

    it('counts pins: a task stays pinned until every holder lets go, and a second unpin is harmless', async () => {
      store = open(PIECE)
      const a = await putTask(store, 'a', PIECE)
      const first = store.pin(a.id)
      const second = store.pin(a.id)
      first()
      first()
      const b = idOf('b')
      store.ensureTask(b, 'http://origin/b', PIECE)
      await expectCode(put(store, b, makeBlob(PIECE, 'b'), 0), 'DFD_ERR_CACHE_FULL')
      second()
      await put(store, b, makeBlob(PIECE, 'b'), 0)
      expect(store.getTask(a.id)).toBeUndefined()
    })

    it('does not evict the task it is writing to', async () => {
      store = open(2 * PIECE)
      const id = idOf('big')
      const blob = makeBlob(3 * PIECE, 'big')
      store.ensureTask(id, 'http://origin/big', PIECE)
      await put(store, id, blob, 0)
      await put(store, id, blob, 1)
      await expectCode(put(store, id, blob, 2), 'DFD_ERR_CACHE_FULL')
      expect([...store.bitmap(id).pieces()]).toEqual([0, 1])
      expect(store.usage()).toBe(2 * PIECE)
    })

    it('evicts nothing when eviction could not make enough room anyway', async () => {
      store = open(3 * PIECE)
      const pinned = await putTask(store, 'pinned', 2 * PIECE)
      const idle = await putTask(store, 'idle', PIECE / 2)
      const unpin = store.pin(pinned.id)
      // 2 pinned + 0.5 idle + 1.5 new > 3, and dropping idle only frees 0.5.
      const big = idOf('big')
      store.ensureTask(big, 'http://origin/big', 2 * PIECE)
      const data = makeBlob(PIECE + PIECE / 2, 'big')
      await expectCode(store.writePiece(big, { num: 0, offset: 0, length: data.length, sha256: sha(data) }, data), 'DFD_ERR_CACHE_FULL')
      // The idle task was not thrown away for nothing.
      expect(store.getTask(idle.id)).toBeDefined()
      expect(events).toEqual([])
      unpin()
    })

    it('stays within the quota when pieces are written concurrently', async () => {
      store = open(2 * PIECE)
      const id = idOf('burst')
      const blob = makeBlob(4 * PIECE, 'burst')
      store.ensureTask(id, 'http://origin/burst', PIECE)
      const results = await Promise.allSettled([0, 1, 2, 3].map((num) => put(store, id, blob, num)))
      const failed = results.filter((r) => r.status === 'rejected')
      expect(failed).toHaveLength(2)
      for (const f of failed) expect(((f as PromiseRejectedResult).reason as NaiadError).code).toBe('DFD_ERR_CACHE_FULL')
      expect(store.usage()).toBeLessThanOrEqual(2 * PIECE)
      expect(store.bitmap(id).count()).toBe(2)
    })
  })

  describe('deleteTask', () => {
    it('frees its usage, its index rows and its data file', async () => {
      store = open(2 * PIECE)
      const a = await putTask(store, 'a', PIECE)
      const b = await putTask(store, 'b', PIECE)
      expect(existsSync(dataFile(a.id))).toBe(true)
      await store.deleteTask(a.id)
      expect(store.usage()).toBe(PIECE)
      expect(store.getTask(a.id)).toBeUndefined()
      expect(store.hasPiece(a.id, 0)).toBe(false)
      expect(store.getPiece(a.id, 0)).toBeUndefined()
      expect(existsSync(dataFile(a.id))).toBe(false)

      // The freed room is usable without evicting b.
      await putTask(store, 'c', PIECE)
      expect(store.getTask(b.id)).toBeDefined()

      await store.close()
      store = open(2 * PIECE)
      expect(store.usage()).toBe(2 * PIECE)
      expect(store.getTask(a.id)).toBeUndefined()
    })

    it('ignores unknown tasks and lets a deleted task be written again', async () => {
      store = open()
      await store.deleteTask(idOf('never'))
      expect(store.usage()).toBe(0)
      const a = await putTask(store, 'a', 2 * PIECE)
      await store.deleteTask(a.id)
      const again = await putTask(store, 'a', 2 * PIECE)
      expect(store.usage()).toBe(2 * PIECE)
      expect((await store.read(again.id, 0, 2 * PIECE)).equals(a.blob)).toBe(true)
    })
  })

  // dfget hard-links a complete task's file as its output: the output and the cache share an inode.
  describe("a complete task's file", () => {
    async function completeTask(s: DiskPieceStore, name: string, size: number): Promise<{ id: string; blob: Buffer; linked: string }> {
      const t = await putTask(s, name, size)
      s.complete(t.id, sha(t.blob))
      const linked = join(dir, `${name}.out`)
      await link(dataFile(t.id), linked)
      return { ...t, linked }
    }

    /** What a user does to a linked output: writes into it (same size, new mtime). */
    async function overwrite(path: string, at: number, text: string): Promise<void> {
      const fh = await openFile(path, 'r+')
      await fh.write(Buffer.from(text), 0, text.length, at)
      await fh.close()
      // The kernel's clock is coarse: make the write's mtime differ for certain.
      const later = new Date(Date.now() + 5000)
      await utimes(path, later, later)
    }

    it('records the identity of the file when the task completes; a link or a chmod does not change it', async () => {
      store = open()
      const a = await completeTask(store, 'a', 2 * PIECE)
      expect(store.fileIdentity(a.id)).toBe(fileIdentity(await stat(dataFile(a.id), { bigint: true })))
      expect(await store.checkFile(a.id)).toBe(true)
      await chmod(a.linked, 0o644)
      expect(await store.checkFile(a.id)).toBe(true)
      expect((await store.read(a.id, 0, 2 * PIECE)).equals(a.blob)).toBe(true)
      // Not complete: nothing recorded, nothing to check.
      const b = await putTask(store, 'b', PIECE)
      expect(store.fileIdentity(b.id)).toBeUndefined()
      expect(await store.checkFile(b.id)).toBe(true)
    })

    it('is never written again', async () => {
      store = open()
      const a = await completeTask(store, 'a', PIECE)
      await expectCode(store.writeAt(a.id, 0, Buffer.from('x')), 'DFD_ERR_STORE')
      await store.writePiece(a.id, { num: 0, offset: 0, length: PIECE, sha256: sha(a.blob) }, a.blob) // listed: a no-op
      expect((await readFile(a.linked)).equals(a.blob)).toBe(true)
    })

    it('drops the task instead of serving bytes written through a linked output, and tells the scheduler', async () => {
      const gone: string[] = []
      store = open(1e9, (id) => gone.push(id))
      const a = await completeTask(store, 'a', 3 * PIECE)
      const evictions: unknown[] = []
      const onEvicted = (m: unknown): void => { evictions.push(m) }
      subscribe(EVENTS.cacheEvicted, onEvicted)
      try {
        await overwrite(a.linked, PIECE + 10, 'changed by the user')
        await expectCode(store.read(a.id, PIECE, PIECE), 'DFD_ERR_TASK_NOT_FOUND')
      } finally {
        unsubscribe(EVENTS.cacheEvicted, onEvicted)
      }
      expect(gone).toEqual([a.id])
      expect(evictions).toEqual([{ taskId: a.id, bytes: 3 * PIECE, reason: 'modified' }])
      expect(store.getTask(a.id)).toBeUndefined()
      expect(store.usage()).toBe(0)
      // Only the store's name went: the user's output keeps its (changed) bytes.
      expect(existsSync(dataFile(a.id))).toBe(false)
      expect((await readFile(a.linked)).subarray(PIECE + 10, PIECE + 29).toString()).toBe('changed by the user')
      // Fetched again, the task has a new file of its own.
      const again = await putTask(store, 'a', 3 * PIECE)
      store.complete(again.id, sha(again.blob))
      expect((await stat(dataFile(a.id))).ino).not.toBe((await stat(a.linked)).ino)
      expect((await store.read(a.id, 0, 3 * PIECE)).equals(a.blob)).toBe(true)
    })

    it('checkFile drops a task whose file changed size or is gone', async () => {
      store = open()
      const a = await completeTask(store, 'a', 2 * PIECE)
      const fh = await openFile(a.linked, 'r+')
      await fh.truncate(PIECE)
      await fh.close()
      // fileChanged only tells; checkFile drops.
      expect(store.fileChanged(a.id)).toBe(true)
      expect(store.getTask(a.id)).toBeDefined()
      expect(await store.checkFile(a.id)).toBe(false)
      expect(store.getTask(a.id)).toBeUndefined()
      const b = await completeTask(store, 'b', PIECE)
      await rm(dataFile(b.id))
      expect(await store.checkFile(b.id)).toBe(false)
      expect(store.getTask(b.id)).toBeUndefined()
    })

    it('eviction unlinks only the store\'s name: a linked output keeps its bytes', async () => {
      store = open(2 * PIECE)
      const a = await completeTask(store, 'a', 2 * PIECE)
      await putTask(store, 'b', 2 * PIECE) // evicts a
      expect(store.getTask(a.id)).toBeUndefined()
      expect((await readFile(a.linked)).equals(a.blob)).toBe(true)
    })

    it('keeps the identity across a reopen, and a task completed before identities were recorded adopts one', async () => {
      store = open()
      const a = await completeTask(store, 'a', PIECE)
      const b = await completeTask(store, 'b', PIECE)
      await store.close()
      // As a store of an older version left it: complete, no identity.
      const Database = (await import('better-sqlite3')).default
      const db = new Database(join(dir, 'index.db'))
      db.prepare('UPDATE tasks SET file_id = NULL WHERE id = ?').run(b.id)
      db.close()
      store = open()
      expect(store.fileIdentity(a.id)).toBe(fileIdentity(await stat(dataFile(a.id), { bigint: true })))
      await overwrite(a.linked, 0, 'x')
      expect(await store.checkFile(a.id)).toBe(false)
      expect(store.fileIdentity(b.id)).toBeUndefined()
      expect((await store.read(b.id, 0, PIECE)).equals(b.blob)).toBe(true)
      expect(store.fileIdentity(b.id)).toBe(fileIdentity(await stat(dataFile(b.id), { bigint: true })))
    })

    it('records an identity for an empty task, whose file no write created', async () => {
      store = open()
      const id = idOf('empty')
      store.ensureTask(id, 'http://origin/empty', PIECE)
      store.setTaskLength(id, 0, 0)
      store.complete(id, sha(Buffer.alloc(0)))
      expect(store.fileIdentity(id)).toBe(fileIdentity(await stat(dataFile(id), { bigint: true })))
    })
  })
})
