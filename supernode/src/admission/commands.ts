// `supernode token create` and `supernode node list|revoke`: run on the supernode's host
// against its data directory, while the supernode runs or not. Tokens need only the cluster
// key; node commands use the supernode's shared database, its SQLite file or the PostgreSQL
// server of `database` (the running supernodes read revocations from it every few seconds).

import { existsSync } from 'node:fs'
import { join } from 'node:path'

import Database from 'better-sqlite3'
import { mintToken, NaiadError, parseDuration, type TokenScope } from '@naiad/proto'

import { openSharedDatabase } from '../database/open.ts'
import { loadClusterKey } from './cluster-key.ts'
import { NodeRegistry, type NodeRecord } from './node-registry.ts'

export async function tokenCreate(values: { scope: TokenScope; ttl: string; 'data-dir': string }, out: (line: string) => void, note: (line: string) => void): Promise<void> {
  const scope = values.scope
  const rawTtl = values.ttl
  const ttlMs = rawTtl.trim() === '0' ? 0 : parseDuration(rawTtl, '--ttl')
  const signer = await loadClusterKey(values['data-dir'])
  const token = mintToken(signer, scope, ttlMs)
  const until = ttlMs === 0 ? 'never expires' : `expires ${new Date(Date.now() + ttlMs).toISOString()}`
  note(scope === 'join'
    ? `join token for cluster ${signer.id} (${until}); on each node: dfdaemon --join-token <token> (or NAIAD_JOIN_TOKEN, or --join-token-file)`
    : `API token for cluster ${signer.id} (${until}); send it as Authorization: Bearer <token>`)
  out(token)
}

async function openRegistry(dataDir: string, url: string): Promise<{ registry: NodeRegistry; close(): Promise<void> }> {
  let db: Database.Database | undefined
  const sqlite = (): Database.Database => {
    const file = join(dataDir, 'supernode.db')
    if (!existsSync(file)) throw new NaiadError('PROTO_ERR_BAD_CONFIG', `no supernode database in ${dataDir}: give the supernode's --data-dir (or its --config)`)
    db = new Database(file, { fileMustExist: true })
    db.pragma('busy_timeout = 5000')
    return db
  }
  const sql = await openSharedDatabase(url, sqlite)
  return { registry: await NodeRegistry.open(sql), close: async () => { await sql.close(); db?.close() } }
}

export async function nodeCommand(values: { 'data-dir': string; database: string; json: boolean }, positionals: string[], out: (line: string) => void): Promise<void> {
  const [verb, id] = positionals
  if (verb !== 'list' && verb !== 'revoke') throw new NaiadError('PROTO_ERR_USAGE', `unknown node command "${verb}": expected list or revoke ID`)
  if (verb === 'revoke' && id === undefined) throw new NaiadError('PROTO_ERR_USAGE', 'node revoke needs the node\'s ID (see supernode node list)')
  if (verb === 'list' && id !== undefined) throw new NaiadError('PROTO_ERR_USAGE', `unexpected argument "${id}"`)
  const { registry, close } = await openRegistry(values['data-dir'], values.database)
  try {
    if (verb === 'revoke') {
      const n = await registry.revoke(id!)
      out(`revoked ${n.id}${n.hostname === '' ? '' : ` (${n.hostname})`} at ${new Date(n.revokedAt!).toISOString()}`)
      return
    }
    const nodes = await registry.list()
    if (values.json) {
      out(JSON.stringify(nodes, null, 2))
      return
    }
    out(table(nodes))
  } finally {
    await close()
  }
}

function table(nodes: NodeRecord[]): string {
  const rows = [['ID', 'HOSTNAME', 'JOINED', 'LAST JOIN', 'STATE'], ...nodes.map((n) => [
    n.id, n.hostname || '-', new Date(n.joinedAt).toISOString(), new Date(n.lastJoinAt).toISOString(),
    n.revokedAt === null ? 'admitted' : `revoked ${new Date(n.revokedAt).toISOString()}`
  ])]
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)))
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]))).join('  ')).join('\n')
}
