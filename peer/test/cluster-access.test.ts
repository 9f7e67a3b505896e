// ClusterAccess, the PeerAccess the data channel asks: members only, pieces only with the
// supernode's grant for that peer and task, revoked peers never.

import { generateKeyPairSync } from 'node:crypto'

import { describe, expect, it } from 'vitest'
import { ClusterSigner, ClusterVerifier } from '@naiad/proto'

import { ClusterAccess, OPEN_ACCESS } from '../src/index.ts'

const signer = new ClusterSigner(generateKeyPairSync('ed25519').privateKey)
const other = new ClusterSigner(generateKeyPairSync('ed25519').privateKey)
const ME = '12D3KooWMeMeMeMeMeMeMeMeMeMeMeMeMeMeMeMeMeMeMeMe'
const PEER = '12D3KooWPeerPeerPeerPeerPeerPeerPeerPeerPeerPeer'
const TASK = 'c'.repeat(64)

function access(revoked = new Set<string>(), now = Date.now): ClusterAccess {
  const verifier = new ClusterVerifier(signer.publicKey)
  const mine = signer.membershipFor(ME, 'node', 60_000)
  return new ClusterAccess({ verifier: () => verifier, credential: () => mine, revoked: (p) => revoked.has(p), now })
}

describe('cluster access', () => {
  it('sends its own credential and admits members of its cluster only', () => {
    const a = access()
    expect(new ClusterVerifier(signer.publicKey).membership(a.credential(), ME).peer).toBe(ME)
    expect(a.admit(PEER, signer.membershipFor(PEER, 'node', 60_000))).toBe(true)
    expect(a.admit(PEER, new Uint8Array(0))).toBe(false)
    expect(a.admit(PEER, signer.membershipFor(ME, 'node', 60_000))).toBe(false)
    expect(a.admit(PEER, other.membershipFor(PEER, 'node', 60_000))).toBe(false)
    expect(a.admit(PEER, signer.membershipFor(PEER, 'node', 1000, Date.now() - 5000))).toBe(false)
  })

  it('authorizes a piece only with an unexpired grant for that peer and task', () => {
    const a = access()
    const grant = signer.grantFor(PEER, TASK, 60_000)
    expect(a.authorize(PEER, TASK, grant)).toBe(true)
    expect(a.authorize(PEER, 'd'.repeat(64), grant)).toBe(false)
    expect(a.authorize(ME, TASK, grant)).toBe(false)
    expect(a.authorize(PEER, TASK, new Uint8Array(0))).toBe(false)
    expect(a.authorize(PEER, TASK, other.grantFor(PEER, TASK, 60_000))).toBe(false)
    expect(access(new Set(), () => Date.now() + 120_000).authorize(PEER, TASK, grant)).toBe(false)
    expect(a.refusal(PEER, TASK, new Uint8Array(0))?.code).toBe('PROTO_ERR_FORBIDDEN')
  })

  it('checks a credential or grant once while it is valid, and refuses it once revoked or expired', () => {
    const revoked = new Set<string>()
    let now = Date.now()
    const verifier = new ClusterVerifier(signer.publicKey)
    const verify = { membership: 0, grant: 0 }
    const counting = Object.assign(Object.create(verifier) as ClusterVerifier, {
      membership: (...args: Parameters<ClusterVerifier['membership']>) => { verify.membership++; return verifier.membership(...args) },
      grant: (...args: Parameters<ClusterVerifier['grant']>) => { verify.grant++; return verifier.grant(...args) }
    })
    const a = new ClusterAccess({ verifier: () => counting, credential: () => new Uint8Array(0), revoked: (p) => revoked.has(p), now: () => now })
    const credential = signer.membershipFor(PEER, 'node', 60_000, now)
    const grant = signer.grantFor(PEER, TASK, 60_000, now)
    for (let i = 0; i < 3; i++) {
      expect(a.admit(PEER, credential)).toBe(true)
      expect(a.authorize(PEER, TASK, grant)).toBe(true)
    }
    expect(verify).toEqual({ membership: 1, grant: 1 })
    // Remembered or not, a credential is another peer's only when it names that peer.
    expect(a.admit(ME, credential)).toBe(false)
    revoked.add(PEER)
    expect(a.admit(PEER, credential)).toBe(false)
    expect(a.authorize(PEER, TASK, grant)).toBe(false)
    revoked.clear()
    now += 61_000
    expect(a.admit(PEER, credential)).toBe(false)
    expect(a.authorize(PEER, TASK, grant)).toBe(false)
  })

  it('forgets what it checked when the cluster key changes', () => {
    let verifier = new ClusterVerifier(signer.publicKey)
    const a = new ClusterAccess({ verifier: () => verifier, credential: () => new Uint8Array(0), revoked: () => false })
    const credential = signer.membershipFor(PEER, 'node', 60_000)
    expect(a.admit(PEER, credential)).toBe(true)
    verifier = new ClusterVerifier(other.publicKey)
    expect(a.admit(PEER, credential)).toBe(false)
  })

  it('refuses a revoked peer whatever it holds', () => {
    const revoked = new Set([PEER])
    const a = access(revoked)
    expect(a.admit(PEER, signer.membershipFor(PEER, 'node', 60_000))).toBe(false)
    expect(a.authorize(PEER, TASK, signer.grantFor(PEER, TASK, 60_000))).toBe(false)
  })

  it('refuses everyone before the node knows its cluster', () => {
    const a = new ClusterAccess({ verifier: () => undefined, credential: () => new Uint8Array(0), revoked: () => false })
    expect(a.admit(PEER, signer.membershipFor(PEER, 'node', 60_000))).toBe(false)
    expect(OPEN_ACCESS.authorize(PEER, TASK, new Uint8Array(0))).toBe(true)
  })
})
