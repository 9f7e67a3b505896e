// The rollout simulation's clock and links, in process. Flows run in the group of the end
// whose share they run at (one event per group, bytes counted per flow since the share
// changed): every flow must end when it would with a rate and an event of its own, across
// starts, ends, and flows moving between groups as the shares change.

import { describe, expect, it } from 'vitest'

import { prng } from '@naiad/testkit'

import { Clock } from '../sim/events.ts'
import { netNode, Network } from '../sim/network.ts'

/** An origin, a seed and the hosts themselves serving 300 hosts, some with a slow uplink or downlink; flows start over 20 s. */
function transfers(groups: boolean): { done: number[]; net: Network } {
  const clock = new Clock()
  const net = new Network(clock, { groups })
  const random = prng(7)
  const origin = netNode('origin', { up: 1.25e9, down: 1.25e9 })
  const seed = netNode('seed', { up: 1.25e9, down: 1.25e9, cores: 1, sendCost: 1.14 / 2 ** 30, recvCost: 2.5 / 2 ** 30 })
  const hosts = Array.from({ length: 300 }, (_, i) => netNode(`h${i}`, { up: i % 5 === 0 ? 3e6 : 125e6, down: i % 7 === 0 ? 2e6 : 125e6, cores: 1, sendCost: 1.14 / 2 ** 30, recvCost: 4.14 / 2 ** 30 }))
  const done: number[] = []
  let n = 0
  for (let k = 0; k < 1200; k++) {
    const to = hosts[Math.floor(random() * hosts.length)]
    const peer = hosts[Math.floor(random() * hosts.length)]
    const from = k % 3 === 0 ? seed : k % 3 === 1 || peer === to ? origin : peer
    const bytes = (1 + Math.floor(random() * 32)) << 20
    const id = n++
    done.push(NaN)
    clock.at(random() * 20, () => net.send(from, to, bytes, () => { done[id] = clock.now }))
  }
  clock.run(3600)
  return { done, net }
}

describe('rollout simulation: links', () => {
  it('ends every flow at the same time in groups as with a rate and event of its own', () => {
    const { done: grouped, net } = transfers(true)
    const { done: own } = transfers(false)
    // Flows went into groups, and some moved to the other end's before their end.
    expect(net.joined).toBeGreaterThan(1000)
    expect(net.left).toBeGreaterThan(25)
    expect(grouped.every(Number.isFinite)).toBe(true)
    expect(own.every(Number.isFinite)).toBe(true)
    let worst = 0
    for (let i = 0; i < own.length; i++) worst = Math.max(worst, Math.abs(grouped[i] - own[i]) / own[i])
    // Only the sums' rounding differs.
    expect(worst).toBeLessThan(1e-9)
  })

  it('runs events in time order, ties in the order they were set, with timers cancelled and moved', () => {
    const clock = new Clock()
    const ran: string[] = []
    const a = clock.at(5, () => ran.push('a'))
    clock.at(3, () => ran.push('b'))
    const c = clock.at(3, () => ran.push('c'))
    clock.at(1, () => ran.push('d'))
    const e = clock.at(9, () => ran.push('e'))
    clock.cancel(a)
    clock.move(c, 1) // after d: moved now, as if set again
    clock.move(e, 3) // after b
    clock.cancel(a) // twice: nothing
    clock.at(2, () => {
      ran.push('f')
      clock.move(a, 4) // a cancelled timer is queued again
    })
    clock.run(100)
    expect(ran).toEqual(['d', 'c', 'f', 'b', 'e', 'a'])
    // e's first time: a stale entry at 9 would have run there (the clock keeps that end).
    expect(clock.now).toBe(9)
  })

  it('ends a run at its limit where a cancelled timer before the limit would have left the clock', () => {
    const clock = new Clock()
    clock.at(1, () => {})
    const t = clock.at(2, () => {})
    clock.at(1.5, () => clock.cancel(t))
    clock.run(10)
    expect(clock.now).toBe(2)
    // Past the limit it would not have run.
    const late = new Clock()
    late.at(1, () => {})
    late.cancel(late.at(20, () => {}))
    late.run(10)
    expect(late.now).toBe(1)
  })
})
