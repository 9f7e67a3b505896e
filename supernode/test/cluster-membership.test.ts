// A supernode's view of its cluster: heartbeats to the shared store, the live set read back,
// each task's owner the same on every supernode, a clean stop leaving at once and a silent
// supernode dropped after the TTL; and the URL each one advertises to daemons.

import pino from 'pino'
import { describe, expect, it } from 'vitest'
import { ownerOf } from '@naiad/proto'

import { advertiseUrl, Cluster } from '../src/cluster/cluster.ts'
import { MemoryMembership } from '../src/cluster/membership.ts'
import { Scheduler } from '../src/scheduler/scheduler.ts'
import { checkOwner } from '../src/scheduler/service.ts'

const logger = pino({ level: 'silent' })
const tasks = Array.from({ length: 50 }, (_, i) => i.toString(16).padStart(64, 'a'))

/** Supernode a, started, in a store where b has beaten. */
async function aBesideB(): Promise<{ store: MemoryMembership; a: Cluster }> {
  const store = new MemoryMembership()
  const a = new Cluster(store, () => ({ id: 'a', apiUrl: 'http://a:8002', multiaddrs: [] }), { heartbeatMs: 60_000, ttlMs: 4_000, logger })
  await store.heartbeat({ id: 'b', apiUrl: 'http://b:8002', multiaddrs: [] })
  await a.start()
  return { store, a }
}

describe('cluster membership', () => {
  it('agrees on the live set and the owners; a stop leaves at once, a silent member goes after the TTL', async () => {
    let now = 1_000_000
    const store = new MemoryMembership(() => now)
    const make = (id: string): Cluster => new Cluster(store, () => ({ id, apiUrl: `http://${id}:8002`, multiaddrs: [] }), { heartbeatMs: 60_000, ttlMs: 4_000, logger })
    const [a, b, c] = [make('a'), make('b'), make('c')]
    // Alone before any beat: a cluster of one owns everything.
    expect(a.owns(tasks[0])).toBe(true)
    await a.start()
    await b.start()
    await c.start()
    // Each read the set when it beat: the last one to start sees all three; a beat more for the others.
    expect(c.live().map((m) => m.id)).toEqual(['a', 'b', 'c'])
    for (const x of [a, b]) await (x as unknown as { beat(): Promise<void> }).beat()
    for (const t of tasks) {
      const owner = ownerOf(t, ['a', 'b', 'c'])
      for (const x of [a, b, c]) expect(x.ownerOf(t).id).toBe(owner)
      expect([a, b, c].filter((x) => x.owns(t)).length).toBe(1)
    }

    await c.stop()
    await (a as unknown as { beat(): Promise<void> }).beat()
    expect(a.live().map((m) => m.id)).toEqual(['a', 'b'])

    // b goes silent (a crash: no leave); a keeps beating and drops it after the TTL.
    now += 3_000
    await (a as unknown as { beat(): Promise<void> }).beat()
    expect(a.live().map((m) => m.id)).toEqual(['a', 'b'])
    now += 2_000
    await (a as unknown as { beat(): Promise<void> }).beat()
    expect(a.live().map((m) => m.id)).toEqual(['a'])
    for (const t of tasks) expect(a.owns(t)).toBe(true)
    await a.stop()
    await b.stop()
  })

  it('keeps its last view while the store cannot be reached', async () => {
    const { store, a: cluster } = await aBesideB()
    expect(cluster.live().map((m) => m.id)).toEqual(['a', 'b'])
    store.heartbeat = async () => { throw new Error('database down') }
    await (cluster as unknown as { beat(): Promise<void> }).beat()
    expect(cluster.live().map((m) => m.id)).toEqual(['a', 'b'])
    await cluster.stop()
  })

  it('refuses to register a new task owned elsewhere, naming the owner, but keeps the tasks it holds', async () => {
    const { a } = await aBesideB()
    const none = (): void => {}
    const scheduler = new Scheduler({ hostTtlMs: 30_000 }, { markTask: none, markPieces: none, markPeer: none, deletePeer: none, markHost: none })
    const mine = tasks.find((t) => ownerOf(t, ['a', 'b']) === 'a')!
    const theirs = tasks.filter((t) => ownerOf(t, ['a', 'b']) === 'b')
    expect(() => checkOwner(scheduler, a, mine)).not.toThrow()
    try {
      checkOwner(scheduler, a, theirs[0])
      expect.unreachable('a task owned by b was accepted')
    } catch (err) {
      expect((err as { code: string }).code).toBe('SN_ERR_NOT_OWNER')
      expect((err as Error).message).toContain('http://b:8002')
    }
    // A task it holds (moved here while its owner was gone) stays welcome.
    scheduler.registerTask('host', { taskId: theirs[1], url: 'http://origin.test/x', headers: [], digest: '', range: '', filter: [] })
    expect(() => checkOwner(scheduler, a, theirs[1])).not.toThrow()
    await a.stop()
  })

  it('works out its own advertisement for the heartbeat only, not for every ownership check', async () => {
    // self() reads libp2p's addresses; owns() runs on every registerTask.
    let asked = 0
    const store = new MemoryMembership()
    const a = new Cluster(store, () => { asked++; return { id: 'a', apiUrl: 'http://a:8002', multiaddrs: [] } }, { heartbeatMs: 60_000, ttlMs: 4_000, logger })
    await a.start()
    const beats = asked
    for (const t of tasks) expect(a.owns(t)).toBe(true)
    expect(a.selfId).toBe('a')
    expect(asked - beats).toBeLessThanOrEqual(1)
    await a.stop()
  })

  it('advertises the configured URL, else the listen address, with a dialable host in place of 0.0.0.0', () => {
    expect(advertiseUrl('http://sn-0.naiad:8002/', 'http://0.0.0.0:8002', [])).toBe('http://sn-0.naiad:8002')
    expect(advertiseUrl('', 'http://127.0.0.1:41234', ['/ip4/127.0.0.1/tcp/8003'])).toBe('http://127.0.0.1:41234')
    expect(advertiseUrl(undefined, 'http://0.0.0.0:8002', ['/ip4/127.0.0.1/tcp/8003', '/ip4/10.1.2.3/tcp/8003'])).toBe('http://10.1.2.3:8002')
    expect(advertiseUrl(undefined, 'http://[::]:8002', ['/ip6/fd00::5/tcp/8003'])).toBe('http://[fd00::5]:8002')
    expect(advertiseUrl(undefined, '', [])).toBe('')
  })
})
