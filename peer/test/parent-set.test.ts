// A download's parents on their own: the scheduler's lists taken in (parents without a data
// channel left out, gone ones dropped once idle), cool-downs after failures, a parent that
// sent a corrupt piece blocked for every task of the node, and when every parent counts as
// unreachable (only once the scheduler answered again since one was found so).

import { describe, expect, it } from 'vitest'
import type { Parent } from '@naiad/proto'

import { dataTarget, ParentSet } from '../src/download/parent-set.ts'

function named(id: string, over: Partial<Parent> = {}): Parent {
  return { id, multiaddrs: ['/ip4/10.0.0.1/tcp/4001'], bitmap: new Uint8Array([0b101]), score: 1, isSeed: false, dataPort: 4002, dataTransport: '', ...over }
}
const T0 = 1_000_000

describe('parent set', () => {
  it('finds a parent\'s data channel from its first TCP address, TLS unless it says plain TCP', () => {
    expect(dataTarget(named('a'))).toEqual({ peerId: 'a', host: '10.0.0.1', port: 4002, transport: 'tls' })
    expect(dataTarget(named('a', { multiaddrs: ['/ip4/1.2.3.4/udp/1/quic', '/ip6/::1/tcp/1'], dataTransport: 'tcp' }))).toEqual({ peerId: 'a', host: '::1', port: 4002, transport: 'tcp' })
    expect(dataTarget(named('a', { dataPort: 0 }))).toBeUndefined()
    expect(dataTarget(named('a', { multiaddrs: ['/dns4/x/tcp/1'] }))).toBeUndefined()
  })

  it('takes the scheduler\'s lists: keeps what it learned of a parent, drops one no longer named once idle', () => {
    const set = new ParentSet(new Set())
    set.update([named('a'), named('b'), named('no-channel', { dataPort: 0 })])
    expect([...set.all()].map((p) => p.id)).toEqual(['a', 'b'])
    const a = set.get('a')!
    a.failures = 1
    a.inflight = 1
    set.update([named('b', { bitmap: new Uint8Array([0b111]) })])
    // a is busy: it stays until its fetch ends; b's bitmap is the new one.
    expect(set.get('a')).toBe(a)
    expect(set.get('b')!.bitmap.count()).toBe(3)
    a.inflight = 0
    set.update([named('b'), named('a')])
    expect(set.get('a')!.failures).toBe(1)
    set.update([named('b')])
    expect(set.get('a')).toBeUndefined()
  })

  it('cools a failing parent down, longer each time, and drops it after three failures', () => {
    const set = new ParentSet(new Set())
    set.update([named('a')])
    const a = set.get('a')!
    set.failed(a, T0)
    expect(a.coolUntil).toBe(T0 + 500)
    expect(set.usable(T0 + 499)).toEqual([])
    expect(set.usable(T0 + 500)).toEqual([a])
    set.failed(a, T0)
    expect(a.coolUntil).toBe(T0 + 1000)
    set.succeeded(a)
    expect(a.failures).toBe(0)
    for (let i = 0; i < 3; i++) set.failed(a, T0)
    expect(set.get('a')).toBeUndefined()
  })

  it('blocks a parent that sent a corrupt piece, for every task sharing the node\'s list', () => {
    const bad = new Set<string>()
    const one = new ParentSet(bad)
    const other = new ParentSet(bad)
    one.update([named('a'), named('b')])
    one.block('a')
    other.update([named('a'), named('b')])
    expect(one.usable(T0).map((p) => p.id)).toEqual(['b'])
    expect([...other.all()].map((p) => p.id)).toEqual(['b'])
  })

  it('counts every parent unreachable only once the scheduler answered again since one was found so', () => {
    const set = new ParentSet(new Set())
    // Nobody named (a fresh task, or just after a failover) is not "all unreachable".
    expect(set.unreachableSinceAsked()).toBe(false)
    set.update([named('a')])
    set.unreachable(set.get('a')!)
    expect(set.allUnreachable()).toBe(true)
    expect(set.unreachableSinceAsked()).toBe(false)
    set.update([named('a')])
    expect(set.unreachableSinceAsked()).toBe(true)
    // A piece it serves clears it.
    set.succeeded(set.get('a')!)
    expect(set.unreachableSinceAsked()).toBe(false)
  })
})
