// Peers that die, lie or crawl: a daemon killed mid-swarm, one that serves corrupted piece
// bytes, one that serves them very slowly. The other downloads finish with the right bytes
// and in good time either way.

import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import {
  downloadVia, getJson, metric, startDaemon, startSupernode, TestOrigin, writeBlob,
  type DaemonHandle, type DoneEvent, type SupernodeHandle
} from '@naiad/testkit'

const MISBEHAVING_DAEMON = fileURLToPath(new URL('./fixtures/misbehaving-daemon.ts', import.meta.url))
const SIZE = 128 * 1024 * 1024

describe('peer failures', () => {
  let dir: string
  let origin: TestOrigin
  let sn: SupernodeHandle
  let daemons: DaemonHandle[]
  let expected: string
  let url: string

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'naiad-failures-'))
    expected = await writeBlob(join(dir, 'blob'), SIZE, 'failures')
    origin = await new TestOrigin().start()
    origin.files.set('/blob', { path: join(dir, 'blob') })
    url = `${origin.url}/blob`
    sn = await startSupernode(join(dir, 'sn'))
    daemons = []
  })

  afterEach(async () => {
    await Promise.all(daemons.map((d) => d.process.stop()))
    await sn.process.stop()
    await origin.stop()
    await rm(dir, { recursive: true, force: true })
  })

  it('finishes every other download when one daemon is killed mid-swarm', async () => {
    daemons = await Promise.all([1, 2, 3, 4].map((i) => startDaemon(join(dir, `d${i}`), sn.url)))
    const victim = daemons[0]
    let killed = false
    const downloads = daemons.map((d) => downloadVia(d.apiUrl, { url }, (p) => {
      if (d === victim && !killed && p.completedBytes > SIZE * 0.3) {
        killed = true
        victim.process.kill('SIGKILL').catch(() => {})
      }
    }).catch((err: unknown) => ({ event: 'error' as const, code: 'KILLED', message: String(err) })))
    const results = await Promise.all(downloads)
    expect(killed).toBe(true)
    for (const r of results.slice(1)) {
      expect(r.event, JSON.stringify(r)).toBe('done')
      expect((r as DoneEvent).sha256).toBe(expected)
    }
    expect(origin.bytesServed('/blob')).toBeLessThanOrEqual(1.1 * SIZE)
  })

  it('blocks a daemon that serves corrupted pieces after its first bad piece', async () => {
    const liar = await startDaemon(join(dir, 'liar'), sn.url, { bin: MISBEHAVING_DAEMON, env: { MISBEHAVE: 'corrupt' } })
    daemons.push(liar)
    const warm = await downloadVia(liar.apiUrl, { url })
    expect(warm.event).toBe('done')

    const honest = await Promise.all([1, 2].map((i) => startDaemon(join(dir, `h${i}`), sn.url)))
    daemons.push(...honest)
    const results = await Promise.all(honest.map((d) => downloadVia(d.apiUrl, { url })))
    for (const r of results) {
      expect(r.event, JSON.stringify(r)).toBe('done')
      expect((r as DoneEvent).sha256).toBe(expected)
    }

    // Each honest daemon asked the liar at most for what it had in flight when the first
    // bad piece arrived (per-parent limit 3), and never again afterwards.
    let detected = 0
    for (const d of honest) {
      const bad = await metric(d.apiUrl, 'naiad_piece_failures_total', { code: 'DFD_ERR_PIECE_DIGEST' })
      expect(bad).toBeLessThanOrEqual(3)
      detected += bad
    }
    expect(detected).toBeGreaterThan(0)

    // The scheduler heard about it: the liar is blocked for those who caught it and has bad pieces on record.
    const taskId = (results[0] as DoneEvent).taskId
    const task = await getJson<{ peers: Array<{ hostId: string; blocked: string[] }> }>(`${sn.url}/api/v1/tasks/${taskId}`)
    const blockers = task.peers.filter((p) => p.blocked.includes(liar.peerId))
    expect(blockers.length).toBeGreaterThan(0)
    const hosts = await getJson<Array<{ id: string; badPieces: number }>>(`${sn.url}/api/v1/peers`)
    expect(hosts.find((h) => h.id === liar.peerId)?.badPieces).toBeGreaterThan(0)
  })

  it('abandons pieces a slow parent serves and fetches them elsewhere', async () => {
    // Every read of the crawler takes 20 s: a 4 MiB piece would take minutes from it.
    const crawler = await startDaemon(join(dir, 'crawler'), sn.url, { bin: MISBEHAVING_DAEMON, env: { MISBEHAVE: 'slow', SLOW_MS: '20000' } })
    daemons.push(crawler)
    expect((await downloadVia(crawler.apiUrl, { url })).event).toBe('done')

    const honest = await startDaemon(join(dir, 'h1'), sn.url)
    daemons.push(honest)
    const started = Date.now()
    const r = await downloadVia(honest.apiUrl, { url })
    expect(r.event, JSON.stringify(r)).toBe('done')
    expect((r as DoneEvent).sha256).toBe(expected)
    expect((r as DoneEvent).fromOrigin).toBe(0)
    // Without abandoning slow pieces this would wait for the piece timeout (30 s) or longer.
    expect(Date.now() - started).toBeLessThan(20_000)
    const hosts = await getJson<Array<{ id: string; failedPieces: number }>>(`${sn.url}/api/v1/peers`)
    // The crawler holds every piece and was asked for some: the daemon gave up on them and told the scheduler.
    expect(await metric(honest.apiUrl, 'naiad_piece_failures_total', { code: 'DFD_ERR_PIECE_SLOW' })).toBeGreaterThan(0)
    expect(hosts.find((h) => h.id === crawler.peerId)?.failedPieces).toBeGreaterThan(0)
  })
})
