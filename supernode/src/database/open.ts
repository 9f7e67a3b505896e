// Opens the shared state's database: the supernode's own SQLite file by default, or the
// PostgreSQL server `--database` names, with the schema brought up to date.

import type Database from 'better-sqlite3'
import { NaiadError } from '@naiad/proto'

import { migrate } from './migrations.ts'
import { PostgresSql, redactUrl, SqliteSql, type Sql } from './sql.ts'

/** `database`: empty (SQLite in the data dir) or a postgres:// URL. Never echoes the value: it may hold a password. */
export function databaseUrl(raw: string): string {
  const url = raw.trim()
  if (url === '') return ''
  // The rest is libpq's URL syntax (a socket directory as ?host=, no host at all), which
  // WHATWG URL parsing refuses: a bad one fails at connect, as SN_ERR_DATABASE.
  if (!/^postgres(ql)?:\/\//i.test(url)) throw new Error('expected a postgres:// or postgresql:// URL, or nothing for SQLite in the data dir')
  return url
}

export const isPostgres = (url: string): boolean => url !== ''

/**
 * The shared database, migrated. `sqlite` is the supernode's own handle (used when `url` is
 * empty; its owner closes it). Fails with SN_ERR_DATABASE, naming the URL without its password.
 */
export async function openSharedDatabase(url: string, sqlite: () => Database.Database, signal?: AbortSignal): Promise<Sql> {
  const sql = isPostgres(url) ? await PostgresSql.connect(url, signal) : new SqliteSql(sqlite())
  try {
    await migrate(sql, { signal })
    return sql
  } catch (err) {
    await sql.close().catch(() => undefined)
    if (err instanceof NaiadError) throw err
    throw new NaiadError('SN_ERR_DATABASE', `cannot prepare the database${isPostgres(url) ? ` ${redactUrl(url)}` : ''}: ${(err as Error).message}`, { cause: err })
  }
}
