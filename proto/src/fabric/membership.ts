// Membership on the fabric: who may use this node's protocols, and whom this node may talk
// to. A node built with a guard (createFabricNode's `guard`) asks it three things:
//
// - at the handshake, once Noise has authenticated the other side's peer ID: refuse at once?
//   (revoked peers everywhere; on the supernode, any peer that never joined);
// - before it hands a stream of any protocol to its handler, and before it opens a stream on a
//   connection it dialled: is the other side a member? The default guard (MemberGuard) asks
//   the peer for its membership credential over `/naiad/membership/1.0.0`, on the same
//   connection, checks it against the cluster key and remembers the answer until the
//   credential runs out;
// - what to answer on `/naiad/membership/1.0.0` itself, the one protocol served to anyone:
//   a node's credential is bound to its peer ID, so it is worth nothing to whoever reads it.

import type { Connection } from '@libp2p/interface'
import { lpStream } from '@libp2p/utils'

import type { ClusterVerifier, MemberRole } from '../admission/credentials.ts'
import { NaiadError } from '../errors.ts'
import { LIMITS, PROTOCOLS } from '../protocols.ts'
import { MembershipRequest, MembershipResponse, type FabricGuard } from './guard.ts'
import type { FabricNode } from './node.ts'
import { call, raiseRemote, type DialTarget } from './rpc.ts'
import { raceSignal } from './session.ts'

export { guardNode, MembershipRequest, MembershipResponse, type FabricGuard } from './guard.ts'

/** Largest membership message accepted either way. */
const MAX_MEMBERSHIP_BYTES = 256 * 1024

/** A guard for nodes that are not the supernode: members prove themselves with a credential. */
export interface MemberGuardOptions {
  verifier: () => ClusterVerifier | undefined
  /** This node's own credential (empty before it joined). */
  credential: () => Uint8Array
  revoked: (peerId: string) => boolean
  /** A peer's credential is asked for again after this long, even if it lasts longer. */
  recheckMs?: number
  /** Peers remembered at most. */
  maxPeers?: number
}

export class MemberGuard implements FabricGuard {
  private readonly members = new Map<string, { role: MemberRole; until: number }>()
  private readonly asking = new Map<string, Promise<boolean>>()
  private readonly options: MemberGuardOptions

  constructor(options: MemberGuardOptions) {
    this.options = options
  }

  denyPeer(peerId: string): boolean {
    return this.options.revoked(peerId)
  }

  /** The role a peer proved, while its proof is remembered. */
  roleOf(peerId: string): MemberRole | undefined {
    const m = this.members.get(peerId)
    return m !== undefined && m.until > Date.now() && !this.options.revoked(peerId) ? m.role : undefined
  }

  forget(peerId: string): void {
    this.members.delete(peerId)
  }

  async admit(connection: Connection, signal: AbortSignal): Promise<boolean> {
    const peer = connection.remotePeer.toString()
    if (this.options.revoked(peer)) return false
    if (this.roleOf(peer) !== undefined) return true
    let asking = this.asking.get(peer)
    if (asking === undefined) {
      asking = this.ask(connection, peer).finally(() => this.asking.delete(peer))
      this.asking.set(peer, asking)
    }
    return raceSignal(asking, signal)
  }

  answer(req: MembershipRequest): Partial<MembershipResponse> {
    if (req.renew) return { error: { code: 'PROTO_ERR_FORBIDDEN', message: 'only the supernode issues credentials' } }
    return { credential: this.options.credential() }
  }

  private async ask(connection: Connection, peer: string): Promise<boolean> {
    const verifier = this.options.verifier()
    if (verifier === undefined) return false
    let credential: Uint8Array
    const timeout = AbortSignal.timeout(LIMITS.callTimeoutMs)
    try {
      const res = await exchange(connection, { renew: false }, timeout)
      credential = res.credential
    } catch (err) {
      // A stranger speaks no membership protocol and fails at once; no answer in time is as
      // likely a member on a loaded machine: the caller decides what a late answer means.
      if (timeout.aborted) throw new NaiadError('PROTO_ERR_TIMEOUT', `${peer} did not show its membership within ${LIMITS.callTimeoutMs} ms`, { cause: err })
      return false
    }
    let role: MemberRole
    let expiresAt: number
    try {
      const m = verifier.membership(credential, peer)
      role = m.role === 'supernode' ? 'supernode' : 'node'
      expiresAt = m.expiresAt
    } catch {
      return false
    }
    const max = this.options.maxPeers ?? 100_000
    if (this.members.size >= max) this.members.delete(this.members.keys().next().value!)
    this.members.set(peer, { role, until: Math.min(expiresAt, Date.now() + (this.options.recheckMs ?? 10 * 60_000)) })
    return true
  }
}

/** One membership request and its answer, on a stream of `connection`. */
export async function exchange(connection: Connection, req: Partial<MembershipRequest>, signal: AbortSignal): Promise<MembershipResponse> {
  const stream = await connection.newStream(PROTOCOLS.membership, { signal })
  try {
    const lp = lpStream(stream, { maxDataLength: MAX_MEMBERSHIP_BYTES })
    await lp.write(MembershipRequest.encode(req), { signal })
    const res = MembershipResponse.decode((await lp.read({ signal })).subarray())
    await stream.close({ signal }).catch(() => {})
    return res
  } catch (err) {
    stream.abort(err as Error)
    throw err
  }
}

/** A node asks its supernode for a fresh credential (and the list of revoked peers). */
export async function renewMembership(node: FabricNode, supernode: DialTarget, signal?: AbortSignal): Promise<MembershipResponse> {
  const res = await call(node, supernode, PROTOCOLS.membership, MembershipRequest, MembershipResponse, { renew: true }, { signal, maxResponseBytes: MAX_MEMBERSHIP_BYTES })
  raiseRemote(res.error)
  return res
}
