// The piece planner on its own: which piece to ask which parent for, as a pure function of
// what this peer has, what is in flight and what each parent holds.

import { describe, expect, it } from 'vitest'

import { PiecePlanner, planPieces, planTurn, SOURCE_SHARE, type PlanInput, type PlanParent, type TurnInput, type TurnParent } from '../src/download/planner.ts'

function parent(id: string, pieces: number[], options: Partial<Omit<PlanParent, 'id' | 'has'>> = {}): PlanParent {
  const held = new Set(pieces)
  return { id, has: (n) => held.has(n), isSource: false, inflight: 0, limit: 3, ...options }
}

interface Given extends Partial<Pick<PlanInput, 'pieceCount' | 'slots' | 'random'>> {
  have?: number[]
  inflight?: number[]
  /** Pieces whose digest the source published; all of them unless given. */
  published?: number[]
}

function input(parents: PlanParent[], options: Given = {}): PlanInput {
  const have = new Set(options.have ?? [])
  const inflight = new Set(options.inflight ?? [])
  const published = new Set(options.published ?? [...Array(Math.max(0, options.pieceCount ?? 8)).keys()])
  return {
    pieceCount: options.pieceCount ?? 8, slots: options.slots ?? 8, random: options.random ?? (() => 0.5), parents,
    have: (n) => have.has(n),
    inflight: (n) => inflight.has(n),
    published: (n) => published.has(n)
  }
}

describe('piece planner', () => {
  it('plans nothing without a known piece count, slots or parents', () => {
    const p = [parent('a', [0, 1])]
    expect(planPieces(input(p, { pieceCount: -1 }))).toEqual([])
    expect(planPieces(input(p, { slots: 0 }))).toEqual([])
    expect(planPieces(input([]))).toEqual([])
  })

  it('skips what it has or is fetching, and pieces nobody offers', () => {
    const plan = planPieces(input([parent('a', [0, 1, 2, 3])], { pieceCount: 6, have: [0], inflight: [1] }))
    expect(plan.map((a) => a.num).sort()).toEqual([2, 3])
  })

  it('takes the rarest pieces first', () => {
    const plan = planPieces(input([parent('a', [0, 1, 2], { limit: 8 }), parent('b', [0, 1], { limit: 8 }), parent('c', [0], { limit: 8 })], { slots: 2 }))
    expect(plan.map((a) => a.num)).toEqual([2, 1])
  })

  it('prefers a peer over the source, and the least loaded peer', () => {
    const seed = parent('seed', [0, 1, 2, 3], { isSource: true, limit: 8 })
    const busy = parent('busy', [0, 1, 2, 3], { inflight: 2, limit: 3 })
    const idle = parent('idle', [0, 1, 2, 3], { limit: 3 })
    const plan = planPieces(input([seed, busy, idle], { pieceCount: 4, published: [0, 1, 2, 3] }))
    const by = (id: string): number => plan.filter((a) => a.parent === id).length
    // idle takes three (its limit), busy one (it had two in flight), the seed none while peers can.
    expect({ idle: by('idle'), busy: by('busy'), seed: by('seed') }).toEqual({ idle: 3, busy: 1, seed: 0 })
    expect(plan.every((a) => !a.live)).toBe(true)
  })

  it('asks a peer only for pieces whose digest the source published', () => {
    // Nothing could check the peer's bytes of 2 and 3: they wait for the source.
    const peer = parent('peer', [0, 1, 2, 3], { limit: 8 })
    expect(planPieces(input([peer], { pieceCount: 4, published: [0, 1] })).map((a) => a.num).sort()).toEqual([0, 1])
    const seed = parent('seed', [2, 3], { isSource: true, limit: 8 })
    const plan = planPieces(input([peer, seed], { pieceCount: 4, published: [0, 1] }))
    expect(plan.filter((a) => a.parent === 'peer').map((a) => a.num).sort()).toEqual([0, 1])
    expect(plan.filter((a) => a.parent === 'seed')).toEqual([{ num: 2, parent: 'seed', live: true }, { num: 3, parent: 'seed', live: true }])
  })

  it('asks the source for unpublished pieces live, in ascending order, within its limit', () => {
    const seed = parent('seed', [0, 1, 2, 3, 4, 5], { isSource: true, limit: 3 })
    const plan = planPieces(input([seed], { pieceCount: 6, published: [0] }))
    expect(plan).toEqual([
      { num: 0, parent: 'seed', live: false },
      { num: 1, parent: 'seed', live: true },
      { num: 2, parent: 'seed', live: true }
    ])
  })

  it('spreads equally rare pieces by the random key', () => {
    const p = [parent('a', [0, 1, 2, 3], { limit: 8 })]
    const keys = [0.9, 0.1, 0.5, 0.3]
    let i = 0
    const plan = planPieces(input(p, { pieceCount: 4, random: () => keys[i++] }))
    expect(plan.map((a) => a.num)).toEqual([1, 3, 2, 0])
  })
})

describe('a planner kept across turns', () => {
  /** A parent holding every piece, counting the questions it is asked. */
  function counted(id: string, asked: { n: number }, options: Partial<Omit<PlanParent, 'id' | 'has'>> = {}): PlanParent {
    return { id, has: () => { asked.n++; return true }, isSource: false, inflight: 0, limit: 3, ...options }
  }

  it('ranks the missing pieces once per basis: a download is linear in its pieces, not quadratic', () => {
    const pieceCount = 256
    const asked = { n: 0 }
    const parents = ['a', 'b', 'c', 'd'].map((id) => counted(id, asked, { limit: 8 }))
    const have = new Set<number>()
    const planner = new PiecePlanner()
    const basis = ['same parents, same bitmaps']
    let turns = 0
    while (have.size < pieceCount && turns < 1000) {
      const plan = planner.plan({ pieceCount, slots: 8, parents, basis, have: (n) => have.has(n), inflight: () => false, published: () => true })
      for (const a of plan) have.add(a.num)
      turns++
    }
    expect(have.size).toBe(pieceCount)
    expect(turns).toBe(pieceCount / 8)
    // One ranking (pieces × parents), then each assignment asks the parents once; counting
    // afresh each turn would have asked about 16 times the pieces × parents.
    expect(asked.n).toBeLessThanOrEqual(2 * pieceCount * parents.length)
  })

  it('ranks afresh when the basis changes, and skips what is stored or in flight meanwhile', () => {
    const held = { a: new Set([0, 1, 2, 3]), b: new Set([0, 1]) }
    const parents: PlanParent[] = [
      { id: 'a', has: (n) => held.a.has(n), isSource: false, inflight: 0, limit: 8 },
      { id: 'b', has: (n) => held.b.has(n), isSource: false, inflight: 0, limit: 8 }
    ]
    const planner = new PiecePlanner()
    const have = new Set<number>()
    const inflight = new Set<number>()
    const plan = (basis: unknown[], slots: number): number[] => planner.plan({
      pieceCount: 4, slots, parents, basis, random: () => 0.5, have: (n) => have.has(n), inflight: (n) => inflight.has(n), published: () => true
    }).map((a) => a.num)
    // 2 and 3 (one holder) before 0 and 1 (two).
    expect(plan([1], 2)).toEqual([2, 3])
    have.add(2)
    inflight.add(3)
    expect(plan([1], 2)).toEqual([0, 1])
    // b now holds 3 and a lost 0: unchanged basis, unchanged ranking (3 is in flight anyway).
    held.b.add(3)
    held.a.delete(0)
    inflight.delete(3)
    expect(plan([1], 4)).toEqual([3, 0, 1])
    // A new basis counts again: 0 (b alone) and 1 first, then 3 (a and b).
    expect(plan([2], 4)).toEqual([0, 1, 3])
  })
})

describe('a turn of the swarm loop', () => {
  /** A usable parent holding `pieces`. */
  function usable(id: string, pieces: number[], inflight = 0): TurnParent {
    const held = new Set(pieces)
    return { id, bitmap: { has: (n) => held.has(n), count: () => held.size }, inflight }
  }
  const all = (n: number): number[] => [...Array(n).keys()]

  function turn(parents: TurnParent[], options: Partial<TurnInput> = {}): ReturnType<typeof planTurn> {
    return planTurn({
      pieceCount: 64, pieceSize: 1024 * 1024, sourcePeer: 'seed', parents, inflightCount: 0, concurrency: 8, perParent: 3,
      have: () => false, inflight: () => false, published: () => true, random: () => 0.5, ...options
    })
  }

  it('plans nothing, with room, before the layout is known', () => {
    expect(turn([usable('seed', all(64))], { pieceSize: 0 })).toEqual({ plan: [], room: true, peersServe: false })
    expect(turn([usable('seed', all(64))], { pieceCount: -1 })).toEqual({ plan: [], room: true, peersServe: false })
  })

  it('gives a lone source a window of its own: 64 MiB of pieces, at least 16, or as configured', () => {
    expect(turn([usable('seed', all(64))]).plan).toHaveLength(64)
    expect(turn([usable('seed', all(64))], { pieceSize: 16 * 1024 * 1024 }).plan).toHaveLength(16)
    expect(turn([usable('seed', all(64))], { sourceWindow: 10 }).plan).toHaveLength(10)
    // The window counts what is already in flight.
    expect(turn([usable('seed', all(64), 60)], { inflightCount: 60 }).plan).toHaveLength(4)
  })

  it('takes at most SOURCE_SHARE pieces from the source once peers serve, and perParent from each peer', () => {
    const { plan, room, peersServe } = turn([usable('seed', all(64)), usable('a', [0, 1, 2, 3, 4]), usable('b', [0, 1])], { published: (n) => n < 8 })
    const by = (id: string): number => plan.filter((a) => a.parent === id).length
    expect({ seed: by('seed'), a: by('a'), b: by('b'), peersServe }).toEqual({ seed: SOURCE_SHARE, a: 3, b: 2, peersServe: true })
    expect(plan).toHaveLength(7)
    // Eight slots, seven fetches: what to fetch next is the scheduler's to say.
    expect(room).toBe(true)
  })

  it('has no room when every slot is taken, and peers holding nothing are not a swarm', () => {
    expect(turn([usable('a', all(64)), usable('b', all(64))], { inflightCount: 8 })).toEqual({ plan: [], room: false, peersServe: true })
    const alone = turn([usable('seed', [0, 1]), usable('empty', [])], { sourceWindow: 4 })
    expect({ peersServe: alone.peersServe, planned: alone.plan.length, room: alone.room }).toEqual({ peersServe: false, planned: 2, room: true })
    // Every slot filled: no room, though a parent could take more.
    expect(turn([usable('a', all(64)), usable('b', all(64)), usable('c', all(64))]).room).toBe(false)
    // One parent at its perParent limit leaves slots nothing can fill.
    expect(turn([usable('a', all(64))]).room).toBe(true)
  })

  it('keeps the ranking while the parents\' bitmaps and the published digests are the same', () => {
    const planner = new PiecePlanner()
    let counted = 0
    const holding = (id: string, pieces: number[]): TurnParent => {
      const held = new Set(pieces)
      return { id, bitmap: { has: (n) => { counted++; return held.has(n) }, count: () => held.size }, inflight: 0 }
    }
    const parents = [holding('a', all(64)), holding('b', all(64))]
    const again = (options: Partial<TurnInput> = {}): void => { turn(parents, { planner, publishedCount: 64, ...options }) }
    again()
    const first = counted
    again()
    // The second turn asks only about the pieces it assigns, not all 64 of each parent.
    expect(counted - first).toBeLessThan(first / 2)
    const before = counted
    again({ publishedCount: 65 })
    expect(counted - before).toBeGreaterThanOrEqual(first)
    // A parent's new bitmap (the scheduler's next answer) is a new ranking too.
    const polled = counted
    parents[1] = holding('b', all(64))
    again({ publishedCount: 65 })
    expect(counted - polled).toBeGreaterThanOrEqual(first)
  })
})
