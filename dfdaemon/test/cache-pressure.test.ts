// A cache quota smaller than the downloads running at once: a download that cannot get
// room, even after waiting for pieces in use to be let go, fails with DFD_ERR_CACHE_FULL;
// the others finish; the daemon keeps running and serving; nothing is left unhandled.

import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  downloadVia, makeBlob, sha256Hex, startDaemon, startSupernode, TestOrigin,
  type DaemonHandle, type DoneEvent, type ErrorEvent, type SupernodeHandle
} from '@naiad/testkit'

const MiB = 1024 * 1024
const FILES = 6
const SIZE = 8 * MiB

describe('cache under pressure', () => {
  let dir: string
  let origin: TestOrigin
  let sn: SupernodeHandle
  let daemon: DaemonHandle
  const blobs = new Map<string, Buffer>()

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'naiad-cache-pressure-'))
    origin = await new TestOrigin().start()
    for (let i = 0; i < FILES + 1; i++) {
      const data = makeBlob(SIZE, `pressure-${i}`)
      blobs.set(`/f${i}`, data)
      origin.files.set(`/f${i}`, { data })
    }
    // Larger than the whole quota: it can never fit.
    origin.files.set('/huge', { data: makeBlob(24 * MiB, 'huge') })
    sn = await startSupernode(join(dir, 'sn'))
    // 20 MiB for 48 MiB downloaded at once; a piece waits at most 2 s for room.
    daemon = await startDaemon(join(dir, 'd1'), sn.url, { args: ['--cache-quota', '20MiB'], env: { NAIAD_DOWNLOAD_STALL_TIMEOUT: '2s' } })
  })

  afterAll(async () => {
    await daemon?.process.stop()
    await sn?.process.stop()
    await origin?.stop()
    await rm(dir, { recursive: true, force: true })
  })

  it('fails the downloads that cannot get room with their code, finishes the rest, and survives', async () => {
    const [huge, ...results] = await Promise.all([
      downloadVia(daemon.apiUrl, { url: `${origin.url}/huge` }),
      ...[...Array(FILES).keys()].map((i) => downloadVia(daemon.apiUrl, { url: `${origin.url}/f${i}` }))
    ])
    expect(huge.event, JSON.stringify(huge)).toBe('error')
    expect((huge as ErrorEvent).code).toBe('DFD_ERR_CACHE_FULL')
    let done = 0
    for (const [i, r] of results.entries()) {
      if (r.event === 'done') {
        done++
        expect((r as DoneEvent).sha256).toBe(sha256Hex(blobs.get(`/f${i}`)!))
      } else {
        expect((r as ErrorEvent).code, JSON.stringify(r)).toBe('DFD_ERR_CACHE_FULL')
      }
    }
    console.log(`cache pressure: ${done} of ${FILES} downloads finished, ${FILES - done} failed with DFD_ERR_CACHE_FULL, the oversized one failed`)
    expect(done).toBeGreaterThan(0)
    // Alive, and still serving: a later download evicts what is no longer in use.
    expect(daemon.process.proc.exitCode).toBeNull()
    const later = await downloadVia(daemon.apiUrl, { url: `${origin.url}/f${FILES}` })
    expect(later.event, JSON.stringify(later)).toBe('done')
    expect((later as DoneEvent).sha256).toBe(sha256Hex(blobs.get(`/f${FILES}`)!))
    expect(daemon.process.logs.filter((l) => l.includes('unhandled'))).toEqual([])
  })
})
