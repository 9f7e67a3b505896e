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

import type { Connection, Stream } from '@libp2p/interface'
import { lpStream } from '@libp2p/utils'

import type { ClusterVerifier, MemberRole } from '../admission/credentials.ts'
import { f, message, type MessageOf } from '../codec/wire.ts'
import { NaiadError } from '../errors.ts'
import { RpcError } from '../messages/index.ts'
import { LIMITS, PROTOCOLS } from '../protocols.ts'
import type { FabricNode } from './node.ts'
import { call, raiseRemote, type DialTarget } from './rpc.ts'
import { raceSignal } from './session.ts'

/** renew false: "show me your credential"; renew true (to the supernode): "issue me a fresh one". */
export const MembershipRequest = message('MembershipRequest', {
  renew: f.bool(1)
})

export const MembershipResponse = message('MembershipResponse', {
  error: f.message(1, RpcError),
  credential: f.bytes(2),
  /** With a renewal: peers revoked whose credentials may still be unexpired. */
  revoked: f.repeated(f.string(3))
})

export type MembershipRequest = MessageOf<typeof MembershipRequest>
export type MembershipResponse = MessageOf<typeof MembershipResponse>

/** Largest membership message accepted either way. */
const MAX_MEMBERSHIP_BYTES = 256 * 1024

export interface FabricGuard {
  /** At the handshake: refuse this peer outright (it cannot even open a stream). */
  denyPeer(peerId: string): boolean
  /** Before any stream on `connection` is handled or opened: is the other side a member? */
  admit(connection: Connection, signal: AbortSignal): Promise<boolean>
  /** This node's answer on the membership protocol. */
  answer(req: MembershipRequest, connection: Connection): Promise<Partial<MembershipResponse>> | Partial<MembershipResponse>
}

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
    try {
      const res = await exchange(connection, { renew: false }, AbortSignal.timeout(LIMITS.callTimeoutMs))
      credential = res.credential
    } catch {
      return false // a stranger speaks no membership protocol, or did not answer in time
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

/**
 * Puts `guard` in front of every protocol of `node`: handlers registered with `node.handle`
 * (by anyone: the scheduler, plugins, uploads, control) run only for members, streams are
 * opened with `node.dialProtocol` only to members, and the membership protocol answers.
 */
export async function guardNode(node: FabricNode, guard: FabricGuard): Promise<void> {
  const handle = node.handle.bind(node)
  const refuse = (stream: Stream, connection: Connection, why: string): void => {
    stream.abort(new NaiadError('PROTO_ERR_FORBIDDEN', why))
    void connection.close().catch(() => connection.abort(new Error(why)))
  }
  await handle(PROTOCOLS.membership, async (stream, connection) => {
    const signal = AbortSignal.timeout(LIMITS.callTimeoutMs)
    const lp = lpStream(stream, { maxDataLength: 1024 })
    try {
      const req = MembershipRequest.decode((await lp.read({ signal })).subarray())
      let res: Partial<MembershipResponse>
      try {
        res = await guard.answer(req, connection)
      } catch (err) {
        const e = err instanceof NaiadError ? err : new NaiadError('PROTO_ERR_REMOTE', String(err))
        res = { error: { code: e.code, message: e.message } }
      }
      await lp.write(MembershipResponse.encode(res), { signal })
      await stream.close({ signal })
    } catch (err) {
      stream.abort(err as Error)
    }
  }, { maxInboundStreams: 8 })

  node.handle = async (protocol, handler, options) => handle(protocol, async (stream, connection) => {
    let ok = false
    try {
      ok = await guard.admit(connection, AbortSignal.timeout(LIMITS.callTimeoutMs))
    } catch {
      ok = false
    }
    if (!ok) return refuse(stream, connection, `${connection.remotePeer.toString()} is not a member of this cluster`)
    return handler(stream, connection)
  }, options)

  node.dialProtocol = async (peer, protocols, options = {}) => {
    const connection = await node.dial(peer, options)
    const ok = await guard.admit(connection, options.signal ?? AbortSignal.timeout(LIMITS.callTimeoutMs)).catch(() => false)
    if (!ok) {
      void connection.close().catch(() => {})
      throw new NaiadError('PROTO_ERR_FORBIDDEN', `${connection.remotePeer.toString()} is not a member of this cluster`)
    }
    return connection.newStream(protocols, options)
  }
}

/** A node asks its supernode for a fresh credential (and the list of revoked peers). */
export async function renewMembership(node: FabricNode, supernode: DialTarget, signal?: AbortSignal): Promise<MembershipResponse> {
  const res = await call(node, supernode, PROTOCOLS.membership, MembershipRequest, MembershipResponse, { renew: true }, { signal, maxResponseBytes: MAX_MEMBERSHIP_BYTES })
  raiseRemote(res.error)
  return res
}
