// The origin reader reads on while a whole piece's writes land, and still stores pieces in
// order, each only once its bytes are on disk; a write that fails stops the read with
// nothing after it stored and the room of every piece not stored given back; a piece that
// differs from its published digest stops the read before it is stored or settled as verified.

import { createHash, randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { NaiadError } from '@naiad/proto'

import { DestinationPolicy, DiskPieceStore, OriginClient, ORIGIN_DEFAULTS } from '../src/index.ts'
import { OriginReader } from '../src/download/origin-reader.ts'
import { StagingPool } from '../src/download/staging.ts'
import { LivePieces } from '../src/storage/live-pieces.ts'

const MiB = 1024 * 1024
const BLOB = randomBytes(12 * MiB)
const sha = (b: Uint8Array): Buffer => createHash('sha256').update(b).digest()

describe('origin reader', () => {
  let server: Server
  let url: string
  let dir: string
  const origin = new OriginClient({ ...ORIGIN_DEFAULTS, retries: 0, policy: new DestinationPolicy({ allow: ['127.0.0.1'], self: [] }) })

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'naiad-origin-reader-'))
    server = createServer((_req, res) => res.writeHead(200, { 'content-length': BLOB.length }).end(BLOB))
    server.listen(0, '127.0.0.1')
    await new Promise((r) => server.once('listening', r))
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/blob`
  })

  afterAll(async () => {
    await origin.close()
    await new Promise((r) => server.close(r))
    await rm(dir, { recursive: true, force: true })
  })

  /** A store whose writes take `delayMs` each, and fail from `failAt` (a file offset) on. */
  function slowStore(name: string, delayMs: number, failAt = Number.POSITIVE_INFINITY): DiskPieceStore {
    const store = new DiskPieceStore({ dir: join(dir, name), quota: BLOB.length })
    const writeAt = store.writeAt.bind(store)
    store.writeAt = async (id, offset, data) => {
      await new Promise((r) => setTimeout(r, delayMs))
      if (offset >= failAt) throw new NaiadError('DFD_ERR_STORE', 'disk on fire')
      return writeAt(id, offset, data)
    }
    return store
  }

  const taskFor = (id: string): Parameters<OriginReader['read']>[0] => ({ id, url, headers: {}, pieceSize: MiB, contentLength: -1, digest: () => undefined })
  const traffic = { priority: 'on-demand', tenantKey: '', direction: 'download' } as const

  it('stores every piece in order, each once its bytes landed, while the next are read', async () => {
    const store = slowStore('slow', 15)
    const live = new LivePieces()
    const reader = new OriginReader({ origin, store, live, staging: new StagingPool() }, { reserveWaitMs: 1000 })
    const id = sha(Buffer.from('in order')).toString('hex')
    const stored: number[] = []
    const settled: number[] = []
    const res = await reader.read(taskFor(id), {
      layout: (length, pieceSize, count) => {
        expect([length, pieceSize, count]).toEqual([BLOB.length, MiB, 12])
        // Watch each live piece: it must end with its digest only once it is all on disk.
        void (async () => {
          for (let n = 0; n < count; n++) {
            const p = await live.await(id, n, () => store.hasPiece(id, n), AbortSignal.timeout(10_000))
            if (p === undefined) continue
            while (p.outcome === undefined) await p.changed()
            if ('sha256' in p.outcome) {
              expect(p.written).toBe(MiB)
              settled.push(n)
            }
          }
        })()
      },
      piece: (num, length, digest, written) => {
        expect(written).toBe(true)
        expect(store.hasPiece(id, num)).toBe(true)
        expect(digest.equals(sha(BLOB.subarray(num * MiB, num * MiB + length)))).toBe(true)
        stored.push(num)
      }
    }, traffic, AbortSignal.timeout(30_000))
    expect(res.sha256.equals(sha(BLOB))).toBe(true)
    expect(stored).toEqual([...Array(12).keys()])
    expect((await store.read(id, 0, BLOB.length)).equals(BLOB)).toBe(true)
    expect(settled.length).toBeGreaterThan(0)
    await store.close()
  })

  it('fails on a write error, stores no piece after it, and gives back the room of those it did not store', async () => {
    const store = slowStore('failing', 5, 5 * MiB)
    const live = new LivePieces()
    const reader = new OriginReader({ origin, store, live, staging: new StagingPool() }, { reserveWaitMs: 1000 })
    const id = sha(Buffer.from('failing')).toString('hex')
    const stored: number[] = []
    await expect(reader.read(taskFor(id), { layout: () => {}, piece: (num) => stored.push(num) }, traffic, AbortSignal.timeout(30_000)))
      .rejects.toMatchObject({ code: 'DFD_ERR_STORE' })
    expect(stored).toEqual([0, 1, 2, 3, 4])
    for (let n = 5; n < 12; n++) expect(store.hasPiece(id, n)).toBe(false)
    expect(live.running(id)).toBe(false)
    // The quota is the blob's size: what is not stored must be free again, at once.
    const room = await store.reserve(id, BLOB.length - 5 * MiB, { waitMs: 0 })
    room.release()
    await store.close()
  })

  it('stops at a piece that differs from its published digest: it and none after it is stored or settled as verified', async () => {
    const store = slowStore('lying', 1)
    const live = new LivePieces()
    const reader = new OriginReader({ origin, store, live, staging: new StagingPool() }, { reserveWaitMs: 1000 })
    const id = sha(Buffer.from('lying')).toString('hex')
    const outcomes = new Map<number, string>()
    const stored: number[] = []
    const task = { ...taskFor(id), contentLength: BLOB.length, digest: (n: number) => (n === 3 ? sha(Buffer.from('not piece 3')) : sha(BLOB.subarray(n * MiB, (n + 1) * MiB))) }
    await expect(reader.read(task, {
      layout: (_length, _pieceSize, count) => {
        void (async () => {
          for (let n = 0; n < count; n++) {
            const p = await live.await(id, n, () => store.hasPiece(id, n), AbortSignal.timeout(10_000)).catch(() => undefined)
            if (p === undefined) continue
            while (p.outcome === undefined) await p.changed()
            outcomes.set(n, 'sha256' in p.outcome ? 'verified' : p.outcome.error.code)
          }
        })()
      },
      piece: (num) => stored.push(num)
    }, traffic, AbortSignal.timeout(30_000))).rejects.toMatchObject({ code: 'DFD_ERR_ORIGIN_CHANGED' })
    expect(stored).toEqual([0, 1, 2])
    for (let n = 3; n < 12; n++) expect(store.hasPiece(id, n)).toBe(false)
    expect(outcomes.get(3)).toBe('DFD_ERR_ORIGIN_CHANGED')
    expect([...outcomes].filter(([n, o]) => n >= 3 && o === 'verified')).toEqual([])
    await store.close()
  })
})
