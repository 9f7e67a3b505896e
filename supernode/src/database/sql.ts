// One async way to talk SQL to either store the shared state can live in: the supernode's
// own SQLite file (better-sqlite3, synchronous underneath) or a PostgreSQL server (`pg`).
// Statements are written once with `?` placeholders in the SQL both understand; the few
// places where the dialects differ ask `sql.dialect`. Numbers come back as numbers on both:
// PostgreSQL's BIGINT and NUMERIC are parsed (every value stored here is far below 2^53).

import type Database from 'better-sqlite3'
import pg from 'pg'
import { NaiadError } from '@naiad/proto'

export type Dialect = 'sqlite' | 'postgres'
export type Param = string | number | null

export interface Sql {
  readonly dialect: Dialect
  all<T>(sql: string, params?: readonly Param[], signal?: AbortSignal): Promise<T[]>
  get<T>(sql: string, params?: readonly Param[], signal?: AbortSignal): Promise<T | undefined>
  /** Rows changed. */
  run(sql: string, params?: readonly Param[], signal?: AbortSignal): Promise<number>
  /** Runs `fn` in one transaction on one connection; rolls back when it throws. */
  transaction<T>(fn: (tx: Sql) => Promise<T>, signal?: AbortSignal): Promise<T>
  close(): Promise<void>
}

/** How long one statement may take on PostgreSQL (a lock wait included) before it fails. */
export const STATEMENT_TIMEOUT_MS = 15_000
const CONNECT_TIMEOUT_MS = 10_000

// ---------------------------------------------------------------------------------------
// SQLite

/**
 * Prepared statements of one SQLite handle, by their text: the stores run a few dozen distinct
 * statements over and over, and preparing one costs more than running it. A few statements
 * are built per call (an IN list as long as its ids), so the cache is bounded: the oldest
 * entry goes first.
 */
const STATEMENT_CACHE_SIZE = 256

class SqliteStatements {
  readonly db: Database.Database
  private readonly cache = new Map<string, Database.Statement>()

  constructor(db: Database.Database) {
    this.db = db
  }

  all<T>(sql: string, params: readonly Param[]): T[] {
    return this.statement(sql).all(...params) as T[]
  }

  get<T>(sql: string, params: readonly Param[]): T | undefined {
    return this.statement(sql).get(...params) as T | undefined
  }

  run(sql: string, params: readonly Param[]): number {
    return this.statement(sql).run(...params).changes
  }

  private statement(sql: string): Database.Statement {
    let s = this.cache.get(sql)
    if (s === undefined) {
      s = this.db.prepare(sql)
      if (this.cache.size >= STATEMENT_CACHE_SIZE) this.cache.delete(this.cache.keys().next().value as string)
      this.cache.set(sql, s)
    }
    return s
  }
}

/**
 * The supernode's SQLite handle behind the async interface. A transaction's callback awaits,
 * so other callers queue behind it: their statements would otherwise land inside it (one
 * connection) and be rolled back with it. The stores' transactions await only their own
 * statements (promises already settled), so each ends within one turn of the event loop and
 * the scheduler's StateStore, which flushes on the same handle from a timer, never lands
 * inside one.
 */
export class SqliteSql implements Sql {
  readonly dialect = 'sqlite' as const
  readonly db: Database.Database
  private readonly statements: SqliteStatements
  private queue: Promise<unknown> = Promise.resolve()
  private inTx = false

  constructor(db: Database.Database) {
    this.db = db
    this.statements = new SqliteStatements(db)
  }

  all<T>(sql: string, params: readonly Param[] = [], signal?: AbortSignal): Promise<T[]> {
    return this.outside(signal, () => this.statements.all<T>(sql, params))
  }

  get<T>(sql: string, params: readonly Param[] = [], signal?: AbortSignal): Promise<T | undefined> {
    return this.outside(signal, () => this.statements.get<T>(sql, params))
  }

  run(sql: string, params: readonly Param[] = [], signal?: AbortSignal): Promise<number> {
    return this.outside(signal, () => this.statements.run(sql, params))
  }

  transaction<T>(fn: (tx: Sql) => Promise<T>, signal?: AbortSignal): Promise<T> {
    const result = this.queue.then(async () => {
      signal?.throwIfAborted()
      const tx = new SqliteTx(this.statements)
      // IMMEDIATE takes the write lock now, so another process's writer waits (busy_timeout)
      // instead of failing this transaction halfway.
      this.db.exec('BEGIN IMMEDIATE')
      this.inTx = true
      try {
        const value = await fn(tx)
        this.db.exec('COMMIT')
        return value
      } catch (err) {
        if (this.db.inTransaction) this.db.exec('ROLLBACK')
        throw err
      } finally {
        this.inTx = false
        tx.done = true
      }
    })
    this.queue = result.catch(() => undefined)
    return result
  }

  async close(): Promise<void> {
    await this.queue
    // The handle belongs to the StateStore, which closes it.
  }

  /** Runs a statement outside any open transaction: checked and run in one step, so none can open in between. */
  private async outside<T>(signal: AbortSignal | undefined, statement: () => T): Promise<T> {
    while (this.inTx) await this.queue
    signal?.throwIfAborted()
    return statement()
  }
}

class SqliteTx implements Sql {
  readonly dialect = 'sqlite' as const
  done = false
  private readonly statements: SqliteStatements

  constructor(statements: SqliteStatements) {
    this.statements = statements
  }

  async all<T>(sql: string, params: readonly Param[] = []): Promise<T[]> {
    this.check()
    return this.statements.all<T>(sql, params)
  }

  async get<T>(sql: string, params: readonly Param[] = []): Promise<T | undefined> {
    this.check()
    return this.statements.get<T>(sql, params)
  }

  async run(sql: string, params: readonly Param[] = []): Promise<number> {
    this.check()
    return this.statements.run(sql, params)
  }

  async transaction<T>(fn: (tx: Sql) => Promise<T>): Promise<T> {
    return fn(this)
  }

  async close(): Promise<void> {}

  private check(): void {
    if (this.done) throw new Error('statement on a finished transaction')
  }
}

// ---------------------------------------------------------------------------------------
// PostgreSQL

// BIGINT (20) and NUMERIC (1700, what SUM and division give) as numbers, on this pool only.
const TYPES = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') => {
    if (oid === 20 || oid === 1700) return (v: string) => Number(v)
    return pg.types.getTypeParser(oid, format as 'text')
  }) as typeof pg.types.getTypeParser
}

/** `?` → `$1, $2, …` (no statement here has a `?` inside a string literal). */
function numbered(sql: string): string {
  let n = 0
  return sql.replace(/\?/g, () => `$${++n}`)
}

/** A connection URL without its password, for messages and logs. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url)
    if (u.password !== '') u.password = '***'
    return u.toString()
  } catch {
    return url.replace(/\/\/[^@/]*@/, '//***@')
  }
}

async function abortable<T>(work: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (signal === undefined) return work
  signal.throwIfAborted()
  let onAbort!: () => void
  const aborted = new Promise<never>((_, reject) => {
    onAbort = () => reject(signal.reason as Error)
    signal.addEventListener('abort', onAbort, { once: true })
  })
  try {
    return await Promise.race([work, aborted])
  } finally {
    signal.removeEventListener('abort', onAbort)
  }
}

type Queryable = Pick<pg.Pool, 'query'> | pg.PoolClient

class PgRunner {
  readonly dialect = 'postgres' as const
  protected readonly q: Queryable

  constructor(q: Queryable) {
    this.q = q
  }

  async all<T>(sql: string, params: readonly Param[] = [], signal?: AbortSignal): Promise<T[]> {
    const r = await abortable(this.q.query(numbered(sql), params as Param[]), signal)
    return r.rows as T[]
  }

  async get<T>(sql: string, params: readonly Param[] = [], signal?: AbortSignal): Promise<T | undefined> {
    return (await this.all<T>(sql, params, signal))[0]
  }

  async run(sql: string, params: readonly Param[] = [], signal?: AbortSignal): Promise<number> {
    const r = await abortable(this.q.query(numbered(sql), params as Param[]), signal)
    return r.rowCount ?? 0
  }
}

class PgTx extends PgRunner implements Sql {
  async transaction<T>(fn: (tx: Sql) => Promise<T>): Promise<T> {
    return fn(this)
  }

  async close(): Promise<void> {}
}

export class PostgresSql extends PgRunner implements Sql {
  private readonly pool: pg.Pool

  private constructor(pool: pg.Pool) {
    super(pool)
    this.pool = pool
  }

  /** Connects (and checks that it can) or fails with SN_ERR_DATABASE, naming the URL without its password. */
  static async connect(url: string, signal?: AbortSignal): Promise<PostgresSql> {
    const pool = new pg.Pool({
      connectionString: url,
      max: 5,
      connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
      statement_timeout: STATEMENT_TIMEOUT_MS,
      query_timeout: STATEMENT_TIMEOUT_MS + 5_000,
      idleTimeoutMillis: 30_000,
      application_name: 'naiad-supernode',
      types: TYPES
    })
    // An idle connection the server drops must not crash the process; the next query reconnects.
    pool.on('error', () => undefined)
    try {
      await abortable(pool.query('SELECT 1'), signal)
    } catch (err) {
      await pool.end().catch(() => undefined)
      throw new NaiadError('SN_ERR_DATABASE', `cannot reach the database ${redactUrl(url)}: ${(err as Error).message}`, { cause: err })
    }
    return new PostgresSql(pool)
  }

  async transaction<T>(fn: (tx: Sql) => Promise<T>, signal?: AbortSignal): Promise<T> {
    const client = await abortable(this.pool.connect(), signal)
    let broken: Error | undefined
    try {
      await client.query('BEGIN')
      const value = await fn(new PgTx(client))
      await client.query('COMMIT')
      return value
    } catch (err) {
      await client.query('ROLLBACK').catch((e: unknown) => { broken = e as Error })
      throw err
    } finally {
      client.release(broken)
    }
  }

  /** Runs `fn` on one connection holding a session advisory lock (start-up steps two supernodes must not both take). */
  async withLock<T>(key: number, fn: (conn: Sql) => Promise<T>, signal?: AbortSignal): Promise<T> {
    const client = await abortable(this.pool.connect(), signal)
    try {
      await client.query('SELECT pg_advisory_lock($1)', [key])
      try {
        return await fn(new PgSession(client))
      } finally {
        await client.query('SELECT pg_advisory_unlock($1)', [key])
      }
    } finally {
      client.release()
    }
  }

  async close(): Promise<void> {
    await this.pool.end()
  }
}

/** One connection, outside any transaction until `transaction` opens one on it. */
class PgSession extends PgRunner implements Sql {
  async transaction<T>(fn: (tx: Sql) => Promise<T>): Promise<T> {
    await this.q.query('BEGIN')
    try {
      const value = await fn(new PgTx(this.q))
      await this.q.query('COMMIT')
      return value
    } catch (err) {
      await this.q.query('ROLLBACK')
      throw err
    }
  }

  async close(): Promise<void> {}
}
