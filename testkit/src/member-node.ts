// A bare fabric node that joined a test supernode's cluster, in the test's own process: for
// tests that play a daemon by hand (one that never answers, or an admitted node that tries
// what it should not). It joins exactly as dfdaemon does: a join request with the token's
// proof, then a guarded fabric node that shows its credential to whoever asks.

import {
  ClusterVerifier, createFabricNode, joinRequest, loadPeerId, MemberGuard, parseToken, type FabricNode
} from '@naiad/proto'

import type { SupernodeHandle } from './processes.ts'

export interface MemberNode {
  node: FabricNode
  /** The membership credential the supernode issued. */
  credential: Uint8Array
  guard: MemberGuard
}

/** Joins `supernode`'s cluster with `joinToken` (its own by default) and starts a fabric node on loopback. */
export async function startMemberNode(dataDir: string, supernode: SupernodeHandle, joinToken = supernode.joinToken): Promise<MemberNode> {
  const token = parseToken(joinToken)
  const peerId = await loadPeerId(dataDir)
  const res = await fetch(`${supernode.url}/api/v1/join`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ ...joinRequest(token, peerId), hostname: 'test-member' })
  })
  const body = await res.json() as { credential?: string; message?: string }
  if (!res.ok || body.credential === undefined) throw new Error(`join refused: HTTP ${res.status} ${body.message ?? ''}`)
  const credential = Buffer.from(body.credential, 'base64')
  const verifier = new ClusterVerifier(token.claims.cluster!)
  const guard = new MemberGuard({ verifier: () => verifier, credential: () => credential, revoked: () => false })
  const node = await createFabricNode({ dataDir, listen: ['/ip4/127.0.0.1/tcp/0'], guard })
  return { node, credential, guard }
}
