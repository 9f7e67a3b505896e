// `npm start`: a supernode and one dfdaemon on this machine, with embedded defaults (SQLite
// and the local disk, data under ./.naiad). Both run as child processes of this script;
// their logs come out here, prefixed. Ctrl-C stops both; if one dies, the other is stopped
// and this script exits non-zero. The daemon joins the supernode's cluster with a join token
// this script creates (`supernode token create`) and hands over in a 0600 file, never on a
// command line; an API token for the supernode's API is kept next to it.

import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { relative } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const DATA = `${ROOT}.naiad`
const SUPERNODE_URL = 'http://127.0.0.1:8002'
const DAEMON_API = 'http://127.0.0.1:65003'
const READY_TIMEOUT_MS = 60_000
const STOP_GRACE_MS = 10_000
/** supernode HTTP and fabric; dfdaemon registry mirror, fabric and local API. */
const PORTS = [8002, 8003, 65001, 65002, 65003]

interface Child {
  name: string
  proc: ChildProcess
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
  /** Fields of the child's "… ready" log line, once seen. */
  ready?: Record<string, unknown>
}

const LEVELS: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' }
const COLOURS: Record<string, string> = { supernode: '\x1b[36m', dfdaemon: '\x1b[35m' }
const colour = process.stdout.isTTY === true && process.env.NO_COLOR === undefined

/** One pino JSON line as `name | LEVEL message key=value …`; anything else as it came. */
function format(name: string, line: string): string {
  const tag = colour ? `${COLOURS[name] ?? ''}${name.padEnd(9)}\x1b[0m |` : `${name.padEnd(9)} |`
  let rec: Record<string, unknown>
  try {
    rec = JSON.parse(line) as Record<string, unknown>
  } catch {
    return `${tag} ${line}`
  }
  if (rec === null || typeof rec !== 'object') return `${tag} ${line}`
  const { level, msg, time: _time, pid: _pid, hostname: _hostname, name: _name, ...rest } = rec
  const extra = Object.entries(rest).map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`).join(' ')
  return `${tag} ${(LEVELS[level as number] ?? String(level)).padEnd(5)} ${String(msg ?? '')}${extra === '' ? '' : ` ${extra}`}`
}

function start(name: string, bin: string, args: string[]): Child {
  // Own process group: a Ctrl-C reaches only this script, which then stops the children in
  // order, instead of each child getting the terminal's SIGINT and npm's forwarded one.
  const proc = spawn(process.execPath, [`${ROOT}${bin}`, ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], detached: true })
  const child: Child = {
    name,
    proc,
    exited: new Promise((resolve) => proc.once('exit', (code, signal) => resolve({ code, signal })))
  }
  proc.once('error', (err) => process.stderr.write(`${name}: cannot start: ${err.message}\n`))
  for (const stream of [proc.stdout!, proc.stderr!]) {
    createInterface({ input: stream }).on('line', (line) => {
      if (child.ready === undefined && line.includes(' ready"')) {
        try { child.ready = JSON.parse(line) as Record<string, unknown> } catch { /* not a log line */ }
      }
      process.stdout.write(`${format(name, line)}\n`)
    })
  }
  return child
}

function alive(c: Child): boolean {
  return c.proc.exitCode === null && c.proc.signalCode === null
}

async function stop(c: Child): Promise<void> {
  if (!alive(c)) return
  c.proc.kill('SIGTERM')
  const t = setTimeout(() => { if (alive(c)) c.proc.kill('SIGKILL') }, STOP_GRACE_MS)
  await c.exited
  clearTimeout(t)
}

/** Polls `url` until it answers 200; rejects when `child` exits first or time runs out. */
async function waitHealthy(url: string, child: Child, signal: AbortSignal): Promise<void> {
  const deadline = Date.now() + READY_TIMEOUT_MS
  while (Date.now() < deadline) {
    signal.throwIfAborted()
    if (!alive(child)) throw new Error(`${child.name} exited before it was healthy`)
    try {
      const res = await fetch(url, { signal: AbortSignal.any([signal, AbortSignal.timeout(2000)]) })
      await res.body?.cancel()
      if (res.status === 200) return
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 250))
  }
  throw new Error(`${child.name} was not healthy at ${url} within ${READY_TIMEOUT_MS / 1000}s`)
}

const children: Child[] = []
let stopping = false
let firstSignalAt = 0
const failed = new AbortController()

async function shutdown(code: number, why?: string): Promise<never> {
  if (!stopping) {
    stopping = true
    if (why !== undefined) process.stderr.write(`${why}\n`)
    failed.abort()
    // The daemon first, so that it can leave the supernode cleanly.
    for (const c of [...children].reverse()) await stop(c)
    process.exit(code)
  }
  return new Promise(() => {})
}

for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.on(sig, () => {
    const now = Date.now()
    // A terminal Ctrl-C under `npm start` arrives twice (from the tty and forwarded by npm);
    // only a later, deliberate second signal forces the children down.
    if (stopping && now - firstSignalAt > 1000) {
      process.stderr.write('stopping at once\n')
      for (const c of children) if (alive(c)) c.proc.kill('SIGKILL')
      return
    }
    if (stopping) return
    firstSignalAt = now
    process.stderr.write(`\n${sig}: stopping dfdaemon and supernode (again to force)\n`)
    void shutdown(0)
  })
}

/** A child that exits on its own takes the others down with it. */
function watch(c: Child): void {
  children.push(c)
  void c.exited.then(({ code, signal }) => shutdown(1, `naiad: ${c.name} exited (${signal ?? `code ${code}`}); stopping the rest`))
}

/** Fails fast on a busy port, with a hint, rather than waiting on a child that cannot listen. */
async function checkPorts(): Promise<void> {
  for (const port of PORTS) {
    const busy = await new Promise<string | undefined>((resolve) => {
      const srv = createServer()
      srv.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message))
      srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(undefined)))
    })
    if (busy !== undefined) {
      process.stderr.write(`naiad: port ${port} on 127.0.0.1 is not free (${busy}); is another Naiad running? Stop it and try again.\n`)
      process.exit(1)
    }
  }
}

/** Runs `supernode token create` on the supernode's data dir and keeps the token in a 0600 file. */
function createToken(scope: 'join' | 'api', ttl: string, file: string): string {
  let out: string
  try {
    out = execFileSync(process.execPath, [`${ROOT}supernode/bin/supernode.ts`, 'token', 'create', '--data-dir', `${DATA}/supernode`, '--scope', scope, '--ttl', ttl], { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] })
  } catch (err) {
    process.stderr.write(`naiad: cannot create a ${scope} token: ${(err as Error).message}\n`)
    process.exit(1)
  }
  const token = out.trim().split('\n').at(-1) ?? ''
  writeFileSync(file, `${token}\n`, { mode: 0o600 })
  chmodSync(file, 0o600)
  return token
}

await checkPorts()
mkdirSync(DATA, { recursive: true, mode: 0o700 })
chmodSync(DATA, 0o700)
const rel = (p: string): string => `./${relative(process.cwd(), p) || '.'}`
const JOIN_TOKEN_FILE = `${DATA}/join-token`
const API_TOKEN_FILE = `${DATA}/api-token`
// The join token need only outlive the daemon's first join: it keeps the credential it earns.
createToken('join', '1h', JOIN_TOKEN_FILE)
createToken('api', '0', API_TOKEN_FILE)

const supernode = start('supernode', 'supernode/bin/supernode.ts', [
  '--data-dir', `${DATA}/supernode`,
  '--listen', '127.0.0.1:8002',
  '--p2p-listen', '/ip4/127.0.0.1/tcp/8003'
])
watch(supernode)

try {
  await waitHealthy(`${SUPERNODE_URL}/readyz`, supernode, failed.signal)
} catch (err) {
  await shutdown(1, `naiad: ${(err as Error).message}`)
}

const daemon = start('dfdaemon', 'dfdaemon/bin/dfdaemon.ts', [
  '--supernode', SUPERNODE_URL,
  '--data-dir', `${DATA}/dfdaemon`,
  '--p2p-listen', '/ip4/127.0.0.1/tcp/65002',
  '--join-token-file', JOIN_TOKEN_FILE
])
watch(daemon)

try {
  await waitHealthy(`${DAEMON_API}/healthz`, daemon, failed.signal)
} catch (err) {
  await shutdown(1, `naiad: ${(err as Error).message}`)
}

// /healthz answers a moment before the daemon logs its ready line (with its peer ID).
for (let i = 0; i < 40 && daemon.ready === undefined && alive(daemon); i++) await new Promise((r) => setTimeout(r, 250))

const peer = (c: Child): string => (typeof c.ready?.peerId === 'string' ? `, peer ${c.ready.peerId}` : '')
process.stdout.write([
  '',
  'Naiad is running on this machine:',
  `  supernode  HTTP API ${SUPERNODE_URL}, fabric /ip4/127.0.0.1/tcp/8003${peer(supernode)}`,
  `             data in ${rel(`${DATA}/supernode`)}`,
  `  dfdaemon   local API ${DAEMON_API}, fabric /ip4/127.0.0.1/tcp/65002${peer(daemon)}`,
  `             data in ${rel(`${DATA}/dfdaemon`)}`,
  '',
  'Fetch a file through the daemon (in another terminal):',
  '  npx dfget https://example.com/some/file -O /tmp/file',
  `Look around (the supernode's API wants the API token in ${rel(API_TOKEN_FILE)}):`,
  `  TOKEN=$(cat ${rel(API_TOKEN_FILE)})`,
  ...[
    [`-H "Authorization: Bearer $TOKEN" ${SUPERNODE_URL}/api/v1/tasks`, 'tasks the scheduler knows'],
    [`-H "Authorization: Bearer $TOKEN" ${SUPERNODE_URL}/api/v1/peers`, 'daemons that announced themselves'],
    [`${DAEMON_API}/metrics`, 'Prometheus metrics (the supernode has them too)']
  ].map(([url, what]) => `  curl ${url.padEnd(36)} # ${what}`),
  `More nodes: npx dfdaemon --supernode ${SUPERNODE_URL} --join-token-file ${rel(JOIN_TOKEN_FILE)} … (the token is good for an hour;`,
  `  npx supernode token create --data-dir ${rel(`${DATA}/supernode`)} makes another)`,
  '',
  'Ctrl-C stops both.',
  ''
].join('\n'))
