// Which piece to ask which parent for next: a pure function of what this peer has, what
// is in flight and what each parent holds, so that the policy is tested on its own.
//
// - Rarest first: a piece few parents hold is taken before it can vanish with them; among
//   equally rare pieces a random order spreads children over different pieces.
// - Peers before the source: the source's uplink is shared by every child of the task.
// - Pieces only the source can give that it has not published yet are asked for live
//   (streamed while they arrive from the origin), in ascending order, since the source
//   reads the origin front to back and answers a connection's requests in order.
// - A peer other than the source is asked only for pieces whose digest the source has
//   published: there is nothing else to check its bytes against.
//
// planTurn wraps it for one turn of the swarm loop: how many fetches may start, and how
// many each parent may carry (a lone source gets a window of live pieces).

export interface PlanParent {
  id: string
  /** Whether the parent offers the piece (its bitmap as the scheduler sent it). */
  has(num: number): boolean
  /** The task's trusted source (the seed). */
  isSource: boolean
  inflight: number
  /** Pieces it may have in flight at once. */
  limit: number
}

export interface PlanInput {
  /** -1 while unknown: nothing can be planned. */
  pieceCount: number
  have(num: number): boolean
  inflight(num: number): boolean
  /** The source published the piece's digest (it is stored there). */
  published(num: number): boolean
  parents: readonly PlanParent[]
  /** New fetches that may start now. */
  slots: number
  random?: () => number
  /**
   * Values that, all unchanged (===) since the last turn, mean the parents and what they can
   * give are as they were: a PiecePlanner keeps its ranking. Absent: ranked afresh.
   */
  basis?: readonly unknown[]
}

export interface Assignment {
  num: number
  parent: string
  /** Ask the source for the piece while it arrives from the origin. */
  live: boolean
}

/** A piece some parent can give, as ranked: rarest first. */
interface Ranked {
  num: number
  /** Parents that can give it, and how many of them are not the source. */
  holders: number
  peers: number
  /** Random order among equally rare pieces. */
  key: number
}

/**
 * The planner of one download, across the turns of its swarm loop: the pieces it misses,
 * ranked rarest first, are counted again only when the parents' holdings changed (see
 * PlanInput.basis) — after a poll of the scheduler, not at every piece that lands. A turn
 * walks the ranking, dropping the pieces stored since. Counting every piece against every
 * parent at every turn made a download quadratic in its pieces.
 */
export class PiecePlanner {
  private ranked: Ranked[] = []
  private basis: readonly unknown[] | undefined

  plan(input: PlanInput): Assignment[] {
    if (input.pieceCount <= 0 || input.slots <= 0 || input.parents.length === 0) return []
    if (input.basis === undefined || this.basis === undefined || !sameBasis(input.basis, this.basis)) this.rank(input)
    this.basis = input.basis
    const load = new Map(input.parents.map((p) => [p.id, p.inflight]))
    const out: Assignment[] = []
    let kept = 0
    for (let i = 0; i < this.ranked.length; i++) {
      const c = this.ranked[i]
      if (input.have(c.num)) continue
      this.ranked[kept++] = c
      if (out.length >= input.slots || input.inflight(c.num)) continue
      // Peers before the source, then the least loaded.
      let best: PlanParent | undefined
      for (const p of input.parents) {
        const n = load.get(p.id)!
        if (n >= p.limit || !p.has(c.num) || !(p.isSource || input.published(c.num))) continue
        if (best === undefined || Number(p.isSource) < Number(best.isSource) || (p.isSource === best.isSource && n < load.get(best.id)!)) best = p
      }
      if (best === undefined) continue
      load.set(best.id, load.get(best.id)! + 1)
      out.push({ num: c.num, parent: best.id, live: best.isSource && !input.published(c.num) })
    }
    // Pieces stored since the ranking leave it.
    this.ranked.length = kept
    return out
  }

  /** Counts each missing piece's holders and sorts: rarest first. */
  private rank(input: PlanInput): void {
    const random = input.random ?? Math.random
    this.ranked = []
    for (let num = 0; num < input.pieceCount; num++) {
      if (input.have(num)) continue
      let holders = 0
      let peers = 0
      for (const p of input.parents) {
        if (!p.has(num)) continue
        if (p.isSource) holders++
        else if (input.published(num)) { holders++; peers++ }
      }
      if (holders > 0) this.ranked.push({ num, holders, peers, key: random() })
    }
    this.ranked.sort((a, b) => {
      if (a.holders !== b.holders) return a.holders - b.holders
      // Pieces only the source holds go in order (see above); others at random.
      if (a.peers === 0 && b.peers === 0) return a.num - b.num
      return a.key - b.key
    })
  }
}

function sameBasis(a: readonly unknown[], b: readonly unknown[]): boolean {
  if (a.length !== b.length) return false
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false
  return true
}

/** One plan from scratch (a planner that keeps nothing between calls). */
export function planPieces(input: PlanInput): Assignment[] {
  return new PiecePlanner().plan(input)
}

/** Bytes asked of a lone source at once (at least 16 pieces): the scheduler grants as much. */
const DEFAULT_SOURCE_WINDOW_BYTES = 64 * 1024 * 1024
/** While peers can serve, pieces in flight from the source at once (its uplink is everyone's). */
export const SOURCE_SHARE = 2

/** A usable parent (neither blocked nor cooling down) as the swarm loop knows it. */
export interface TurnParent {
  id: string
  bitmap: { has(num: number): boolean; count(): number }
  inflight: number
}

export interface TurnInput extends Omit<PlanInput, 'parents' | 'slots'> {
  /** 0 while unknown. */
  pieceSize: number
  parents: readonly TurnParent[]
  /** The task's source: its uplink is every child's. */
  sourcePeer: string
  /** Fetches in flight, over all parents. */
  inflightCount: number
  /** Pieces in flight at once, over all parents, and from one parent other than the source. */
  concurrency: number
  perParent: number
  /** Pieces asked of a lone source at once; by default DEFAULT_SOURCE_WINDOW_BYTES' worth. */
  sourceWindow?: number
  /** The download's planner, kept across turns; and how many digests the source has published (the ranking is kept while they and the parents' bitmaps are unchanged). */
  planner?: PiecePlanner
  publishedCount?: number
}

export interface TurnPlan {
  plan: Assignment[]
  /** Slots were left that nothing could fill. */
  room: boolean
  /** Parents other than the source hold pieces. */
  peersServe: boolean
}

/** One turn of the swarm loop: how many fetches may start, each parent's share, and the plan. */
export function planTurn(input: TurnInput): TurnPlan {
  if (input.pieceSize === 0 || input.pieceCount <= 0) return { plan: [], room: true, peersServe: false }
  const { parents, sourcePeer } = input
  const peersServe = parents.some((p) => p.id !== sourcePeer && p.bitmap.count() > 0)
  const sourceWindow = input.sourceWindow ?? Math.max(16, Math.floor(DEFAULT_SOURCE_WINDOW_BYTES / input.pieceSize))
  // Live pieces from a lone source stream back to back: they get a window of their own.
  const sourceOnly = !peersServe && parents.some((p) => p.id === sourcePeer)
  const slots = (sourceOnly ? Math.max(input.concurrency, sourceWindow) : input.concurrency) - input.inflightCount
  if (slots <= 0) return { plan: [], room: false, peersServe }
  // The parents' bitmaps are replaced by every answer of the scheduler: the same objects, the same holdings.
  const basis = input.planner === undefined || input.publishedCount === undefined
    ? undefined
    : [input.pieceCount, input.publishedCount, sourcePeer, ...parents.flatMap((p) => [p.id, p.bitmap])]
  const plan = (input.planner ?? new PiecePlanner()).plan({
    basis,
    pieceCount: input.pieceCount,
    have: input.have,
    inflight: input.inflight,
    published: input.published,
    random: input.random,
    parents: parents.map((p) => {
      const isSource = p.id === sourcePeer
      return {
        id: p.id,
        has: (n: number) => p.bitmap.has(n),
        isSource,
        inflight: p.inflight,
        // The source's uplink is every child's: while peers can serve, take little from
        // it; alone, keep a window of live pieces queued on it.
        limit: isSource ? (peersServe ? SOURCE_SHARE : sourceWindow) : input.perParent
      }
    }),
    slots
  })
  return { plan, room: plan.length < slots, peersServe }
}
