// Cluster admission in proto: signed credentials and grants, join and API tokens, and the
// fabric guard that refuses every protocol to a peer without a valid credential.

import { generateKeyPairSync } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import {
  call, ClusterSigner, ClusterVerifier, createFabricNode, joinRequest, MemberGuard, mintToken, parseToken, SchedulerRequest,
  SchedulerResponse, serve, Signed, verifyJoinRequest, verifyToken, type FabricNode
} from '../src/index.ts'

const newSigner = (): ClusterSigner => new ClusterSigner(generateKeyPairSync('ed25519').privateKey)
const PEER = '12D3KooWPeerPeerPeerPeerPeerPeerPeerPeerPeerPeerPeer'
const TASK = 'a'.repeat(64)

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn()
    return undefined
  } catch (err) {
    return (err as { code?: string }).code
  }
}

describe('credentials and grants', () => {
  const signer = newSigner()
  const verifier = new ClusterVerifier(signer.publicKey)

  it('verifies a membership for its own peer only, until it expires', () => {
    const cred = signer.membershipFor(PEER, 'node', 60_000, 1000)
    expect(verifier.membership(cred, PEER, 2000)).toMatchObject({ peer: PEER, role: 'node', expiresAt: 61_000 })
    expect(codeOf(() => verifier.membership(cred, 'someone-else', 2000))).toBe('PROTO_ERR_FORBIDDEN')
    expect(codeOf(() => verifier.membership(cred, PEER, 61_000))).toBe('PROTO_ERR_FORBIDDEN')
    expect(codeOf(() => verifier.membership(new Uint8Array(0), PEER))).toBe('PROTO_ERR_FORBIDDEN')
    expect(codeOf(() => verifier.membership(new Uint8Array(5000), PEER))).toBe('PROTO_ERR_FORBIDDEN')
  })

  it('refuses another cluster\'s signature, a tampered body and a grant posing as a membership', () => {
    const other = newSigner()
    expect(codeOf(() => verifier.membership(other.membershipFor(PEER, 'node', 60_000), PEER))).toBe('PROTO_ERR_FORBIDDEN')
    const s = Signed.decode(signer.membershipFor(PEER, 'node', 60_000))
    const tampered = Signed.encode({ ...s, body: Uint8Array.from([...s.body.subarray(0, -1), s.body[s.body.length - 1] ^ 1]) })
    expect(codeOf(() => verifier.membership(tampered, PEER))).toBe('PROTO_ERR_FORBIDDEN')
    expect(codeOf(() => verifier.membership(signer.grantFor(PEER, TASK, 60_000), PEER))).toBe('PROTO_ERR_FORBIDDEN')
    expect(codeOf(() => verifier.membership(Uint8Array.from([0xff, 0xff, 0xff]), PEER))).toBe('PROTO_ERR_FORBIDDEN')
  })

  it('binds a grant to one peer and one task, for its lifetime', () => {
    const g = signer.grantFor(PEER, TASK, 30_000, 0)
    expect(verifier.grant(g, PEER, TASK, 10)).toMatchObject({ peer: PEER, task: TASK })
    expect(codeOf(() => verifier.grant(g, PEER, 'b'.repeat(64), 10))).toBe('PROTO_ERR_FORBIDDEN')
    expect(codeOf(() => verifier.grant(g, 'other', TASK, 10))).toBe('PROTO_ERR_FORBIDDEN')
    expect(codeOf(() => verifier.grant(g, PEER, TASK, 30_000))).toBe('PROTO_ERR_FORBIDDEN')
  })
})

describe('tokens', () => {
  const signer = newSigner()

  it('mints join and API tokens that only this cluster accepts, each for its scope', () => {
    const join = mintToken(signer, 'join', 60_000)
    const api = mintToken(signer, 'api', 0)
    expect(join).toMatch(/^naiad1\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{43}$/)
    expect(verifyToken(signer, join, 'join').scope).toBe('join')
    expect(Buffer.from(parseToken(join).claims.cluster!)).toEqual(Buffer.from(signer.publicKey))
    expect(verifyToken(signer, api, 'api').expiresAt).toBe(0)
    expect(codeOf(() => verifyToken(signer, join, 'api'))).toBe('PROTO_ERR_BAD_TOKEN')
    expect(codeOf(() => verifyToken(newSigner(), api, 'api'))).toBe('PROTO_ERR_BAD_TOKEN')
    expect(codeOf(() => verifyToken(signer, `${api.slice(0, -2)}AA`, 'api'))).toBe('PROTO_ERR_BAD_TOKEN')
    expect(codeOf(() => verifyToken(signer, 'Bearer nonsense', 'api'))).toBe('PROTO_ERR_BAD_TOKEN')
    expect(codeOf(() => verifyToken(signer, mintToken(signer, 'api', 1000, 0), 'api', 5000))).toBe('PROTO_ERR_BAD_TOKEN')
  })

  it('joins with a proof bound to the peer ID and the time, never the token itself', () => {
    const token = parseToken(mintToken(signer, 'join', 60_000))
    const req = joinRequest(token, PEER, 1_000_000)
    expect(JSON.stringify(req)).not.toContain(token.mac.toString('base64url'))
    expect(verifyJoinRequest(signer, req, 1_000_000).scope).toBe('join')
    // The same proof cannot admit another peer, nor be replayed much later.
    expect(codeOf(() => verifyJoinRequest(signer, { ...req, peerId: 'attacker' }, 1_000_000))).toBe('PROTO_ERR_BAD_TOKEN')
    expect(codeOf(() => verifyJoinRequest(signer, req, 1_000_000 + 10 * 60_000))).toBe('PROTO_ERR_BAD_TOKEN')
    expect(codeOf(() => verifyJoinRequest(newSigner(), req, 1_000_000))).toBe('PROTO_ERR_BAD_TOKEN')
    const api = parseToken(mintToken(signer, 'api', 60_000))
    expect(codeOf(() => verifyJoinRequest(signer, joinRequest(api, PEER, 5), 5))).toBe('PROTO_ERR_BAD_TOKEN')
  })
})

describe('fabric guard', () => {
  const signer = newSigner()
  const revoked = new Set<string>()
  let dir: string
  let server: FabricNode
  let member: FabricNode
  let stranger: FabricNode
  let unguarded: FabricNode
  let serverGuard: MemberGuard
  let handled = 0

  const guarded = async (name: string, cluster: ClusterSigner): Promise<{ node: FabricNode; guard: MemberGuard }> => {
    let id = ''
    const v = new ClusterVerifier(cluster.publicKey)
    const guard = new MemberGuard({ verifier: () => v, credential: () => cluster.membershipFor(id, 'node', 60_000), revoked: (p) => revoked.has(p) })
    const node = await createFabricNode({ dataDir: join(dir, name), listen: ['/ip4/127.0.0.1/tcp/0'], guard })
    id = node.peerId.toString()
    return { node, guard }
  }

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'naiad-admission-'))
    ;({ node: server, guard: serverGuard } = await guarded('server', signer))
    ;({ node: member } = await guarded('member', signer))
    // A Naiad node of another cluster: its credential is genuine, but not ours.
    ;({ node: stranger } = await guarded('stranger', newSigner()))
    unguarded = await createFabricNode({ dataDir: join(dir, 'plain'), listen: ['/ip4/127.0.0.1/tcp/0'] })
    await serve(server, '/naiad/test-guarded/1.0.0', SchedulerRequest, SchedulerResponse, async () => {
      handled++
      return {}
    })
  })

  afterAll(async () => {
    await Promise.all([server, member, stranger, unguarded].map((n) => n?.stop()))
    await rm(dir, { recursive: true, force: true })
  })

  /** A member of the cluster whose answer to "show me your membership" takes `delayMs` (a loaded machine). */
  const slowMember = async (name: string, delayMs: number): Promise<FabricNode> => {
    const v = new ClusterVerifier(signer.publicKey)
    let id = ''
    const inner = new MemberGuard({ verifier: () => v, credential: () => signer.membershipFor(id, 'node', 60_000), revoked: () => false })
    const slowGuard = Object.assign(Object.create(inner) as MemberGuard, {
      answer: async (req: Parameters<MemberGuard['answer']>[0]) => { await new Promise((resolve) => setTimeout(resolve, delayMs)); return inner.answer(req) }
    })
    const node = await createFabricNode({ dataDir: join(dir, name), listen: ['/ip4/127.0.0.1/tcp/0'], guard: slowGuard })
    id = node.peerId.toString()
    return node
  }

  const ask = (from: FabricNode): Promise<unknown> =>
    call(from, server.getMultiaddrs(), '/naiad/test-guarded/1.0.0', SchedulerRequest, SchedulerResponse, { leaveHost: true }, { timeoutMs: 5000 })

  it('serves a member', async () => {
    await ask(member)
    expect(handled).toBe(1)
    expect(serverGuard.roleOf(member.peerId.toString())).toBe('node')
  })

  it('refuses a plain libp2p node and a node of another cluster before the handler runs', async () => {
    // The server resets the stream: the caller learns no more than that.
    await expect(ask(unguarded)).rejects.toMatchObject({ code: 'PROTO_ERR_DIAL' })
    // A node of another cluster does not even open the stream: the server is no member of its cluster.
    await expect(ask(stranger)).rejects.toMatchObject({ code: 'PROTO_ERR_FORBIDDEN' })
    expect(handled).toBe(1)
    // Nor does a member talk to a stranger's protocols.
    await serve(stranger, '/naiad/test-guarded/1.0.0', SchedulerRequest, SchedulerResponse, async () => ({}))
    await expect(call(member, stranger.getMultiaddrs(), '/naiad/test-guarded/1.0.0', SchedulerRequest, SchedulerResponse, { leaveHost: true }, { timeoutMs: 5000 }))
      .rejects.toMatchObject({ code: 'PROTO_ERR_FORBIDDEN' })
  })

  it('tells a member that proves itself late from a stranger: the caller\'s timeout, not a refusal', async () => {
    // A member whose membership answer comes after the caller's call has timed out (a loaded machine).
    const slow = await slowMember('slow', 5000)
    try {
      await serve(slow, '/naiad/test-guarded/1.0.0', SchedulerRequest, SchedulerResponse, async () => ({}))
      await expect(call(member, slow.getMultiaddrs(), '/naiad/test-guarded/1.0.0', SchedulerRequest, SchedulerResponse, { leaveHost: true }, { timeoutMs: 1500 }))
        .rejects.toMatchObject({ code: 'PROTO_ERR_TIMEOUT' })
    } finally {
      await slow.stop()
    }
  })

  it('keeps the connection of a member that proves itself too late for one stream: only that stream fails', async () => {
    // The caller is the slow one here: the server's guard asks it for its membership, and the
    // answer comes after the server's own wait (a loaded daemon calling a supernode).
    const slow = await slowMember('slow-caller', 6000)
    const before = handled
    try {
      await expect(call(slow, server.getMultiaddrs(), '/naiad/test-guarded/1.0.0', SchedulerRequest, SchedulerResponse, { leaveHost: true }, { timeoutMs: 10_000 }))
        .rejects.toBeDefined()
      expect(handled).toBe(before)
      // Before, the server closed the whole connection, every other call of the node with it.
      expect(server.getConnections(slow.peerId).filter((c) => c.status === 'open')).toHaveLength(1)
    } finally {
      await slow.stop()
    }
  }, 20_000)

  it('refuses a revoked member at the handshake', async () => {
    revoked.add(member.peerId.toString())
    await member.hangUp(server.peerId)
    await expect(ask(member)).rejects.toThrow()
    expect(handled).toBe(1)
    revoked.delete(member.peerId.toString())
  })
})
