// Membership credentials and per-task grants: short statements signed with the cluster's
// Ed25519 key. The supernode keeps the private half in its data directory and signs; every
// node learns the public half from its join token and checks them offline, so a daemon
// verifies a peer (or a grant) without asking the supernode, and keeps doing so while the
// supernode is away. See docs/security.md.

import { createHash, createPrivateKey, createPublicKey, hkdfSync, sign, verify, type KeyObject } from 'node:crypto'

import { f, message, type MessageOf } from '../codec/wire.ts'
import { NaiadError } from '../errors.ts'

/** "`peer` is a member of the cluster, as `role`, until `expiresAt`" (ms since the epoch). */
export const Membership = message('Membership', {
  peer: f.string(1),
  role: f.string(2), // 'node' | 'supernode'
  issuedAt: f.int64(3),
  expiresAt: f.int64(4)
})

/** "`peer` may fetch the pieces of task `task` until `expiresAt`." */
export const Grant = message('Grant', {
  peer: f.string(1),
  task: f.string(2),
  issuedAt: f.int64(3),
  expiresAt: f.int64(4)
})

/** What travels: a statement of kind `kind` and the cluster key's signature over it. */
export const Signed = message('Signed', {
  kind: f.string(1),
  body: f.bytes(2),
  signature: f.bytes(3)
})

export type Membership = MessageOf<typeof Membership>
export type Grant = MessageOf<typeof Grant>
export type MemberRole = 'node' | 'supernode'

/** Largest signed statement accepted: a peer ID, a task ID and a signature fit many times over. */
export const MAX_SIGNED_BYTES = 1024

const KINDS = { membership: 'naiad/membership/1', grant: 'naiad/grant/1' } as const

function signedBytes(kind: string, body: Uint8Array): Buffer {
  // The kind is part of what is signed: a grant can never pass for a membership.
  return Buffer.concat([Buffer.from(`${kind}\0`), body])
}

function b64url(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString('base64url')
}

/** Checks statements signed by the cluster key; holds only the public half. */
export class ClusterVerifier {
  /** The raw 32-byte Ed25519 public key. */
  readonly publicKey: Uint8Array
  /** A short fingerprint of the key, for logs and `node list`. */
  readonly id: string
  private readonly key: KeyObject

  constructor(publicKey: Uint8Array) {
    if (publicKey.length !== 32) throw new NaiadError('PROTO_ERR_BAD_CONFIG', `a cluster key is 32 bytes of Ed25519 public key, not ${publicKey.length}`)
    this.publicKey = Uint8Array.from(publicKey)
    this.id = createHash('sha256').update(publicKey).digest('hex').slice(0, 16)
    this.key = createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: b64url(publicKey) }, format: 'jwk' })
  }

  private open(kind: string, bytes: Uint8Array): Uint8Array {
    if (bytes.length === 0) throw forbidden('no credential')
    if (bytes.length > MAX_SIGNED_BYTES) throw forbidden(`a signed statement of ${bytes.length} bytes (at most ${MAX_SIGNED_BYTES})`)
    let s: MessageOf<typeof Signed>
    try {
      s = Signed.decode(bytes)
    } catch (err) {
      throw forbidden('a malformed signed statement', err)
    }
    if (s.kind !== kind) throw forbidden(`a ${s.kind || 'untyped'} statement where a ${kind} was expected`)
    if (s.signature.length !== 64 || !verify(null, signedBytes(kind, s.body), this.key, s.signature)) {
      throw forbidden(`a ${kind} not signed by this cluster's key`)
    }
    return s.body
  }

  /** The membership `bytes` states for `peerId`, if valid now; throws PROTO_ERR_FORBIDDEN otherwise. */
  membership(bytes: Uint8Array, peerId: string, now = Date.now()): Membership {
    const m = Membership.decode(this.open(KINDS.membership, bytes))
    if (m.peer !== peerId) throw forbidden(`a membership of ${m.peer} presented by ${peerId}`)
    if (m.expiresAt <= now) throw forbidden(`the membership of ${peerId} expired at ${new Date(m.expiresAt).toISOString()}`)
    return m
  }

  /** The grant `bytes` gives `peerId` for `taskId`, if valid now; throws PROTO_ERR_FORBIDDEN otherwise. */
  grant(bytes: Uint8Array, peerId: string, taskId: string, now = Date.now()): Grant {
    const g = Grant.decode(this.open(KINDS.grant, bytes))
    if (g.peer !== peerId) throw forbidden(`a grant for ${g.peer} presented by ${peerId}`)
    if (g.task !== taskId) throw forbidden(`a grant for task ${g.task.slice(0, 12)} presented for ${taskId.slice(0, 12)}`)
    if (g.expiresAt <= now) throw forbidden(`the grant of ${peerId} for task ${taskId.slice(0, 12)} expired`)
    return g
  }
}

/** Signs with the cluster key: the supernode's half. */
export class ClusterSigner extends ClusterVerifier {
  private readonly privateKey: KeyObject

  constructor(privateKey: KeyObject) {
    if (privateKey.asymmetricKeyType !== 'ed25519') throw new NaiadError('PROTO_ERR_BAD_CONFIG', `the cluster key must be Ed25519, not ${privateKey.asymmetricKeyType ?? 'unknown'}`)
    const jwk = createPublicKey(privateKey).export({ format: 'jwk' })
    super(Buffer.from(jwk.x ?? '', 'base64url'))
    this.privateKey = privateKey
  }

  /** Reads a PKCS#8 PEM Ed25519 key, as `cluster.key` holds it. */
  static fromPem(pem: string | Buffer): ClusterSigner {
    return new ClusterSigner(createPrivateKey(pem))
  }

  /** Secret bytes derived from the key for other uses (token MACs): only the key's holder can compute them. */
  derive(label: string): Buffer {
    const d = Buffer.from(this.privateKey.export({ format: 'jwk' }).d ?? '', 'base64url')
    return Buffer.from(hkdfSync('sha256', d, 'naiad', label, 32))
  }

  private seal(kind: string, body: Uint8Array): Uint8Array {
    return Signed.encode({ kind, body, signature: sign(null, signedBytes(kind, body), this.privateKey) })
  }

  membershipFor(peer: string, role: MemberRole, ttlMs: number, now = Date.now()): Uint8Array {
    return this.seal(KINDS.membership, Membership.encode({ peer, role, issuedAt: now, expiresAt: now + ttlMs }))
  }

  grantFor(peer: string, task: string, ttlMs: number, now = Date.now()): Uint8Array {
    return this.seal(KINDS.grant, Grant.encode({ peer, task, issuedAt: now, expiresAt: now + ttlMs }))
  }
}

function forbidden(why: string, cause?: unknown): NaiadError {
  return new NaiadError('PROTO_ERR_FORBIDDEN', `not admitted: ${why}`, cause === undefined ? undefined : { cause })
}
