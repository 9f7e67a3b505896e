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
}

export interface Assignment {
  num: number
  parent: string
  /** Ask the source for the piece while it arrives from the origin. */
  live: boolean
}

export function planPieces(input: PlanInput): Assignment[] {
  if (input.pieceCount <= 0 || input.slots <= 0 || input.parents.length === 0) return []
  const random = input.random ?? Math.random
  const candidates: Array<{ num: number; holders: PlanParent[]; peers: number; key: number }> = []
  for (let num = 0; num < input.pieceCount; num++) {
    if (input.have(num) || input.inflight(num)) continue
    const holders = input.parents.filter((p) => p.has(num) && (p.isSource || input.published(num)))
    if (holders.length === 0) continue
    const peers = holders.reduce((n, p) => n + (p.isSource ? 0 : 1), 0)
    candidates.push({ num, holders, peers, key: random() })
  }
  candidates.sort((a, b) => {
    if (a.holders.length !== b.holders.length) return a.holders.length - b.holders.length
    // Pieces only the source holds go in order (see above); others at random.
    if (a.peers === 0 && b.peers === 0) return a.num - b.num
    return a.key - b.key
  })
  const load = new Map(input.parents.map((p) => [p.id, p.inflight]))
  const out: Assignment[] = []
  for (const c of candidates) {
    if (out.length >= input.slots) break
    let best: PlanParent | undefined
    for (const p of c.holders) {
      const n = load.get(p.id)!
      if (n >= p.limit) continue
      if (best === undefined || Number(p.isSource) < Number(best.isSource) || (p.isSource === best.isSource && n < load.get(best.id)!)) best = p
    }
    if (best === undefined) continue
    load.set(best.id, load.get(best.id)! + 1)
    out.push({ num: c.num, parent: best.id, live: best.isSource && !input.published(c.num) })
  }
  return out
}
