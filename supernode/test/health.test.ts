// The health plugin against real processes: daemons measure their own facts and push them to
// a real supernode, which judges them. A daemon whose disk fails every read keeps failing the
// pieces it is asked for: it is degraded, then isolated, within the remedy budget. Half the
// daemons losing fusermount at once trips the breaker, which holds every remedy back.

import { constants } from 'node:fs'
import { access, mkdir, mkdtemp, rm, symlink, unlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { delimiter, join } from 'node:path'
import { fileURLToPath } from 'node:url'

import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import {
  downloadVia, getJson, startDaemon, startSupernode, TestOrigin, waitFor, writeBlob,
  type DaemonHandle, type DoneEvent, type SupernodeHandle
} from '@naiad/testkit'

const MISBEHAVING_DAEMON = fileURLToPath(new URL('../../dfdaemon/test/fixtures/misbehaving-daemon.ts', import.meta.url))
const MiB = 1024 * 1024

interface HealthEvent { id: number; at: number; host: string; rule: string; action: string; decision: string; reason: string; facts: Record<string, unknown> | null }
interface HostView { id: string; state: string; step: string; stale: boolean; firing: Array<{ rule: string }>; facts: Record<string, number | boolean> }
interface HostsView { breaker: { open: boolean; unhealthy: number; population: number }; hosts: HostView[] }

/** A YAML document from plain data: JSON is YAML, and keeps the test free of a YAML writer. */
async function writeConfig(path: string, config: unknown): Promise<string> {
  await writeFile(path, JSON.stringify(config, null, 2))
  return path
}

async function findFusermount(): Promise<string> {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    for (const name of ['fusermount3', 'fusermount']) {
      const p = join(dir, name)
      try {
        await access(p, constants.X_OK)
        return p
      } catch { /* next */ }
    }
  }
  throw new Error('fusermount is not installed (apt package fuse); the breaker test needs it')
}

describe('health plugin', () => {
  let dir: string
  let sn: SupernodeHandle | undefined
  let daemons: DaemonHandle[]
  let origin: TestOrigin | undefined

  const hosts = (): Promise<HostsView> => getJson<HostsView>(`${sn!.url}/api/v1/health/hosts`)
  const servedFailures = async (id: string): Promise<number> =>
    (await getJson<Array<{ id: string; failedPieces: number }>>(`${sn!.url}/api/v1/peers`)).find((h) => h.id === id)?.failedPieces ?? -1
  const events = (): Promise<HealthEvent[]> => getJson<HealthEvent[]>(`${sn!.url}/api/v1/health/events`)
  const daemonConfig = (): Promise<string> => writeConfig(join(dir, 'dfdaemon.yaml'), {
    plugins: ['metrics', 'health'],
    'plugin-config': { health: { interval: '1s', window: '10m' } }
  })

  let t0 = 0
  /** HEALTH_TEST_TIMES=1 prints where a test spends its time. */
  const mark = (what: string): void => { if (process.env.HEALTH_TEST_TIMES === '1') console.log(`${((Date.now() - t0) / 1000).toFixed(1)} s ${what}`) }

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'naiad-health-'))
    daemons = []
    t0 = Date.now()
  })

  afterEach(async () => {
    await Promise.all(daemons.map((d) => d.process.stop()))
    await sn?.process.stop()
    await origin?.stop()
    sn = undefined
    origin = undefined
    await rm(dir, { recursive: true, force: true })
  })

  it('degrades then isolates a daemon that keeps failing pieces, one remedy per window', async () => {
    const WINDOW_MS = 8000
    const config = await writeConfig(join(dir, 'supernode.yaml'), {
      plugins: ['metrics', 'health'],
      'plugin-config': {
        health: {
          rules: [{ name: 'failing-uploads', when: 'uploadErrorRate > 0.5 and uploadSamples >= 3', action: 'degrade' }],
          evaluateInterval: '500ms',
          escalateAfter: '2s',
          recoverAfter: '10m',
          remedies: { max: 1, window: `${WINDOW_MS}ms` },
          breaker: { maxUnhealthyPercent: 40, minHosts: 3 }
        }
      }
    })
    sn = await startSupernode(join(dir, 'sn'), { args: ['--config', config] })
    const expected = await writeBlob(join(dir, 'blob'), 32 * MiB, 'health')
    origin = await new TestOrigin().start()
    origin.files.set('/blob', { path: join(dir, 'blob') })
    const url = `${origin.url}/blob`
    const dconf = await daemonConfig()

    // The sick daemon downloads honestly, then its disk fails every read of what it holds.
    const sick = await startDaemon(join(dir, 'sick'), sn.url, { bin: MISBEHAVING_DAEMON, env: { MISBEHAVE: 'eio' }, args: ['--config', dconf] })
    daemons.push(sick)
    expect((await downloadVia(sick.apiUrl, { url })).event).toBe('done')
    mark('sick daemon downloaded')
    const honest = await Promise.all([1, 2].map((i) => startDaemon(join(dir, `h${i}`), sn!.url, { args: ['--config', dconf] })))
    daemons.push(...honest)
    for (const r of await Promise.all(honest.map((d) => downloadVia(d.apiUrl, { url })))) {
      expect(r.event, JSON.stringify(r)).toBe('done')
      expect((r as DoneEvent).sha256).toBe(expected)
    }

    mark('honest daemons downloaded')
    // The sick daemon measured its own failures and the supernode walked it down the ladder.
    await waitFor(async () => (await events()).some((e) => e.host === sick.peerId && e.action === 'isolate' && e.decision === 'applied'), 90_000, 'the sick daemon to be isolated')
    mark('isolated')
    const log = await events()
    const mine = log.filter((e) => e.host === sick.peerId)
    const steps = mine.map((e) => `${e.decision}:${e.action}`)
    expect(steps.slice(0, 3), JSON.stringify(mine, null, 1)).toEqual(['applied:degrade', 'suppressed:isolate', 'applied:isolate'])
    const [degraded, held, isolated] = mine
    expect(degraded.rule).toBe('failing-uploads')
    expect(degraded.reason).toContain('uploadErrorRate > 0.5')
    expect(degraded.facts?.uploadErrorRate as number).toBeGreaterThan(0.5)
    expect(degraded.facts?.uploadSamples as number).toBeGreaterThanOrEqual(3)
    expect(held.reason).toMatch(/risk limit of 1 remedies per 8 s/)
    expect(isolated.reason).toMatch(/^escalation: rule failing-uploads/)
    // Within the budget: never two remedies in one window, anywhere in the cluster.
    const applied = log.filter((e) => e.decision === 'applied')
    for (let i = 1; i < applied.length; i++) expect(applied[i].at - applied[i - 1].at).toBeGreaterThanOrEqual(WINDOW_MS)
    expect(isolated.at - degraded.at).toBeGreaterThanOrEqual(WINDOW_MS)
    // Only the sick daemon was touched; the breaker never opened (1 of 3 hosts).
    expect(log.filter((e) => e.host !== '' && e.host !== sick.peerId)).toEqual([])
    expect(log.some((e) => e.decision === 'breaker-open')).toBe(false)

    // Facts are the daemons' own measurements: disk, FUSE, and a clock offset from round trips on one machine.
    const view = await hosts()
    expect(view.hosts.map((h) => h.id).sort()).toEqual([sick.peerId, ...honest.map((d) => d.peerId)].sort())
    for (const h of view.hosts) {
      expect(h.state).toBe(h.id === sick.peerId ? 'isolated' : 'healthy')
      expect(h.facts.diskFreeBytes as number).toBeGreaterThan(0)
      // Both clocks are this machine's: NTP's formula bounds the measured offset by half the round trip.
      expect(h.facts.clockRttMs as number).toBeGreaterThanOrEqual(0)
      expect(h.facts.clockSkewMs as number).toBeLessThanOrEqual((h.facts.clockRttMs as number) / 2 + 1)
    }
    const sickFacts = view.hosts.find((h) => h.id === sick.peerId)!.facts
    expect(sickFacts.uploadErrorRate).toBe(1)
    const own = await getJson<{ facts: { uploadErrorRate: number; uploadSamples: number } }>(`${sick.apiUrl}/api/v1/health`)
    expect(own.facts.uploadErrorRate).toBe(1)

    // Isolated means never a parent: a newcomer, after the sick host announced itself again
    // (which clears the scheduler's own failure count), never asks it for a piece.
    await new Promise((r) => setTimeout(r, 6000))
    const failedBefore = await servedFailures(sick.peerId)
    // The honest daemons' failed fetches from it are on the scheduler's record.
    expect(failedBefore).toBeGreaterThan(0)
    const late = await startDaemon(join(dir, 'late'), sn.url, { args: ['--config', dconf] })
    daemons.push(late)
    const r = await downloadVia(late.apiUrl, { url })
    expect(r.event, JSON.stringify(r)).toBe('done')
    expect(await servedFailures(sick.peerId)).toBe(failedBefore)
    mark('late daemon downloaded')
  }, 300_000)

  it('heals a daemon that serves corrupt pieces: it re-verifies its cache and drops what is bad', async () => {
    const config = await writeConfig(join(dir, 'supernode.yaml'), {
      plugins: ['metrics', 'health'],
      'plugin-config': {
        health: {
          // The liar cannot see its own corruption; the peers that caught it told the scheduler.
          rules: [{ name: 'serves-corrupt-pieces', when: 'servedBadPieces >= 1', action: 'heal' }],
          evaluateInterval: '500ms',
          escalateAfter: '10m',
          breaker: { maxUnhealthyPercent: 60, minHosts: 3 }
        }
      }
    })
    sn = await startSupernode(join(dir, 'sn'), { args: ['--config', config] })
    const expected = await writeBlob(join(dir, 'blob'), 16 * MiB, 'heal')
    origin = await new TestOrigin().start()
    origin.files.set('/blob', { path: join(dir, 'blob') })
    const url = `${origin.url}/blob`
    const dconf = await daemonConfig()

    const liar = await startDaemon(join(dir, 'liar'), sn.url, { bin: MISBEHAVING_DAEMON, env: { MISBEHAVE: 'corrupt' }, args: ['--config', dconf] })
    daemons.push(liar)
    const warm = await downloadVia(liar.apiUrl, { url })
    expect(warm.event).toBe('done')
    const taskId = (warm as DoneEvent).taskId
    const honest = await Promise.all([1, 2].map((i) => startDaemon(join(dir, `h${i}`), sn!.url, { args: ['--config', dconf] })))
    daemons.push(...honest)
    for (const r of await Promise.all(honest.map((d) => downloadVia(d.apiUrl, { url })))) {
      expect(r.event, JSON.stringify(r)).toBe('done')
      expect((r as DoneEvent).sha256).toBe(expected)
    }

    await waitFor(async () => (await events()).some((e) => e.host === liar.peerId && e.decision === 'heal-done'), 90_000, 'the heal to finish')
    const mine = (await events()).filter((e) => e.host === liar.peerId)
    expect(mine.map((e) => `${e.decision}:${e.action}`)).toEqual(['applied:heal', 'heal-done:heal'])
    expect(mine[0].reason).toContain('servedBadPieces >= 1')
    const result = (mine[1].facts as { result: { tasks: number; pieces: number; badPieces: number; dropped: string[] } }).result
    // Every piece reads back corrupt, so every one fails its digest and the task goes.
    expect(result).toMatchObject({ tasks: 1, pieces: 16, badPieces: 16, dropped: [taskId] }) // 16 MiB in 1 MiB pieces
    const own = await getJson<{ lastHeal: { dropped: string[] } }>(`${liar.apiUrl}/api/v1/health`)
    expect(own.lastHeal.dropped).toEqual([taskId])
    // The scheduler no longer offers the liar for the task, and the liar's cache no longer has it.
    const task = await getJson<{ peers: Array<{ hostId: string }> }>(`${sn.url}/api/v1/tasks/${taskId}`)
    expect(task.peers.map((p) => p.hostId)).not.toContain(liar.peerId)
    const again = await downloadVia(liar.apiUrl, { url })
    expect(again.event).toBe('done')
    expect((again as DoneEvent).cached).toBe(false)
  }, 300_000)

  it('opens the breaker when half the daemons turn unhealthy at once, and holds remedies back', async () => {
    const config = await writeConfig(join(dir, 'supernode.yaml'), {
      plugins: ['metrics', 'health'],
      'plugin-config': {
        health: {
          rules: [{ name: 'no-fusermount', when: 'not fusermount', action: 'isolate', for: '8s' }],
          evaluateInterval: '500ms',
          remedies: { max: 10, window: '1m' },
          breaker: { maxUnhealthyPercent: 40, minHosts: 3, closeAfter: '2s' }
        }
      }
    })
    sn = await startSupernode(join(dir, 'sn'), { args: ['--no-seed', '--config', config] })
    const fusermount = await findFusermount()
    const dconf = await daemonConfig()
    // Each daemon finds fusermount only through its own bin dir: removing the link takes FUSE
    // unmounting away from that daemon for real.
    const bins = [0, 1, 2, 3].map((i) => join(dir, `bin${i}`))
    for (const b of bins) {
      await mkdir(b)
      await symlink(fusermount, join(b, 'fusermount'))
    }
    daemons = await Promise.all(bins.map((b, i) => startDaemon(join(dir, `d${i}`), sn!.url, { args: ['--config', dconf], env: { PATH: b } })))
    await waitFor(async () => {
      const v = await hosts()
      return v.hosts.length === 4 && v.hosts.every((h) => h.facts.fusermount === true)
    }, 90_000, 'four daemons reporting fusermount')
    mark('four daemons reporting')

    await Promise.all([unlink(join(bins[0], 'fusermount')), unlink(join(bins[1], 'fusermount'))])
    const sick = [daemons[0].peerId, daemons[1].peerId]
    await waitFor(async () => (await events()).some((e) => e.decision === 'breaker-open'), 90_000, 'the breaker to open')
    mark('breaker open')
    // Both unhealthy daemons' rules come due (for: 8s) while the breaker is open: both held back.
    await waitFor(async () => (await events()).filter((e) => e.decision === 'suppressed').length >= 2, 90_000, 'the remedies to be held back')
    mark('remedies held back')
    let log = await events()
    const open = log.find((e) => e.decision === 'breaker-open')!
    expect(open.reason).toMatch(/^2 of 4 hosts unhealthy or silent \(50 % > 40 %\)/)
    expect(log.filter((e) => e.decision === 'applied')).toEqual([])
    const held = log.filter((e) => e.decision === 'suppressed')
    expect(held.map((e) => e.host).sort()).toEqual([...sick].sort())
    for (const e of held) {
      expect(e.rule).toBe('no-fusermount')
      expect(e.action).toBe('isolate')
      expect(e.reason).toMatch(/suppressed: breaker open \(2 of 4 hosts/)
      expect(e.facts?.fusermount).toBe(false)
    }
    const view = await hosts()
    expect(view.breaker.open).toBe(true)
    expect(view.hosts.every((h) => h.state === 'healthy')).toBe(true)
    expect(view.hosts.filter((h) => h.firing.length > 0).map((h) => h.id).sort()).toEqual([...sick].sort())

    // One daemon gets fusermount back: 1 of 4 is below the limit, the breaker closes (after
    // 2 s under it) and the remaining unhealthy daemon gets its remedy.
    await symlink(fusermount, join(bins[1], 'fusermount'))
    await waitFor(async () => (await events()).some((e) => e.decision === 'applied'), 90_000, 'a remedy after the breaker closed')
    mark('remedy after the breaker closed')
    log = await events()
    const close = log.find((e) => e.decision === 'breaker-close')!
    expect(close.reason).toMatch(/^1 of 4 hosts unhealthy or silent/)
    const applied = log.filter((e) => e.decision === 'applied')
    expect(applied.map((e) => [e.host, e.action])).toEqual([[sick[0], 'isolate']])
    expect(applied[0].id).toBeGreaterThan(close.id)
    expect((await hosts()).hosts.find((h) => h.id === sick[0])!.state).toBe('isolated')
  }, 300_000)
})
