// Rendezvous ownership of tasks over the live supernodes: every caller computes the same
// owner from the same set whatever its order, the tasks spread evenly, and a member leaving
// or joining moves only the tasks it loses or gains.

import { createHash } from 'node:crypto'

import { describe, expect, it } from 'vitest'

import { ownerOf, ownerWeight } from '../src/index.ts'

const members = (n: number): string[] => Array.from({ length: n }, (_, i) => `12D3KooWsupernode${i}`)
const tasks = Array.from({ length: 3000 }, (_, i) => createHash('sha256').update(`task ${i}`).digest('hex'))

describe('ownerOf', () => {
  it('is the member of highest weight, the same whatever the order of the set', () => {
    const set = members(5)
    for (const t of tasks.slice(0, 200)) {
      const owner = ownerOf(t, set)!
      expect(set.map((m) => ownerWeight(m, t)).every((w) => w <= ownerWeight(owner, t))).toBe(true)
      expect(ownerOf(t, [...set].reverse())).toBe(owner)
      expect(ownerOf(t, new Set(set))).toBe(owner)
    }
    expect(ownerOf(tasks[0], [])).toBeUndefined()
    expect(ownerOf(tasks[0], ['only'])).toBe('only')
  })

  it('is stable: fixed weights, so a daemon and a supernode agree', () => {
    // The weight is the first 8 bytes of SHA-256(member, NUL, task): a change here moves every
    // task in a running cluster whose daemons and supernodes run different versions.
    const t = tasks[0]
    expect(ownerWeight('a', t)).toBe(createHash('sha256').update(`a\0${t}`).digest().readBigUInt64BE(0))
  })

  it('spreads tasks evenly', () => {
    for (const n of [2, 3, 5]) {
      const counts = new Map<string, number>()
      for (const t of tasks) {
        const o = ownerOf(t, members(n))!
        counts.set(o, (counts.get(o) ?? 0) + 1)
      }
      const fair = tasks.length / n
      for (const c of counts.values()) expect(Math.abs(c - fair) / fair).toBeLessThan(0.1)
    }
  })

  it('moves only the leaving member\'s tasks, and on a join only the tasks the new member takes', () => {
    const before = members(4)
    const after = before.filter((m) => m !== before[2])
    let moved = 0
    for (const t of tasks) {
      const was = ownerOf(t, before)!
      const now = ownerOf(t, after)!
      if (was !== before[2]) expect(now).toBe(was)
      else moved++
    }
    expect(moved / tasks.length).toBeGreaterThan(0.2)
    expect(moved / tasks.length).toBeLessThan(0.3)

    // It comes back: exactly the tasks it had return to it.
    for (const t of tasks) {
      const now = ownerOf(t, after)!
      const back = ownerOf(t, before)!
      if (back !== before[2]) expect(back).toBe(now)
    }
  })
})
