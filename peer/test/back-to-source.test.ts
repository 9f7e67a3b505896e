// A download's read from the origin on its own, in process: a real piece store in a
// temporary directory and an origin that hands over its body directly (no socket). The
// trusted source publishes the layout at once and reports digests; another node reports
// only what it stored; a body cut off mid-way is read again, at most three times; an origin
// whose content differs from what the source published fails the download.

import { createHash } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import pino from 'pino'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { NaiadError, type PieceResult } from '@naiad/proto'
import { makeBlob } from '@naiad/testkit'

import { readFromOrigin, type BackToSourceComponents } from '../src/download/back-to-source.ts'
import { StagingPool } from '../src/download/staging.ts'
import { TaskProgress } from '../src/download/task-progress.ts'
import { TaskView } from '../src/download/task-view.ts'
import type { OriginClient } from '../src/source/origin.ts'
import { DiskPieceStore } from '../src/storage/piece-store.ts'
import { LivePieces } from '../src/storage/live-pieces.ts'

const PIECE = 64 * 1024
const BLOB = makeBlob(5 * PIECE + 123, 'back-to-source')
const sha = (b: Uint8Array): Buffer => createHash('sha256').update(b).digest()

/** An origin whose first `cut` answers end their body after `cutAt` bytes. */
function origin(cut = 0, cutAt = 2 * PIECE + 7): Pick<OriginClient, 'open'> & { opens: number } {
  const o = {
    opens: 0,
    open: async () => {
      const short = o.opens++ < cut
      const body = short ? BLOB.subarray(0, cutAt) : BLOB
      return {
        status: 200,
        contentLength: BLOB.length,
        headers: {},
        cancel: () => {},
        body: (async function * () {
          for (let at = 0; at < body.length; at += 10_000) yield Buffer.from(body.subarray(at, at + 10_000))
        })()
      }
    }
  }
  return o
}

describe('back to source', () => {
  let dir: string
  let n = 0

  beforeAll(async () => { dir = await mkdtemp(join(tmpdir(), 'naiad-back-to-source-')) })
  afterAll(async () => { await rm(dir, { recursive: true, force: true }) })

  function setup(o: Pick<OriginClient, 'open'>, options: { trusted?: boolean; sourceSha256?: Uint8Array; checkLayout?: (length: number) => void } = {}) {
    const id = `task-${n++}`
    const store = new DiskPieceStore({ dir: join(dir, id), quota: 1e9 })
    const view = new TaskView()
    view.pieceSize = PIECE
    view.sourceSha256 = options.sourceSha256
    const tally = new TaskProgress(id, view, () => store.bitmap(id))
    const added: PieceResult[] = []
    const flushed: unknown[] = []
    const components: BackToSourceComponents = { origin: o, store, live: new LivePieces(), staging: new StagingPool(), log: pino({ level: 'silent' }) }
    const read = (): Promise<Buffer> => readFromOrigin({
      id, view, tally, trusted: options.trusted ?? false,
      req: { url: 'http://origin/blob', headers: {} },
      reports: { add: (r) => added.push(r), flush: async (extra) => { flushed.push(extra) } },
      traffic: () => ({ priority: 'on-demand', tenantKey: 'http://origin/blob', direction: 'download' }),
      checkLayout: options.checkLayout ?? (() => {})
    }, components, { reserveWaitMs: 0 }, new AbortController().signal)
    return { id, store, view, tally, added, flushed, read }
  }

  it('stores the content as the trusted source: layout published at once, every piece reported with its digest', async () => {
    const t = setup(origin(), { trusted: true })
    expect(await t.read()).toEqual(sha(BLOB))
    expect(await t.store.read(t.id, 0, BLOB.length)).toEqual(BLOB)
    expect(t.flushed).toEqual([{ contentLength: BLOB.length, pieceSize: PIECE, pieceCount: 6 }])
    expect(t.added.map((r) => [r.num, r.length, Buffer.from(r.sha256).equals(sha(BLOB.subarray(r.num * PIECE, (r.num + 1) * PIECE)))])).toEqual(
      [0, 1, 2, 3, 4, 5].map((num) => [num, num < 5 ? PIECE : 123, true]))
    expect({ fromOrigin: t.tally.fromOrigin, servable: t.tally.servable(), digests: t.view.digests.size, pieceCount: t.view.pieceCount })
      .toEqual({ fromOrigin: BLOB.length, servable: 5 * PIECE, digests: 6, pieceCount: 6 })
    await t.store.close()
  })

  it('reports pieces without digests and publishes no layout on a node that is not the source', async () => {
    const t = setup(origin())
    await t.read()
    expect(t.flushed).toEqual([])
    expect(t.added.every((r) => r.sha256.length === 0 && r.errorCode === '')).toBe(true)
    await t.store.close()
  })

  it('reads a body cut off mid-way again, keeping what was stored, at most three times', async () => {
    const twice = origin(2)
    const t = setup(twice)
    expect(await t.read()).toEqual(sha(BLOB))
    expect(twice.opens).toBe(3)
    // The pieces stored before the cut are not stored (nor counted) again.
    expect(t.tally.fromOrigin).toBe(BLOB.length)
    await t.store.close()

    const always = origin(3)
    const u = setup(always)
    await expect(u.read()).rejects.toMatchObject({ code: 'DFD_ERR_ORIGIN_TRUNCATED' })
    expect(always.opens).toBe(3)
    await u.store.close()
  })

  it('does not read again when the layout cannot be had', async () => {
    const o = origin()
    const t = setup(o, { checkLayout: () => { throw new NaiadError('DFD_ERR_CACHE_FULL', 'larger than the cache') } })
    await expect(t.read()).rejects.toMatchObject({ code: 'DFD_ERR_CACHE_FULL' })
    expect(o.opens).toBe(1)
    await t.store.close()
  })

  it('fails when the origin\'s content differs from the whole digest the source published', async () => {
    const t = setup(origin(), { sourceSha256: Buffer.alloc(32, 9) })
    await expect(t.read()).rejects.toMatchObject({ code: 'DFD_ERR_ORIGIN_CHANGED' })
    await t.store.close()
  })
})
