// The parents one download may fetch from, as the scheduler last named them, with what
// this peer learned of each: how to reach its data channel, failures and cool-downs, and
// the ones it must never ask again (they sent a corrupt piece).

import { Bitmap, type Parent } from '@naiad/proto'

import type { DataTarget } from '../channel/data-client.ts'
import type { DataTransport } from '../channel/connection.ts'

export interface ParentState {
  id: string
  /** Its data channel; undefined when it announced none (it cannot serve pieces). */
  target: DataTarget | undefined
  bitmap: Bitmap
  score: number
  isSeed: boolean
  inflight: number
  failures: number
  coolUntil: number
  /** Its last fetch could not reach it (a failed dial, a timeout); cleared by a piece it serves. */
  unreachable: boolean
}

const MAX_FAILURES = 3

/** The data-channel address of a parent: the IP of its first TCP multiaddr, and its data port. */
export function dataTarget(p: Pick<Parent, 'id' | 'multiaddrs' | 'dataPort' | 'dataTransport'>): DataTarget | undefined {
  if (p.dataPort <= 0 || p.dataPort > 65535) return undefined
  for (const a of p.multiaddrs) {
    const m = /^\/(ip4|ip6)\/([^/]+)\/tcp\/\d+/.exec(a)
    if (m !== null) return { peerId: p.id, host: m[2], port: p.dataPort, transport: (p.dataTransport === 'tcp' ? 'tcp' : 'tls') as DataTransport }
  }
  return undefined
}

export class ParentSet {
  private readonly parents = new Map<string, ParentState>()
  private readonly blocked = new Set<string>()
  /** Parents that sent a bad piece, for every task of this node. */
  private readonly badPeers: Set<string>
  /** Lists taken from the scheduler so far, and their count when a parent last could not be reached. */
  private answers = 0
  private answersAtUnreachable = 0

  constructor(badPeers: Set<string>) {
    this.badPeers = badPeers
  }

  get size(): number {
    return this.parents.size
  }

  get(id: string): ParentState | undefined {
    return this.parents.get(id)
  }

  all(): IterableIterator<ParentState> {
    return this.parents.values()
  }

  /** Takes the scheduler's latest list; parents it no longer names go once idle. */
  update(list: readonly Parent[]): void {
    const seen = new Set<string>()
    for (const p of list) {
      if (this.isBlocked(p.id)) continue
      const target = dataTarget(p)
      if (target === undefined) continue
      seen.add(p.id)
      const st = this.parents.get(p.id)
      if (st === undefined) {
        this.parents.set(p.id, { id: p.id, target, bitmap: Bitmap.from(p.bitmap), score: p.score, isSeed: p.isSeed, inflight: 0, failures: 0, coolUntil: 0, unreachable: false })
      } else {
        st.target = target
        st.bitmap = Bitmap.from(p.bitmap)
        st.score = p.score
        st.isSeed = p.isSeed
      }
    }
    for (const [id, st] of this.parents) if (!seen.has(id) && st.inflight === 0) this.parents.delete(id)
    this.answers++
  }

  isBlocked(id: string): boolean {
    return this.blocked.has(id) || this.badPeers.has(id)
  }

  /** Parents not blocked and not cooling down. */
  usable(now: number): ParentState[] {
    const out: ParentState[] = []
    for (const p of this.parents.values()) if (!this.isBlocked(p.id) && p.coolUntil <= now) out.push(p)
    return out
  }

  /** A parent sent a corrupt piece: never asked again, by any task of this node. */
  block(id: string): void {
    this.blocked.add(id)
    this.badPeers.add(id)
  }

  succeeded(p: ParentState): void {
    p.failures = 0
    p.unreachable = false
  }

  /**
   * Whether the scheduler names parents and none of them can be reached. An empty set is not
   * that: right after a task moved to a new owner, or before anyone holds a piece, the
   * scheduler names nobody yet, and the stall timeout is what bounds the wait.
   */
  allUnreachable(): boolean {
    if (this.parents.size === 0) return false
    for (const p of this.parents.values()) if (!p.unreachable) return false
    return true
  }

  /** A fetch could not reach the parent (a failed dial, a timeout). */
  unreachable(p: ParentState): void {
    p.unreachable = true
    this.answersAtUnreachable = this.answers
  }

  /**
   * Every parent the scheduler names, asked again since one was last found unreachable,
   * failed to answer; not merely "a parent failed once and none is named now": that was
   * the moment just after a failover, when the dead owner's seed had failed and the new
   * owner named nobody yet, and it sent whole downloads to the origin.
   */
  unreachableSinceAsked(): boolean {
    return this.allUnreachable() && this.answers > this.answersAtUnreachable
  }

  /** A fetch failed: the parent cools down, longer each time, and is dropped after a few. */
  failed(p: ParentState, now: number): void {
    p.failures++
    p.coolUntil = now + Math.min(5000, 250 * 2 ** p.failures)
    if (p.failures >= MAX_FAILURES && p.inflight <= 1) this.parents.delete(p.id)
  }

  drop(id: string): void {
    this.parents.delete(id)
  }
}
