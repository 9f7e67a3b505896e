// The fabric's gate: a node built with a guard asks it, at the handshake and before every
// stream, whether the other side may use this node (see membership.ts for the guard members
// use), and answers the membership protocol with it. Apart from membership.ts so that the
// node (node.ts) can install the gate without importing the calls membership makes.

import type { Connection, Libp2p, Stream } from '@libp2p/interface'
import { lpStream } from '@libp2p/utils'

import { f, message, type MessageOf } from '../codec/wire.ts'
import { NaiadError } from '../errors.ts'
import { RpcError } from '../messages/index.ts'
import { LIMITS, PROTOCOLS } from '../protocols.ts'

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

export interface FabricGuard {
  /** At the handshake: refuse this peer outright (it cannot even open a stream). */
  denyPeer(peerId: string): boolean
  /** Before any stream on `connection` is handled or opened: is the other side a member? */
  admit(connection: Connection, signal: AbortSignal): Promise<boolean>
  /** This node's answer on the membership protocol. */
  answer(req: MembershipRequest, connection: Connection): Promise<Partial<MembershipResponse>> | Partial<MembershipResponse>
}

/**
 * Puts `guard` in front of every protocol of `node`: handlers registered with `node.handle`
 * (by anyone: the scheduler, plugins, uploads, control) run only for members, streams are
 * opened with `node.dialProtocol` only to members, and the membership protocol answers.
 */
export async function guardNode(node: Libp2p, guard: FabricGuard): Promise<void> {
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
    const signal = AbortSignal.timeout(LIMITS.callTimeoutMs)
    let ok = false
    try {
      ok = await guard.admit(connection, signal)
    } catch (err) {
      // A member that proves itself late (a loaded daemon) loses this stream, not its
      // connection: closing it cut every call of the node and made it dial again under load.
      if (signal.aborted || isTimeout(err)) {
        stream.abort(new NaiadError('PROTO_ERR_TIMEOUT', `${connection.remotePeer.toString()} did not prove its membership within ${LIMITS.callTimeoutMs} ms`))
        return
      }
      ok = false
    }
    if (!ok) return refuse(stream, connection, `${connection.remotePeer.toString()} is not a member of this cluster`)
    return handler(stream, connection)
  }, options)

  node.dialProtocol = async (peer, protocols, options = {}) => {
    const connection = await node.dial(peer, options)
    const signal = options.signal ?? AbortSignal.timeout(LIMITS.callTimeoutMs)
    // The caller gave up (its call timed out) before the other side proved itself: that is a
    // late answer, not a refusal. Taken for "not a member", it marked a loaded supernode
    // unreachable at once and sent a daemon's downloads to the origin.
    const ok = await guard.admit(connection, signal).catch((err: unknown) => {
      if (signal.aborted || isTimeout(err)) throw err
      return false
    })
    if (!ok) {
      void connection.close().catch(() => {})
      throw new NaiadError('PROTO_ERR_FORBIDDEN', `${connection.remotePeer.toString()} is not a member of this cluster`)
    }
    return connection.newStream(protocols, options)
  }
}

/** The guard could not tell in time (a late answer), as opposed to a refusal. */
function isTimeout(err: unknown): boolean {
  return err instanceof NaiadError && err.code === 'PROTO_ERR_TIMEOUT'
}
