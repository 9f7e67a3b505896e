// What the scheduler knows of hosts, tasks and each task's peers: the types its parts share
// (the scheduler, the swarm index, seed grants, scoring) and the store persists. Kept apart
// from scheduler.ts so that those parts do not import the scheduler back.

import type { Bitmap, Host } from '@naiad/proto'

export interface HostState {
  info: Host
  lastSeen: number
  /** Bytes per second measured from pieces children fetched from this host (EWMA); 0 while unknown. */
  bandwidth: number
  goodPieces: number
  badPieces: number
  failedPieces: number
  /** Failures since the host last announced or served a good piece. */
  consecutiveFailures: number
  gone: boolean
}

export interface PeerState {
  hostId: string
  state: 'running' | 'succeeded' | 'failed'
  bitmap: Bitmap
  /**
   * Parents this peer fetched pieces from while running, with when it last did. Recent
   * edges count as the parent's busy upload slots. They do not forbid the reverse edge:
   * pieces are verified one by one, so two peers swapping pieces (a cycle) is harmless and
   * is how a swarm multiplies the seed's bandwidth; a cycle rule starved whichever peer
   * served first of every parent but the seed.
   */
  parents: Map<string, number>
  /** Parents that sent this peer a corrupt piece. */
  blocked: Set<string>
  updatedAt: number
}

export interface TaskState {
  id: string
  url: string
  headers: Array<{ name: string; value: string }>
  digest: string
  range: string
  filter: string[]
  state: 'pending' | 'running' | 'succeeded' | 'failed'
  contentLength: number
  pieceSize: number
  pieceCount: number
  pieces: Map<number, { length: number; sha256: Uint8Array }>
  sha256: Uint8Array
  error: { code: string; message: string } | undefined
  /** The one peer whose piece digests are trusted: the seed, or the first peer without one. */
  backSourcePeer: string
  peers: Map<string, PeerState>
  createdAt: number
  updatedAt: number
}
