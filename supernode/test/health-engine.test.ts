// The remedy ladder's timing rules on a clock the test moves: escalation, recovery, silent
// hosts under the breaker, heal without a control service. The end-to-end behaviour with
// real daemons is in health.test.ts; these are the paths too slow to wait for there.

import Database from 'better-sqlite3'
import { describe, expect, it } from 'vitest'
import { createLogger, type HealthFacts } from '@naiad/proto'

import { HealthEngine } from '../src/plugins/health/engine.ts'
import { migrate } from '../src/database/migrations.ts'
import { SqliteSql } from '../src/database/sql.ts'
import { HealthEventStore } from '../src/plugins/health/event-store.ts'
import { readHealthSettings } from '../src/plugins/health/settings.ts'

const healthy: HealthFacts = {
  diskFreeBytes: 1e10, diskFreeRatio: 0.5, samples: 20, pieceFailureRate: 0, uploadSamples: 0, uploadErrorRate: 0,
  meanPieceCostMs: 10, clockOffsetMs: 0, clockRttMs: 1, fuseDevice: true, fusermount: true, windowMs: 60_000
}
const failing: HealthFacts = { ...healthy, pieceFailureRate: 0.8 }

async function setup(raw: Record<string, unknown>, heal?: (id: string) => Promise<unknown>, db = new Database(':memory:'), start = 1_000_000) {
  let now = start
  const sql = new SqliteSql(db)
  await migrate(sql)
  const events = new HealthEventStore(sql)
  const engine = new HealthEngine({
    settings: readHealthSettings(raw),
    events,
    logger: createLogger('test', 'silent'),
    isGone: () => false,
    schedulerFacts: () => ({}),
    heal,
    now: () => now
  })
  await engine.restore()
  const tick = async (ms: number): Promise<void> => { now += ms; await engine.evaluate() }
  const decisions = async (): Promise<string[]> => (await events.list()).map((e) => `${e.host}:${e.decision}:${e.action}`)
  return { engine, tick, decisions, events, now: () => now }
}

describe('health engine', () => {
  it('heals, degrades, isolates while the rule holds, and recovers after it stayed false', async () => {
    const healed: string[] = []
    const { engine, tick, decisions, events } = await setup({
      rules: [{ name: 'bad', when: 'pieceFailureRate > 0.3', action: 'heal' }],
      escalateAfter: '10s', recoverAfter: '30s', staleAfter: '1h', forgetAfter: '2h', remedies: { max: 10, window: '1m' }, breaker: { minHosts: 10 }
    }, async (id) => { healed.push(id); return { dropped: [] } })
    engine.report('a', failing)
    await tick(1000)
    await new Promise((r) => setImmediate(r))
    expect(healed).toEqual(['a'])
    await tick(9000)
    expect(engine.levelOf('a')).toBe('healthy')
    await tick(1000)
    expect(engine.levelOf('a')).toBe('degraded')
    await tick(10_000)
    expect(engine.levelOf('a')).toBe('isolated')
    await tick(60_000)
    expect(await decisions()).toEqual(['a:applied:heal', 'a:heal-done:heal', 'a:applied:degrade', 'a:applied:isolate'])
    // Healthy facts: back only after recoverAfter.
    engine.report('a', healthy)
    await tick(1000)
    await tick(29_000)
    expect(engine.levelOf('a')).toBe('isolated')
    await tick(1000)
    expect(engine.levelOf('a')).toBe('healthy')
    expect((await events.list()).at(-1)).toMatchObject({ decision: 'recovered', reason: 'no rule held for 30 s (was isolated)' })
  })

  it('counts silent hosts against the breaker and never remedies them', async () => {
    const { engine, tick, decisions } = await setup({
      rules: [{ name: 'bad', when: 'pieceFailureRate > 0.3', action: 'isolate', for: '10s' }],
      staleAfter: '5s', breaker: { maxUnhealthyPercent: 40, minHosts: 3, closeAfter: '2s' }
    })
    for (const id of ['a', 'b', 'c', 'd']) engine.report(id, healthy)
    await tick(1000)
    // c and d fall silent (a partition, say); a keeps reporting but fails.
    for (let i = 0; i < 12; i++) {
      engine.report('a', failing)
      engine.report('b', healthy)
      await tick(1000)
    }
    expect(await decisions()).toEqual([':breaker-open:', 'a:suppressed:isolate'])
    expect(engine.levelOf('c')).toBe('healthy')
    // They come back: the breaker closes once the count stayed under the limit for 2 s, and only a is isolated.
    for (let i = 0; i < 3; i++) {
      for (const id of ['b', 'c', 'd']) engine.report(id, healthy)
      engine.report('a', failing)
      await tick(1000)
      if (i < 2) expect(engine.breakerState.open).toBe(true)
    }
    expect(await decisions()).toEqual([':breaker-open:', 'a:suppressed:isolate', ':breaker-close:', 'a:applied:isolate'])
  })

  it('forgets hosts silent past forgetAfter, so dead nodes do not hold the breaker open', async () => {
    const { engine, tick, decisions } = await setup({
      rules: [{ name: 'bad', when: 'pieceFailureRate > 0.3', action: 'isolate' }],
      staleAfter: '5s', forgetAfter: '30s', breaker: { maxUnhealthyPercent: 40, minHosts: 3, closeAfter: '0s' }
    })
    for (const id of ['a', 'b', 'c', 'd', 'e']) engine.report(id, healthy)
    // d and e die: 2 of 5 silent is 40 %, not over the limit; a then fails too (3 of 5).
    for (let i = 0; i < 40; i++) {
      for (const id of ['b', 'c']) engine.report(id, healthy)
      engine.report('a', i < 10 ? healthy : failing)
      await tick(1000)
    }
    expect(await decisions()).toEqual([':breaker-open:', 'a:suppressed:isolate', ':breaker-close:', 'a:applied:isolate'])
    expect([...engine.hosts.keys()].sort()).toEqual(['a', 'b', 'c'])
  })

  it('keeps remedies in force and the budget they used across a restart', async () => {
    const db = new Database(':memory:')
    const raw = {
      rules: [{ name: 'bad', when: 'pieceFailureRate > 0.3', action: 'isolate' }],
      remedies: { max: 2, window: '1m' }, breaker: { minHosts: 10 }, recoverAfter: '1h'
    }
    const first = await setup(raw, undefined, db)
    first.engine.report('a', failing)
    await first.tick(1000)
    expect(first.engine.levelOf('a')).toBe('isolated')
    // A new supernode process on the same database, 10 s later.
    const second = await setup(raw, undefined, db, first.now() + 10_000)
    expect(second.engine.levelOf('a')).toBe('isolated')
    for (const id of ['b', 'c']) second.engine.report(id, failing)
    await second.tick(1000)
    // One slot of two was used before the restart: b gets it, c waits.
    expect(['b', 'c'].map((id) => second.engine.levelOf(id))).toEqual(['isolated', 'healthy'])
    expect((await second.decisions()).slice(-1)[0]).toBe('c:suppressed:isolate')
  })

  it('passes over heal without a control service, so escalation goes on', async () => {
    const { engine, tick, events } = await setup({
      rules: [{ name: 'bad', when: 'pieceFailureRate > 0.3', action: 'heal' }], escalateAfter: '5s', breaker: { minHosts: 10 }
    })
    engine.report('a', failing)
    await tick(1000)
    await tick(5000)
    expect(engine.levelOf('a')).toBe('degraded')
    expect((await events.list()).map((e) => [e.decision, e.action, e.reason.replace(/.*; /, '')])).toEqual([
      ['suppressed', 'heal', 'suppressed: no control service to send heal with'],
      ['applied', 'degrade', 'escalation: rule bad (pieceFailureRate > 0.3) still holds 5 s after heal']
    ])
  })
})
