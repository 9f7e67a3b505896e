// The supernode's admission logic in-process: the nodes table shared with `supernode node`
// (another process on the same database), the access check of private tasks, the scheduler
// gate, and the API's token check (with and without api.public-read).

import { generateKeyPairSync } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import Database from 'better-sqlite3'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { DestinationPolicy } from '@naiad/peer'
import { ClusterSigner, joinRequest, mintToken, parseToken, taskIdOf, type FabricNode, type Host, type RegisterTaskRequest } from '@naiad/proto'

import { Admission } from '../src/admission/admission.ts'
import { NodeRegistry } from '../src/admission/node-registry.ts'
import { GATE_DEFAULTS, SchedulerGate } from '../src/admission/scheduler-gate.ts'
import { TaskAccess, TASK_ACCESS_DEFAULTS } from '../src/admission/task-access.ts'
import { buildHttpApi } from '../src/api/http.ts'
import { migrate } from '../src/database/migrations.ts'
import { SqliteSql } from '../src/database/sql.ts'
import { Scheduler } from '../src/scheduler/scheduler.ts'

const PEER_A = '12D3KooWAaAaAaAaAaAaAaAaAaAaAaAaAaAaAaAaAaAaAaAaAaAa'
const PEER_B = '12D3KooWBbBbBbBbBbBbBbBbBbBbBbBbBbBbBbBbBbBbBbBbBbBb'
const SELF = '12D3KooWSeLfSeLfSeLfSeLfSeLfSeLfSeLfSeLfSeLfSeLfSeLf'

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn()
    return undefined
  } catch (err) {
    return (err as { code?: string }).code
  }
}

async function rejection(p: Promise<unknown>): Promise<string | undefined> {
  return p.then(() => undefined, (err: unknown) => (err as { code?: string }).code)
}

/** The node registry on a SQLite file, as the supernode and `supernode node` open it. */
async function registry(db: Database.Database): Promise<NodeRegistry> {
  const sql = new SqliteSql(db)
  await migrate(sql)
  return NodeRegistry.open(sql)
}

describe('supernode admission', () => {
  let dir: string
  let db: Database.Database
  const signer = new ClusterSigner(generateKeyPairSync('ed25519').privateKey)

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'naiad-sn-admission-'))
    db = new Database(join(dir, 'supernode.db'))
  })
  afterEach(async () => {
    db.close()
    await rm(dir, { recursive: true, force: true })
  })

  it('joins with a token proof, and sees a revocation written by another process', async () => {
    const admission = new Admission(signer, await registry(db), SELF)
    const revokedIds: string[] = []
    admission.onRevoke((id) => revokedIds.push(id))
    expect(admission.denyPeer(PEER_A)).toBe(true)
    const answer = await admission.join({ ...joinRequest(parseToken(mintToken(signer, 'join', 60_000)), PEER_A), hostname: 'node-a' })
    expect(signer.membership(Buffer.from(answer.credential, 'base64'), PEER_A).role).toBe('node')
    expect(signer.membership(Buffer.from(answer.supernode.credential, 'base64'), SELF).role).toBe('supernode')
    expect(admission.denyPeer(PEER_A)).toBe(false)
    expect(admission.denyPeer(SELF)).toBe(false)
    expect(await rejection(admission.join(joinRequest(parseToken(mintToken(signer, 'api', 60_000)), PEER_B)))).toBe('PROTO_ERR_BAD_TOKEN')

    // `supernode node revoke`: another connection to the same database.
    const other = new Database(join(dir, 'supernode.db'))
    await (await registry(other)).revoke(PEER_A)
    other.close()
    expect(admission.denyPeer(PEER_A)).toBe(false)
    await admission.poll()
    expect(admission.denyPeer(PEER_A)).toBe(true)
    expect(revokedIds).toEqual([PEER_A])
    expect(await rejection(admission.join(joinRequest(parseToken(mintToken(signer, 'join', 60_000)), PEER_A)))).toBe('SN_ERR_NODE_REVOKED')
    expect(await rejection(admission.revoke(PEER_B))).toBe('SN_ERR_NODE_NOT_FOUND')
    expect(codeOf(() => admission.checkApiToken(`Bearer ${mintToken(signer, 'join', 60_000)}`))).toBe('PROTO_ERR_BAD_TOKEN')
    expect(admission.checkApiToken(`Bearer ${mintToken(signer, 'api', 0)}`).scope).toBe('api')
  })

  it('grants a private task only to a node whose forwarded credentials open it, and a public one to any', async () => {
    const asked: Array<{ url: string; auth: string | undefined }> = []
    const probe = {
      probe: async (url: string, headers: Record<string, string>) => {
        asked.push({ url, auth: headers.authorization })
        if (url.includes('/public')) return 200
        return headers.authorization === 'Basic good' ? 200 : 401
      }
    }
    const access = new TaskAccess(probe, TASK_ACCESS_DEFAULTS)
    const pub = { id: 'p'.repeat(64), url: 'https://origin.example/public', headers: {} }
    const priv = { id: 'q'.repeat(64), url: 'https://registry.example/v2/x/blobs/sha256:1', headers: {} }
    await access.check(PEER_A, pub)
    await access.check(PEER_B, pub)
    expect(access.allowed(PEER_B, pub.id)).toBe(true)
    expect(await rejection(access.check(PEER_A, priv))).toBe('SN_ERR_FORBIDDEN')
    expect(await rejection(access.check(PEER_A, { ...priv, headers: { authorization: 'Basic bad' } }))).toBe('SN_ERR_FORBIDDEN')
    expect(access.allowed(PEER_A, priv.id)).toBe(false)
    await access.check(PEER_A, { ...priv, headers: { authorization: 'Basic good' } })
    expect(access.allowed(PEER_A, priv.id)).toBe(true)
    expect(access.allowed(PEER_B, priv.id)).toBe(false)
    expect(access.headersFor(priv.id)).toEqual({ authorization: 'Basic good' })
    // The anonymous answer is remembered: one probe per task, one more per node's proof.
    expect(asked.filter((a) => a.url === pub.url)).toHaveLength(1)
    access.forget(PEER_A)
    expect(access.allowed(PEER_A, priv.id)).toBe(false)
  })

  it('gates registrations: IDs recomputed, headers capped, new tasks rate limited, destinations checked, addresses confirmed', async () => {
    const admission = new Admission(signer, await registry(db), SELF)
    const access = new TaskAccess({ probe: async () => 200 })
    const known = new Set<string>()
    const gate = new SchedulerGate({ admission, access, policy: new DestinationPolicy({ allow: [], self: [] }), knows: (id) => known.has(id) },
      { ...GATE_DEFAULTS, registerRate: 1, registerBurst: 3, announceNetworks: ['10.20.0.0/16'] })
    const req = (url: string, extra: Partial<RegisterTaskRequest> = {}): RegisterTaskRequest =>
      ({ taskId: taskIdOf({ url }), url, headers: [], digest: '', range: '', filter: [], ...extra })

    await gate.register(PEER_A, req('https://origin.example/a'))
    expect(await rejection(gate.register(PEER_A, req('https://origin.example/b', { taskId: taskIdOf({ url: 'https://origin.example/a' }) })))).toBe('SN_ERR_TASK_ID_MISMATCH')
    expect(await rejection(gate.register(PEER_A, req('https://origin.example/c', { headers: [{ name: 'x-big', value: 'v'.repeat(17 * 1024) }] })))).toBe('SN_ERR_BAD_REQUEST')
    expect(await rejection(gate.register(PEER_A, req('http://127.0.0.1:8002/api/v1/peers')))).toBe('PROTO_ERR_DESTINATION_DENIED')
    expect(await rejection(gate.register(PEER_A, req('http://169.254.169.254/latest/meta-data/')))).toBe('PROTO_ERR_DESTINATION_DENIED')
    await gate.register(PEER_A, req('https://origin.example/d'))
    await gate.register(PEER_A, req('https://origin.example/e'))
    expect(await rejection(gate.register(PEER_A, req('https://origin.example/f')))).toBe('SN_ERR_RATE_LIMITED')
    // A task the scheduler knows costs no token; another node has its own bucket.
    known.add(taskIdOf({ url: 'https://origin.example/a' }))
    await gate.register(PEER_A, req('https://origin.example/a'))
    await gate.register(PEER_B, req('https://origin.example/f'))
    expect(admission.signer.grant(gate.grant(PEER_B, taskIdOf({ url: 'https://origin.example/f' })), PEER_B, taskIdOf({ url: 'https://origin.example/f' })).peer).toBe(PEER_B)
    expect(codeOf(() => gate.member(PEER_B, 'z'.repeat(64)))).toBe('SN_ERR_FORBIDDEN')

    const host: Host = {
      id: '', hostname: 'h', ip: '', idc: '', location: '', uploadSlots: 1, isSeed: false, labels: ['zone=a'], dataPort: 0, dataTransport: '',
      multiaddrs: ['/ip4/192.0.2.10/tcp/65002', '/ip4/198.51.100.1/tcp/65002', '/ip4/10.20.3.4/tcp/65002', '/dns4/elsewhere/tcp/1']
    }
    const seen = gate.announce(host, '192.0.2.10')
    expect(seen.multiaddrs).toEqual(['/ip4/192.0.2.10/tcp/65002', '/ip4/10.20.3.4/tcp/65002'])
    expect(seen.ip).toBe('192.0.2.10')
    expect(codeOf(() => gate.announce({ ...host, labels: Array.from({ length: 65 }, (_, i) => `k${i}=v`) }, '192.0.2.10'))).toBe('SN_ERR_BAD_REQUEST')
    expect(codeOf(() => gate.announce({ ...host, dataTransport: 'carrier-pigeon' }, '192.0.2.10'))).toBe('SN_ERR_BAD_REQUEST')
  })

  it('answers 401 without an API token, except on the open routes and, with api.public-read, on GETs', async () => {
    const admission = new Admission(signer, await registry(db), SELF)
    const node = { peerId: { toString: () => SELF }, getMultiaddrs: () => [] } as unknown as FabricNode
    const scheduler = new Scheduler({ hostTtlMs: 30_000 }, { markTask() {}, markPieces() {}, markPeer() {}, deletePeer() {}, markHost() {} })
    const token = `Bearer ${mintToken(signer, 'api', 60_000)}`
    for (const publicRead of [false, true]) {
      const app = buildHttpApi({ scheduler, node, ready: () => true, seed: false, admission, publicRead })
      const status = async (method: 'GET' | 'POST', url: string, authorization?: string): Promise<number> =>
        (await app.inject({ method, url, headers: authorization === undefined ? {} : { authorization } })).statusCode
      for (const open of ['/healthz', '/readyz', '/api/v1/info']) expect(await status('GET', open), open).toBe(200)
      expect(await status('GET', '/api/v1/tasks')).toBe(publicRead ? 200 : 401)
      expect(await status('GET', '/api/v1/peers')).toBe(publicRead ? 200 : 401)
      expect(await status('GET', '/api/v1/tasks', token)).toBe(200)
      expect(await status('POST', `/api/v1/nodes/${PEER_A}/revoke`)).toBe(401)
      expect(await status('POST', `/api/v1/nodes/${PEER_A}/revoke`, token)).toBe(404)
      const res = await app.inject({ method: 'POST', url: `/api/v1/nodes/${PEER_A}/revoke`, headers: { authorization: 'Bearer naiad1.e30.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA' } })
      expect(res.statusCode).toBe(401)
      expect(res.json()).toMatchObject({ code: 'SN_ERR_UNAUTHORIZED', errors: [{ code: 'UNAUTHORIZED' }] })
      await app.close()
    }
  })
})
