// PeerAccess for a cluster with admission: a peer may use this node's data channel if it
// presents a membership credential signed by the cluster key for its own (TLS-proven) peer
// ID and is not revoked; it gets a task's pieces only with a grant the supernode signed for
// that peer and that task, unexpired. Everything is checked offline against the cluster's
// public key, so uploads keep their rules while the supernode is away.

import { NaiadError, type ClusterVerifier } from '@naiad/proto'

import type { PeerAccess } from './access.ts'

export interface ClusterAccessOptions {
  /** The cluster's public key; undefined until the node knows it (refuses everyone meanwhile). */
  verifier: () => ClusterVerifier | undefined
  /** This node's own credential, sent in every HELLO. */
  credential: () => Uint8Array
  /** Peers the supernode revoked. */
  revoked: (peerId: string) => boolean
  now?: () => number
}

/** Verified grants and memberships remembered at most (a bound on what peers' requests can make it hold). */
const MAX_REMEMBERED = 4096

export class ClusterAccess implements PeerAccess {
  private readonly options: ClusterAccessOptions
  /** Grants and memberships whose signature was checked (by the verifier `checkedBy`): key → when they expire. */
  private readonly checked = new Map<string, number>()
  private checkedBy: ClusterVerifier | undefined

  constructor(options: ClusterAccessOptions) {
    this.options = options
  }

  credential(): Uint8Array {
    return this.options.credential()
  }

  admit(peerId: string, credential: Uint8Array): boolean {
    // A peer this node dials and that dials this node presents the same credential on both
    // connections: its signature is checked once (an Ed25519 verification per connection
    // was among the largest costs of setting one up).
    return this.remembered(`m ${peerId} ${Buffer.from(credential).toString('base64')}`, peerId, (v, now) => v.membership(credential, peerId, now).expiresAt)
  }

  authorize(peerId: string, taskId: string, grant: Uint8Array): boolean {
    // A peer presents the same grant with every piece of a task: its signature is checked
    // once, then remembered until it expires (revocation is still checked every time).
    return this.remembered(`g ${peerId} ${taskId} ${Buffer.from(grant).toString('base64')}`, peerId, (v, now) => v.grant(grant, peerId, taskId, now).expiresAt)
  }

  /** Whether `verify` (which returns the statement's expiry) accepts, from memory while it is unexpired. */
  private remembered(key: string, peerId: string, verify: (v: ClusterVerifier, now: number) => number): boolean {
    const now = (this.options.now ?? Date.now)()
    const verifier = this.options.verifier()
    const until = verifier !== undefined && verifier === this.checkedBy ? this.checked.get(key) : undefined
    if (until !== undefined && until > now) return !this.options.revoked(peerId)
    let expiresAt = 0
    const ok = this.check(peerId, (v, t) => { expiresAt = verify(v, t) }) === undefined
    if (ok) {
      // What another cluster key accepted says nothing under this one.
      if (verifier !== this.checkedBy || this.checked.size >= MAX_REMEMBERED) this.checked.clear()
      this.checkedBy = verifier
      this.checked.set(key, expiresAt)
    }
    return ok
  }

  /** Why `peerId` is refused `taskId` with `grant`, or undefined when it is not: for logs and error messages. */
  refusal(peerId: string, taskId: string, grant: Uint8Array): NaiadError | undefined {
    return this.check(peerId, (v, now) => v.grant(grant, peerId, taskId, now))
  }

  private check(peerId: string, verify: (v: ClusterVerifier, now: number) => unknown): NaiadError | undefined {
    const verifier = this.options.verifier()
    if (verifier === undefined) return new NaiadError('PROTO_ERR_FORBIDDEN', 'this node has not joined a cluster yet')
    if (this.options.revoked(peerId)) return new NaiadError('PROTO_ERR_FORBIDDEN', `${peerId} was revoked`)
    try {
      verify(verifier, (this.options.now ?? Date.now)())
      return undefined
    } catch (err) {
      return err instanceof NaiadError ? err : new NaiadError('PROTO_ERR_FORBIDDEN', String(err))
    }
  }
}
