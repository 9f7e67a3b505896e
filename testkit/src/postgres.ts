// A real PostgreSQL server for tests (Debian's postgresql package): initdb into a temp dir,
// then `postgres` listening on a unix socket in that dir only (listen_addresses=''), so no
// TCP port is taken or probed. The server refuses to run as root: as root it runs as the
// `postgres` user through runuser. Durability is off (fsync, synchronous_commit): the
// cluster is thrown away with the test.

import { spawn, type ChildProcess } from 'node:child_process'
import { chown, mkdtemp, readdir, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { runTool } from './processes.ts'

const PG_LIB = '/usr/lib/postgresql'

export interface PostgresHandle {
  /** The `postgres` database as a connection URL (unix socket in `socketDir`). */
  url: string
  socketDir: string
  /** A new, empty database on this server; its URL. */
  createDatabase(name: string): Promise<string>
  stop(): Promise<void>
}

/** The newest installed server's bin directory, or undefined when the package is missing. */
export async function postgresBinDir(): Promise<string | undefined> {
  const versions = await readdir(PG_LIB).catch(() => [] as string[])
  const newest = versions.filter((v) => /^\d+$/.test(v)).sort((a, b) => Number(b) - Number(a))[0]
  return newest === undefined ? undefined : join(PG_LIB, newest, 'bin')
}

function asServerUser(cmd: string, args: string[]): [string, string[]] {
  return process.getuid?.() === 0 ? ['runuser', ['-u', 'postgres', '--', cmd, ...args]] : [cmd, args]
}

const urlFor = (socketDir: string, db: string): string => `postgresql://postgres@/${db}?host=${encodeURIComponent(socketDir)}`

export async function startPostgres(): Promise<PostgresHandle> {
  const bin = await postgresBinDir()
  if (bin === undefined) throw new Error(`no PostgreSQL server under ${PG_LIB}: apt-get install postgresql`)
  const dir = await mkdtemp(join(tmpdir(), 'naiad-pg-'))
  if (process.getuid?.() === 0) {
    const { stdout } = await runTool('id', ['-u', 'postgres'])
    const uid = Number(stdout.trim())
    await chown(dir, uid, uid)
  }
  const data = join(dir, 'data')
  const [initCmd, initArgs] = asServerUser(join(bin, 'initdb'), ['-D', data, '-U', 'postgres', '-A', 'trust', '-E', 'UTF8', '--locale=C', '--no-sync', '--no-instructions'])
  const init = await runTool(initCmd, initArgs)
  if (init.code !== 0) throw new Error(`initdb failed (${init.code}): ${init.stderr.slice(-2000)}`)

  const [cmd, args] = asServerUser(join(bin, 'postgres'), [
    '-D', data, '-k', dir, '-c', "listen_addresses=", '-c', 'fsync=off', '-c', 'synchronous_commit=off', '-c', 'full_page_writes=off',
    '-c', 'max_connections=60', '-c', 'shared_buffers=16MB'
  ])
  const proc: ChildProcess = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] })
  let log = ''
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => { proc.kill('SIGKILL'); reject(new Error(`postgres was not ready within 60 s: ${log}`)) }, 60_000)
    proc.stderr!.on('data', (d: Buffer) => {
      log = (log + d.toString()).slice(-4000)
      if (log.includes('database system is ready to accept connections')) { clearTimeout(timer); resolve() }
    })
    proc.once('exit', (code) => { clearTimeout(timer); reject(new Error(`postgres exited with ${code}: ${log}`)) })
  })
  proc.stderr!.resume()

  const psql = join(bin, 'psql')
  return {
    url: urlFor(dir, 'postgres'),
    socketDir: dir,
    createDatabase: async (name) => {
      if (!/^[a-z_][a-z0-9_]*$/.test(name)) throw new Error(`bad database name ${name}`)
      const r = await runTool(psql, ['-h', dir, '-U', 'postgres', '-d', 'postgres', '-v', 'ON_ERROR_STOP=1', '-qc', `CREATE DATABASE ${name}`])
      if (r.code !== 0) throw new Error(`CREATE DATABASE ${name} failed: ${r.stderr}`)
      return urlFor(dir, name)
    },
    stop: async () => {
      if (proc.exitCode === null && proc.signalCode === null) {
        // The server's own PID (runuser's child): SIGINT is its fast shutdown.
        const pid = Number((await readFile(join(data, 'postmaster.pid'), 'utf8').catch(() => '')).split('\n')[0])
        const exited = new Promise((r) => proc.once('exit', r))
        if (pid > 0) process.kill(pid, 'SIGINT')
        else proc.kill('SIGINT')
        const timer = setTimeout(() => { if (pid > 0) process.kill(pid, 'SIGKILL') }, 20_000)
        await exited
        clearTimeout(timer)
      }
      await rm(dir, { recursive: true, force: true })
    }
  }
}
