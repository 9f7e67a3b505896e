// The shared state on both databases: the stores' suite and the membership suite on SQLite
// and on a real PostgreSQL server (Debian's package, started here on a unix socket: one
// server for the file, one database per case), two supernodes migrating one database at
// once, a data dir written by main opening unchanged, and --database refused or
// unreachable at start-up. Supernode processes sharing one database (the preheat job taken
// over, the stores read from PostgreSQL) are in cluster-postgres.test.ts.

import { spawnSync } from 'node:child_process'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import Database from 'better-sqlite3'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createLogger } from '@naiad/proto'
import { startPostgres, type PostgresHandle } from '@naiad/testkit'

import { NodeRegistry } from '../src/admission/node-registry.ts'
import { MemoryMembership } from '../src/cluster/membership.ts'
import { SqlMembership } from '../src/cluster/sql-membership.ts'
import { SUPERNODE_COMMAND } from '../src/config/options.ts'
import { migrate, MIGRATIONS } from '../src/database/migrations.ts'
import { openSharedDatabase } from '../src/database/open.ts'
import { PostgresSql, SqliteSql, type Sql } from '../src/database/sql.ts'
import { HealthEventStore } from '../src/plugins/health/event-store.ts'
import { JobStore } from '../src/plugins/preheat/job-store.ts'
import { TraceStore } from '../src/plugins/slo/trace-store.ts'
import { createSupernode } from '../src/supernode.ts'
import { membershipSuite } from './membership-suite.ts'
import { sharedStateSuite, type Backend } from './shared-state-suite.ts'

const BIN = new URL('../bin/supernode.ts', import.meta.url).pathname

let dir: string
const closers: Array<() => unknown> = []

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'naiad-shared-state-'))
})
afterAll(async () => {
  for (const close of closers.reverse()) await close()
  await rm(dir, { recursive: true, force: true })
})

let n = 0
const sqlite: Backend = {
  concurrent: false,
  fresh: async () => {
    const file = join(dir, `s${++n}.db`)
    const open = async (): Promise<Sql> => {
      const db = new Database(file)
      db.pragma('journal_mode = WAL')
      db.pragma('busy_timeout = 5000')
      closers.push(() => db.close())
      const sql = new SqliteSql(db)
      await migrate(sql)
      return sql
    }
    return { sql: await open(), another: open }
  }
}

describe('shared state on SQLite', () => {
  sharedStateSuite(sqlite)
  membershipSuite(async () => {
    const { sql, another } = await sqlite.fresh()
    return [new SqlMembership(sql), new SqlMembership(await another())]
  })

  it('keeps other callers\' statements out of a transaction that awaits (one handle), so a rollback takes only its own', async () => {
    const { sql } = await sqlite.fresh()
    await sql.run('CREATE TABLE t (v TEXT)')
    let inside!: () => void
    const entered = new Promise<void>((resolve) => { inside = resolve })
    const failing = sql.transaction(async (tx) => {
      await tx.run("INSERT INTO t VALUES ('tx')")
      inside()
      await new Promise((r) => setTimeout(r, 50))
      throw new Error('rolled back')
    })
    await entered
    // Issued while it is open: a plain statement, then another transaction that fails too.
    const plain = sql.run("INSERT INTO t VALUES ('plain')")
    const next = sql.transaction(async (tx) => {
      await tx.run("INSERT INTO t VALUES ('next')")
      await new Promise((r) => setTimeout(r, 10))
      throw new Error('rolled back too')
    })
    await expect(failing).rejects.toThrow('rolled back')
    await expect(next).rejects.toThrow('rolled back too')
    await plain
    expect((await sql.all<{ v: string }>('SELECT v FROM t ORDER BY v')).map((r) => r.v)).toEqual(['plain'])
  })

  it('opens a data dir written by main: every row kept, stamped version 1 and up, stored credentials dropped', async () => {
    const db = new Database(join(dir, 'main.db'))
    closers.push(() => db.close())
    db.exec(await readFile(new URL('./fixtures/main-state.sql', import.meta.url), 'utf8'))
    const sql = await openSharedDatabase('', () => db)
    expect((await sql.all<{ version: number }>('SELECT version FROM schema_migrations ORDER BY version')).map((r) => r.version)).toEqual(MIGRATIONS.map((m) => m.version))
    const nodes = await NodeRegistry.open(sql)
    expect((await nodes.list()).map((r) => [r.hostname, r.revokedAt])).toEqual([['node-a', null], ['node-b', 1_700_000_002_000]])
    // Stamps written by main's registry still order the changes read after them.
    await nodes.join('12D3KooWCcCcCcCcCcCcCcCcCcCcCcCcCcCcCcCcCcCcCcCcCcCc', 'node-c', 'tok2')
    const other = await NodeRegistry.open(new SqliteSql(db))
    expect(other.isAdmitted('12D3KooWCcCcCcCcCcCcCcCcCcCcCcCcCcCcCcCcCcCcCcCcCcCc') && other.isRevoked('12D3KooWBbBbBbBbBbBbBbBbBbBbBbBbBbBbBbBbBbBbBbBbBbBb')).toBe(true)
    const jobs = await new JobStore(sql).list()
    expect(jobs.map((j) => [j.state, j.authorization])).toEqual([['SUCCESS', null], ['SUCCESS', null]])
    expect(JSON.stringify(jobs[1].args)).not.toMatch(/hunter2|Basic xyz/)
    expect(jobs[1].args.credentials).toBe(true)
    expect((await new HealthEventStore(sql).hosts())[0]).toMatchObject({ id: 'h1', level: 'isolated' })
    expect((await new TraceStore(sql).list({ limit: 5 }))[0]).toMatchObject({ traceId: 'tr1', bytesPeer: 1 << 19 })
    // The scheduler's tables (not shared) are untouched by the migrations.
    expect(db.prepare("SELECT COUNT(*) AS n FROM sqlite_master WHERE name IN ('tasks', 'task_pieces', 'hosts', 'peers')").get()).toEqual({ n: 4 })
  })
})

describe('shared state on PostgreSQL', () => {
  let pg: PostgresHandle
  let dbs = 0
  beforeAll(async () => {
    pg = await startPostgres()
    closers.push(() => pg.stop())
  }, 90_000)

  const connect = async (url: string): Promise<PostgresSql> => {
    const sql = await PostgresSql.connect(url)
    closers.push(() => sql.close())
    return sql
  }
  const postgres: Backend = {
    concurrent: true,
    fresh: async () => {
      const url = await pg.createDatabase(`t${++dbs}`)
      const sql = await connect(url)
      await migrate(sql)
      return { sql, another: () => connect(url) }
    }
  }

  sharedStateSuite(postgres)
  membershipSuite(async () => {
    const { sql, another } = await postgres.fresh()
    return [new SqlMembership(sql), new SqlMembership(await another())]
  })

  it('two supernodes starting at once apply each migration step once', async () => {
    const url = await pg.createDatabase(`t${++dbs}`)
    const clients = await Promise.all([connect(url), connect(url), connect(url)])
    const applied = await Promise.all(clients.map((c) => migrate(c)))
    expect(applied.flat().sort((a, b) => a - b)).toEqual(MIGRATIONS.map((m) => m.version))
    expect((await clients[0].all('SELECT version FROM schema_migrations')).length).toBe(MIGRATIONS.length)
  })

  it('a supernode whose database is unreachable does not start: SN_ERR_DATABASE, without the password', async () => {
    const logger = createLogger('test', 'silent')
    const url = `postgresql://naiad:s3cret-pw@/naiad?host=${encodeURIComponent(join(dir, 'no-server-here'))}`
    const err = await createSupernode({
      dataDir: join(dir, 'sn-unreachable'), database: url, logger, listen: '127.0.0.1:0', p2pListen: ['/ip4/127.0.0.1/tcp/0'], hostTtlMs: 30_000, controlTimeoutMs: 10_000,
      seed: { enabled: false } as never
    }).then(() => undefined, (e: unknown) => e as { code: string; message: string })
    expect(err?.code).toBe('SN_ERR_DATABASE')
    expect(err?.message).toContain('naiad')
    expect(err?.message).not.toContain('s3cret-pw')
  })
})

describe('membership in memory (one supernode)', () => {
  membershipSuite(async () => {
    const store = new MemoryMembership()
    return [store, store]
  })
})

describe('--database', () => {
  it('refuses anything but a postgres:// URL with exit 2 naming the key, and an unreachable one with SN_ERR_DATABASE; never prints the password', () => {
    const names = SUPERNODE_COMMAND.options.filter((o) => o.key === 'database')
    expect(names).toHaveLength(1)
    const r = spawnSync(process.execPath, [BIN, '--database', 'mysql://root:s3cret-pw@db/naiad', '--data-dir', join(dir, 'sn-bad-url')], { encoding: 'utf8', timeout: 60_000 })
    expect(r.status).toBe(2)
    expect(r.stderr).toContain('--database')
    expect(r.stderr).not.toContain('s3cret-pw')
    const env = spawnSync(process.execPath, [BIN, '--data-dir', join(dir, 'sn-bad-url')], { encoding: 'utf8', timeout: 60_000, env: { ...process.env, NAIAD_DATABASE: 'sqlite:///x' } })
    expect(env.status).toBe(2)
    expect(env.stderr).toContain('NAIAD_DATABASE')
    // A well-formed URL that leads nowhere: the typed error, exit 1, the password left out.
    const down = spawnSync(process.execPath, [BIN, '--database', `postgresql://naiad:s3cret-pw@/naiad?host=${encodeURIComponent(join(dir, 'nowhere'))}`, '--data-dir', join(dir, 'sn-down')], { encoding: 'utf8', timeout: 60_000 })
    expect(down.status).toBe(1)
    expect(down.stderr).toContain('SN_ERR_DATABASE')
    expect(down.stderr).not.toContain('s3cret-pw')
  })
})
