// Join and API tokens: `naiad1.<claims>.<mac>`, where the claims are base64url JSON and
// the MAC is HMAC-SHA256 under a key derived from the cluster key. Whoever holds the
// supernode's data directory can mint them (`supernode token create`); the running
// supernode checks them without any table, so a token created by another process while it
// runs is good at once.
//
// A join token also carries the cluster's public key: the daemon learns from it whom to
// trust (the supernode's and its peers' credentials) without trusting the network. A
// daemon never sends its join token over the wire: it sends the claims and a proof, an
// HMAC under the token's MAC over its own peer ID and the time, so someone reading a
// plain-HTTP join learns nothing they could join with.

import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto'

import { NaiadError } from '../errors.ts'
import type { ClusterSigner } from './credentials.ts'

export type TokenScope = 'join' | 'api'
export const TOKEN_SCOPES: readonly TokenScope[] = ['join', 'api']

export interface TokenClaims {
  scope: TokenScope
  /** Random ID, shown in `node list` for the nodes that joined with the token. */
  id: string
  /** ms since the epoch; 0: never expires. */
  expiresAt: number
  /** Join tokens: the cluster's Ed25519 public key. */
  cluster?: Uint8Array
}

export interface ParsedToken {
  claims: TokenClaims
  /** The claims as they were encoded, which the MAC covers. */
  encoded: string
  mac: Buffer
}

const PREFIX = 'naiad1'
/** Longest token accepted; real ones are about 150 characters. */
const MAX_TOKEN_CHARS = 1024
/** A join proof is good this long either side of the supernode's clock. */
export const JOIN_PROOF_WINDOW_MS = 5 * 60_000

function bad(why: string): NaiadError {
  return new NaiadError('PROTO_ERR_BAD_TOKEN', why)
}

function macOf(key: Buffer, encoded: string): Buffer {
  return createHmac('sha256', key).update(`${PREFIX}.${encoded}`).digest()
}

/** The MAC key of tokens, derived from the cluster key. */
export function tokenKey(signer: ClusterSigner): Buffer {
  return signer.derive('token-mac')
}

/** Mints a token; `ttlMs` 0 means it never expires. */
export function mintToken(signer: ClusterSigner, scope: TokenScope, ttlMs: number, now = Date.now()): string {
  const claims: Record<string, unknown> = { s: scope, i: randomBytes(8).toString('hex'), e: ttlMs > 0 ? now + ttlMs : 0 }
  if (scope === 'join') claims.k = Buffer.from(signer.publicKey).toString('base64url')
  const encoded = Buffer.from(JSON.stringify(claims)).toString('base64url')
  return `${PREFIX}.${encoded}.${macOf(tokenKey(signer), encoded).toString('base64url')}`
}

/** Splits a token and reads its claims; says nothing about whether it is genuine. */
export function parseToken(raw: string): ParsedToken {
  const token = raw.trim()
  if (token.length > MAX_TOKEN_CHARS) throw bad(`a token of ${token.length} characters (at most ${MAX_TOKEN_CHARS})`)
  const parts = token.split('.')
  if (parts.length !== 3 || parts[0] !== PREFIX || !/^[A-Za-z0-9_-]+$/.test(parts[1]) || !/^[A-Za-z0-9_-]{43}$/.test(parts[2])) {
    throw bad(`not a Naiad token (expected ${PREFIX}.CLAIMS.MAC, as "supernode token create" prints)`)
  }
  let raw2: { s?: unknown; i?: unknown; e?: unknown; k?: unknown }
  try {
    raw2 = JSON.parse(Buffer.from(parts[1], 'base64url').toString('utf8')) as typeof raw2
  } catch (err) {
    throw new NaiadError('PROTO_ERR_BAD_TOKEN', 'the token\'s claims are not JSON', { cause: err })
  }
  if (raw2 === null || typeof raw2 !== 'object') throw bad('the token\'s claims are not an object')
  if (raw2.s !== 'join' && raw2.s !== 'api') throw bad(`unknown token scope ${JSON.stringify(raw2.s)}`)
  if (typeof raw2.i !== 'string' || !/^[0-9a-f]{16}$/.test(raw2.i)) throw bad('the token has no valid ID')
  if (typeof raw2.e !== 'number' || !Number.isSafeInteger(raw2.e) || raw2.e < 0) throw bad('the token has no valid expiry')
  const claims: TokenClaims = { scope: raw2.s, id: raw2.i, expiresAt: raw2.e }
  if (raw2.s === 'join') {
    const k = typeof raw2.k === 'string' ? Buffer.from(raw2.k, 'base64url') : Buffer.alloc(0)
    if (k.length !== 32) throw bad('the join token carries no cluster key')
    claims.cluster = k
  }
  return { claims, encoded: parts[1], mac: Buffer.from(parts[2], 'base64url') }
}

/** Checks a token against the cluster key: genuine, of `scope`, not expired. */
export function verifyToken(signer: ClusterSigner, raw: string, scope: TokenScope, now = Date.now()): TokenClaims {
  const t = parseToken(raw)
  if (!timingSafeEqual(t.mac, macOf(tokenKey(signer), t.encoded))) throw bad('the token was not issued by this cluster')
  return checkClaims(signer, t.claims, scope, now)
}

function checkClaims(signer: ClusterSigner, claims: TokenClaims, scope: TokenScope, now: number): TokenClaims {
  if (claims.scope !== scope) throw bad(`a ${claims.scope} token where a ${scope} token is needed`)
  if (claims.expiresAt !== 0 && claims.expiresAt <= now) throw bad(`the token expired at ${new Date(claims.expiresAt).toISOString()}`)
  if (claims.cluster !== undefined && !Buffer.from(claims.cluster).equals(Buffer.from(signer.publicKey))) {
    throw bad('the token names another cluster key')
  }
  return claims
}

function proofOf(mac: Buffer, peerId: string, at: number): Buffer {
  return createHmac('sha256', mac).update(`naiad-join\0${peerId}\0${at}`).digest()
}

/** What a daemon sends to join: the claims, its peer ID, the time and the proof (never the token itself). */
export interface JoinRequest {
  claims: string
  peerId: string
  at: number
  proof: string
}

export function joinRequest(token: ParsedToken, peerId: string, now = Date.now()): JoinRequest {
  return { claims: token.encoded, peerId, at: now, proof: proofOf(token.mac, peerId, now).toString('base64url') }
}

/** The supernode's check of a join request; returns the claims of the token it proves. */
export function verifyJoinRequest(signer: ClusterSigner, req: JoinRequest, now = Date.now()): TokenClaims {
  if (typeof req.claims !== 'string' || typeof req.peerId !== 'string' || typeof req.at !== 'number' || typeof req.proof !== 'string') {
    throw bad('a join request is {claims, peerId, at, proof}')
  }
  if (Math.abs(now - req.at) > JOIN_PROOF_WINDOW_MS) throw bad('the join request\'s time is more than 5 minutes off this supernode\'s clock')
  const mac = macOf(tokenKey(signer), req.claims)
  const t = parseToken(`${PREFIX}.${req.claims}.${mac.toString('base64url')}`)
  const proof = Buffer.from(req.proof, 'base64url')
  const want = proofOf(mac, req.peerId, req.at)
  if (proof.length !== want.length || !timingSafeEqual(proof, want)) throw bad('the join proof does not match: the token was not issued by this cluster')
  return checkClaims(signer, t.claims, 'join', now)
}
