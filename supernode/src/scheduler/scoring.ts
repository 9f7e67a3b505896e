// Parent scoring. Each term is in [0, 1]; the weights say what matters most: a parent
// that holds many (and rare) pieces we lack, has free upload slots, a healthy record, a
// fast measured link and shares our data centre.

import type { Host } from '@naiad/proto'

import type { HostState, PeerState, TaskState } from './state.ts'

export interface Candidate {
  peer: PeerState
  host: HostState
  /** Pieces the candidate holds and the requester lacks, each weighted by 1 / holders. */
  useful: number
  /** Peers of this task fetching from the candidate right now. */
  children: number
}

/** Plugins may veto candidates (return false) or add to their score. */
export type ParentFilter = (candidate: Candidate, task: TaskState) => boolean
export type ParentScorer = (candidate: Candidate, task: TaskState) => number

export const WEIGHTS = { useful: 0.35, freeSlots: 0.2, health: 0.2, bandwidth: 0.15, locality: 0.1 } as const

export function locality(a: Host | undefined, b: Host): number {
  if (a === undefined) return 0
  let score = 0
  if (a.idc !== '' && a.idc === b.idc) score += 0.5
  if (a.location !== '' && b.location !== '') score += 0.5 * sharedLevels(a.location, b.location)
  return score
}

/**
 * The share of two `|`-separated locations' levels that are the same from the first on,
 * read in place: it runs for every candidate of every getParents, and splitting both strings
 * each time was a tenth of the call.
 */
function sharedLevels(x: string, y: string): number {
  let same = 0
  for (let i = 0; ;) {
    const ex = x.indexOf('|', i)
    const ey = y.indexOf('|', i)
    const endX = ex < 0 ? x.length : ex
    if (endX !== (ey < 0 ? y.length : ey)) break
    let k = i
    while (k < endX && x.charCodeAt(k) === y.charCodeAt(k)) k++
    if (k < endX) break
    same++
    if (ex < 0 || ey < 0) break
    i = ex + 1
  }
  return same / Math.max(levels(x), levels(y))
}

function levels(s: string): number {
  let n = 1
  for (let i = s.indexOf('|'); i >= 0; i = s.indexOf('|', i + 1)) n++
  return n
}

export function health(host: HostState): number {
  return 1 / (1 + 2 * host.badPieces + 0.2 * host.failedPieces + host.consecutiveFailures)
}

export function scoreCandidate(c: Candidate, ctx: { requester: Host | undefined; maxBandwidth: number; missing: number }): number {
  return scoreOf(c.host, c.useful, c.children, ctx.requester, ctx.maxBandwidth, ctx.missing)
}

/** scoreCandidate from the candidate's parts: getParents scores without a Candidate object unless a plugin needs one. */
export function scoreOf(host: HostState, useful: number, children: number, requester: Host | undefined, maxBandwidth: number, missing: number): number {
  const slots = Math.max(1, host.info.uploadSlots)
  const freeSlots = Math.max(0, slots - children) / slots
  const bandwidth = maxBandwidth > 0 ? host.bandwidth / maxBandwidth : 0.5
  return WEIGHTS.useful * Math.min(1, useful / missing) +
    WEIGHTS.freeSlots * freeSlots +
    WEIGHTS.health * health(host) +
    WEIGHTS.bandwidth * bandwidth +
    WEIGHTS.locality * locality(requester, host.info)
}
