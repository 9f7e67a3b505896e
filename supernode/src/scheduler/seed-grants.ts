// Super-seeding: the seed's uplink is one link shared by every child of a task, so it should
// send each piece about once and let the children pass it on (BitTorrent's super-seeding).
// Offered in full, every child rushes for the same newest piece, the only one nobody else
// has: with 8 hosts the seed sent 4× the blob. So a child sees only the seed-only pieces
// granted to it (at most SEED_GRANTS_PER_CHILD at a time, each to one child until that child
// reports it or the grant lapses); pieces another offered parent holds it gets from that parent.
// The grants go round the children in turn: a child is never handed a new one while it is
// more than one ahead of the least served other child, so each child has pieces the others
// lack and every child's uplink works from the start (handed out in blocks, the first child
// to ask got the first pieces and everyone queued on its uplink).

import { Bitmap } from '@naiad/proto'

import type { Candidate } from './scoring.ts'
import type { TaskState } from './state.ts'

/** Pieces only the seed holds (or is still fetching) that one child may be handed at a time, at least. */
const SEED_GRANTS_PER_CHILD = 2
/**
 * Seed-only bytes handed out at once over the children of a task (at least SEED_WINDOW_PIECES)
 * when there are several: they share it. A lone child is granted them all.
 */
const SEED_WINDOW_BYTES = 64 * 1024 * 1024
const SEED_WINDOW_PIECES = 16
/** A grant lapses (and the piece goes to another child) after this long, or 4× the seed's measured piece time. */
const SEED_GRANT_MIN_MS = 2_000

/** A piece only the seed holds, handed to one child to fetch and then pass on. */
interface SeedGrant {
  hostId: string
  at: number
  /** When the seed came to hold the piece (for a piece granted while it was still coming). */
  availableAt?: number
}

/** Per task, which child may take which seed-only piece from the seed. */
export class SeedGrants {
  private readonly grants = new WeakMap<TaskState, Map<number, SeedGrant>>()

  /** Forgets a task's grants (it starts over). */
  reset(task: TaskState): void {
    this.grants.delete(task)
  }

  /**
   * Is the seed's uplink still on the swarm's critical path: is it still fetching, or does it
   * hold a piece no peer has yet? Once every piece is out, its spare uplink is offered in full,
   * as a fallback for pieces whose holders are slow (daemons still prefer peers).
   */
  needed(task: TaskState, seed: Candidate, holders: Uint32Array): boolean {
    if (task.state !== 'succeeded' || seed.peer.state !== 'succeeded') return true
    for (const n of seed.peer.bitmap.pieces()) if ((holders[n] ?? 0) <= 1) return true
    return false
  }

  /**
   * The seed's pieces as offered to child `hostId` (holding `mine`), while the seed is
   * needed. `children` counts the task's running peers other than the seed; `offered` are the
   * other parents this child is given in the same answer.
   */
  bitmapFor(task: TaskState, seed: Candidate, hostId: string, mine: Bitmap, offered: Candidate[], children: number, now: number): Bitmap {
    let grants = this.grants.get(task)
    if (grants === undefined) {
      grants = new Map()
      this.grants.set(task, grants)
    }
    const pieceMs = seed.host.bandwidth > 0 && task.pieceSize > 0 ? (task.pieceSize / seed.host.bandwidth) * 1000 : 0
    const lapseMs = Math.max(SEED_GRANT_MIN_MS, 4 * pieceMs)
    const seedHas = seed.peer.bitmap
    const live = (g: SeedGrant, num: number): boolean => {
      const holder = task.peers.get(g.hostId)
      if (holder?.state !== 'running' || holder.bitmap.has(num)) return false
      // A piece the seed is still fetching is on its way to the child (streamed live): its
      // clock starts when the seed has it.
      if (!seedHas.has(num)) return true
      g.at = Math.max(g.at, g.availableAt ??= now)
      return now - g.at < lapseMs
    }
    const shared = Math.max(SEED_WINDOW_PIECES, task.pieceSize > 0 ? Math.floor(SEED_WINDOW_BYTES / task.pieceSize) : 0)
    // A lone child shares the seed's uplink with nobody: it is granted every seed-only piece,
    // and its own request window (as deep as `shared`) paces it. Held to a window, it learned
    // of the next pieces only by polling, and the seed's in-process origin read loads the
    // scheduler enough to pace those polls to 250-333 ms: a cold 256 MiB mirror pull sat idle
    // about 0.3 s of 2.1 s for that (bench/README.md).
    const window = children <= 1 && task.pieceCount > 0 ? Math.max(shared, task.pieceCount) : shared
    for (const [num, g] of grants) if (!live(g, num)) grants.delete(num)
    // Once another child runs, a child granted everything while alone keeps only its lowest
    // `shared` grants: the ones its window may have asked for (it asks in ascending order).
    if (window === shared) trimToWindow(grants, shared)
    // Live grants per holder: every holder is a running child (live() dropped the others).
    const heldBy = new Map<string, number>()
    for (const g of grants.values()) heldBy.set(g.hostId, (heldBy.get(g.hostId) ?? 0) + 1)
    let held = heldBy.get(hostId) ?? 0
    // The fewest grants another running child holds, read from the grants alone (at most a
    // window of them), not from the task's peers: while more children than holders run,
    // some other child holds none.
    const requester = task.peers.get(hostId)
    const otherChildren = children - (requester?.state === 'running' ? 1 : 0)
    let fewestOther = otherChildren > heldBy.size - (heldBy.has(hostId) ? 1 : 0) ? 0 : Number.POSITIVE_INFINITY
    if (fewestOther !== 0) for (const [id, n] of heldBy) if (id !== hostId) fewestOther = Math.min(fewestOther, n)

    const perChild = Math.max(SEED_GRANTS_PER_CHILD, Math.floor(window / Math.max(1, children)))
    // A lone child takes a whole window at once; among several, one new grant per call.
    let taken = 0
    const mayTake = (): boolean => held < perChild && (children <= 1 || (held <= fewestOther && taken === 0))
    const others = offered.filter((c) => c !== seed)
    // Pieces the seed holds, then (while it still fetches from the origin) the ones it will
    // have: both in ascending order, the order the seed reads the origin in.
    const coming = task.state === 'running' && seed.peer.state === 'running' && task.pieceCount > 0
    const shown = new Bitmap()
    const consider = (num: number): void => {
      if (mine.has(num) || others.some((c) => c.peer.bitmap.has(num))) return
      const g = grants.get(num)
      if (g === undefined) {
        if (!mayTake()) return
        grants.set(num, { hostId, at: now })
        held++
        taken++
      } else if (g.hostId !== hostId) {
        return
      }
      shown.set(num)
    }
    for (const num of seedHas.pieces()) consider(num)
    if (coming) {
      for (let num = 0; num < task.pieceCount && mayTake(); num++) if (!seedHas.has(num)) consider(num)
      // Grants already held on coming pieces are shown again even when the window is full.
      for (const [num, g] of grants) if (g.hostId === hostId && !seedHas.has(num)) shown.set(num)
    }
    return shown
  }
}

/** Drops each holder's grants beyond its `window` lowest-numbered ones. */
function trimToWindow(grants: Map<number, SeedGrant>, window: number): void {
  const byHolder = new Map<string, number[]>()
  for (const [num, g] of grants) {
    const nums = byHolder.get(g.hostId)
    if (nums === undefined) byHolder.set(g.hostId, [num])
    else nums.push(num)
  }
  for (const nums of byHolder.values()) {
    if (nums.length <= window) continue
    nums.sort((a, b) => a - b)
    for (const num of nums.slice(window)) grants.delete(num)
  }
}
