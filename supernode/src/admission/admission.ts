// Cluster admission on the supernode: the cluster key, the nodes that joined, their
// credentials and grants, and the fabric guard built on them. Daemons join over HTTP
// (`POST /api/v1/join`, proving they hold a join token without sending it), get a
// membership credential bound to their peer ID, and renew it over the fabric; the
// supernode refuses any peer that did not join, or was revoked, at the handshake.

import type { Connection } from '@libp2p/interface'
import {
  ClusterVerifier, MemberGuard, NaiadError, verifyJoinRequest, verifyToken,
  type ClusterSigner, type FabricGuard, type JoinRequest, type MembershipRequest, type MembershipResponse, type TokenClaims
} from '@naiad/proto'

import type { NodeRecord, NodeRegistry } from './node-registry.ts'

/** A node's credential lasts this long; daemons renew it well before. */
export const NODE_CREDENTIAL_TTL_MS = 60 * 60_000
/** The supernode's own credential (its peers check it when they dial it). */
export const SUPERNODE_CREDENTIAL_TTL_MS = 24 * 3600_000
/** A grant lasts this long; getParents hands out fresh ones. */
export const GRANT_TTL_MS = 10 * 60_000
/** Grants cached for reuse (a fresh signature per getParents call would cost the scheduler). */
const MAX_CACHED_GRANTS = 100_000

export interface JoinAnswer {
  credential: string
  supernode: { peerId: string; credential: string }
}

export class Admission implements FabricGuard {
  readonly signer: ClusterSigner
  readonly nodes: NodeRegistry
  readonly selfId: string
  private own: { bytes: Uint8Array; renewAt: number } | undefined
  private readonly grants = new Map<string, { bytes: Uint8Array; renewAt: number }>()
  private readonly revokeListeners: Array<(id: string) => void> = []
  /**
   * True while other supernodes of the cluster are live. A node may then have joined through
   * another one: it is let in on the credential it proves (signed by the cluster key, which
   * every supernode of a cluster shares), as the daemons let each other in. Alone, a
   * supernode refuses at the handshake every peer that did not join it.
   */
  othersLive: () => boolean = () => false
  /** Peers that proved a credential of this cluster (asked for on their connection). */
  private readonly proven: MemberGuard

  constructor(signer: ClusterSigner, nodes: NodeRegistry, selfId: string) {
    this.signer = signer
    this.nodes = nodes
    this.selfId = selfId
    const verifier = new ClusterVerifier(signer.publicKey)
    this.proven = new MemberGuard({ verifier: () => verifier, credential: () => this.credential(), revoked: (id) => nodes.isRevoked(id) })
  }

  /** The supernode's own membership credential (role supernode). */
  credential(): Uint8Array {
    const now = Date.now()
    if (this.own === undefined || now >= this.own.renewAt) {
      this.own = { bytes: this.signer.membershipFor(this.selfId, 'supernode', SUPERNODE_CREDENTIAL_TTL_MS, now), renewAt: now + SUPERNODE_CREDENTIAL_TTL_MS / 2 }
    }
    return this.own.bytes
  }

  /** Whether `peerId` proved a credential of this cluster with the role supernode (on a connection the guard admitted). */
  isSupernode(peerId: string): boolean {
    return peerId !== this.selfId && this.proven.roleOf(peerId) === 'supernode'
  }

  denyPeer(peerId: string): boolean {
    if (peerId === this.selfId || this.nodes.isAdmitted(peerId)) return false
    return this.nodes.isRevoked(peerId) || !this.othersLive()
  }

  async admit(connection: Connection, signal?: AbortSignal): Promise<boolean> {
    const peer = connection.remotePeer.toString()
    if (peer === this.selfId || this.nodes.isAdmitted(peer)) return true
    // A node that joined through another supernode of the cluster is in the shared database
    // before the next poll brings it here: look once (one read shared by all who wait).
    if (!this.nodes.knows(peer)) await this.poll()
    if (this.nodes.isAdmitted(peer)) return true
    if (this.denyPeer(peer)) return false
    return this.proven.admit(connection, signal ?? AbortSignal.timeout(10_000))
  }

  /** The membership protocol: anyone may see the supernode's credential; an admitted node renews its own. */
  answer(req: MembershipRequest, connection: Connection): Partial<MembershipResponse> {
    if (!req.renew) return { credential: this.credential() }
    const peer = connection.remotePeer.toString()
    if (!this.nodes.isAdmitted(peer) && this.proven.roleOf(peer) !== 'node') throw new NaiadError('PROTO_ERR_FORBIDDEN', `${peer} is not admitted`)
    const now = Date.now()
    return {
      credential: this.signer.membershipFor(peer, 'node', NODE_CREDENTIAL_TTL_MS, now),
      revoked: this.nodes.revokedSince(now - NODE_CREDENTIAL_TTL_MS)
    }
  }

  /** `POST /api/v1/join`: checks the proof of a join token and admits the node. */
  async join(body: unknown): Promise<JoinAnswer> {
    if (body === null || typeof body !== 'object') throw new NaiadError('SN_ERR_BAD_REQUEST', 'a join request is a JSON object {claims, peerId, at, proof, hostname?}')
    const req = body as JoinRequest & { hostname?: unknown }
    const claims: TokenClaims = verifyJoinRequest(this.signer, req)
    const node = await this.nodes.join(req.peerId, typeof req.hostname === 'string' ? req.hostname : '', claims.id)
    return {
      credential: Buffer.from(this.signer.membershipFor(node.id, 'node', NODE_CREDENTIAL_TTL_MS)).toString('base64'),
      supernode: { peerId: this.selfId, credential: Buffer.from(this.credential()).toString('base64') }
    }
  }

  /** Checks `Authorization: Bearer <api token>`; throws PROTO_ERR_BAD_TOKEN. */
  checkApiToken(header: string | undefined): TokenClaims {
    const m = header === undefined ? null : /^Bearer\s+(\S+)\s*$/i.exec(header)
    if (m === null) throw new NaiadError('PROTO_ERR_BAD_TOKEN', 'this endpoint needs Authorization: Bearer <api token> (supernode token create --scope api)')
    return verifyToken(this.signer, m[1], 'api')
  }

  /** A grant for `peerId` to fetch task `taskId`'s pieces (reused until half its life). */
  grant(peerId: string, taskId: string): Uint8Array {
    const key = `${peerId}/${taskId}`
    const now = Date.now()
    const cached = this.grants.get(key)
    if (cached !== undefined && now < cached.renewAt) return cached.bytes
    const bytes = this.signer.grantFor(peerId, taskId, GRANT_TTL_MS, now)
    this.grants.delete(key)
    if (this.grants.size >= MAX_CACHED_GRANTS) this.grants.delete(this.grants.keys().next().value!)
    this.grants.set(key, { bytes, renewAt: now + GRANT_TTL_MS / 2 })
    return bytes
  }

  /** Called with every node revoked, here or by another process (see poll). */
  onRevoke(listener: (id: string) => void): void {
    this.revokeListeners.push(listener)
  }

  async revoke(id: string): Promise<NodeRecord> {
    const wasAdmitted = this.nodes.isAdmitted(id)
    const record = await this.nodes.revoke(id)
    if (wasAdmitted) this.revoked(id)
    return record
  }

  /** Picks up joins and revocations written by other processes (`supernode node revoke`, the cluster's other supernodes). */
  async poll(): Promise<void> {
    for (const id of await this.nodes.refresh()) this.revoked(id)
  }

  private revoked(id: string): void {
    this.proven.forget(id)
    for (const key of this.grants.keys()) if (key.startsWith(`${id}/`)) this.grants.delete(key)
    for (const l of this.revokeListeners) l(id)
  }
}
