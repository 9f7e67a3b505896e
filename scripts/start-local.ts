// `npm start`: a supernode and one dfdaemon on this machine, with embedded defaults (SQLite
// and the local disk, data under ./.naiad, every built-in plugin of each). Both run as child
// processes of this script; their logs come out here, prefixed. Arguments go through to them
// (see scripts/start-args.ts and `npm start -- --help`). Ctrl-C stops both; if one dies, the
// other is stopped and this script exits non-zero. The daemon joins the supernode's cluster
// with a join token this script creates (`supernode token create`, on the data directory the
// supernode reports) and hands over in a 0600 file, never on a command line; an API token for
// the supernode's API and console is kept next to it.

import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs'
import { join, relative } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'

import { DAEMON_PLUGINS, DFDAEMON_COMMAND } from '@naiad/dfdaemon'
import { SUPERNODE_COMMAND, SUPERNODE_PLUGINS } from '@naiad/supernode'
import { buildConsole } from './build.ts'
import { LEVEL_NUMBERS, planStart, START_USAGE, StartUsageError, type ChildPlan, type StartPlan } from './start-args.ts'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const READY_TIMEOUT_MS = 60_000
const STOP_GRACE_MS = 10_000

interface Child {
  name: string
  proc: ChildProcess
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
  /** Fields of the child's "<name> ready" log line, once seen. */
  ready?: Record<string, unknown>
  /** The last error it logged, for the message when it exits before it is ready. */
  lastError?: string
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

function start(name: string, bin: string, plan: ChildPlan, extraArgs: string[] = []): Child {
  const show = LEVEL_NUMBERS[plan.showLevel] ?? 0
  // Own process group: a Ctrl-C reaches only this script, which then stops the children in
  // order, instead of each child getting the terminal's SIGINT and npm's forwarded one.
  const proc = spawn(process.execPath, [`${ROOT}${bin}`, ...plan.args, ...extraArgs], { cwd: process.cwd(), env: { ...process.env, ...plan.env }, stdio: ['ignore', 'pipe', 'pipe'], detached: true })
  const child: Child = {
    name,
    proc,
    exited: new Promise((resolve) => proc.once('exit', (code, signal) => resolve({ code, signal })))
  }
  proc.once('error', (err) => process.stderr.write(`${name}: cannot start: ${err.message}\n`))
  for (const stream of [proc.stdout!, proc.stderr!]) {
    createInterface({ input: stream }).on('line', (line) => {
      // The supernode's embedded seed logs a "dfdaemon ready" line of its own first.
      if (child.ready === undefined && line.includes(`"msg":"${name} ready"`)) {
        try { child.ready = JSON.parse(line) as Record<string, unknown> } catch { /* not a log line */ }
      }
      if (/"level":(50|60)|EADDRINUSE|^\S+: .*\[[A-Z]+_ERR_[A-Z_]+\]$/.test(line)) child.lastError = line
      const level = /^\{"level":(\d+)/.exec(line)
      if (level === null || Number(level[1]) >= show) process.stdout.write(`${format(name, line)}\n`)
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

/** Waits for the child's ready line, then until `path` on the address it names answers 200. */
async function waitReady(child: Child, address: (ready: Record<string, unknown>) => string, path: string, signal: AbortSignal): Promise<string> {
  const deadline = Date.now() + READY_TIMEOUT_MS
  while (Date.now() < deadline) {
    signal.throwIfAborted()
    if (!alive(child)) {
      const busy = child.lastError?.includes('EADDRINUSE') === true ? ' (a port is taken: is another Naiad running? Stop it, or give other addresses)' : ''
      throw new Error(`${child.name} exited before it was ready${busy}`)
    }
    if (child.ready !== undefined) {
      const base = address(child.ready).replace('://0.0.0.0:', '://127.0.0.1:').replace('://[::]:', '://[::1]:')
      try {
        const res = await fetch(`${base}${path}`, { signal: AbortSignal.any([signal, AbortSignal.timeout(2000)]) })
        await res.body?.cancel()
        if (res.status === 200) return base
      } catch {
        // not answering yet
      }
    }
    await new Promise((r) => setTimeout(r, 250))
  }
  throw new Error(`${child.name} was not ready within ${READY_TIMEOUT_MS / 1000}s`)
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

// Each catalog names every built-in plugin of its binary, metrics included.
const SUPERNODE_PLUGIN_NAMES = Object.keys(SUPERNODE_PLUGINS)
let plan: StartPlan
try {
  plan = planStart(process.argv.slice(2), SUPERNODE_COMMAND, DFDAEMON_COMMAND, {
    dataDir: join(ROOT, '.naiad'),
    supernode: { listen: '127.0.0.1:8002', 'p2p.listen': '/ip4/127.0.0.1/tcp/8003' },
    dfdaemon: { 'p2p.listen': '/ip4/127.0.0.1/tcp/65002' },
    supernodePlugins: SUPERNODE_PLUGIN_NAMES,
    dfdaemonPlugins: Object.keys(DAEMON_PLUGINS)
  })
} catch (err) {
  if (!(err instanceof StartUsageError)) throw err
  process.stderr.write(`naiad: ${err.message}\nTry 'npm start -- --help'.\n`)
  process.exit(2)
}
if (plan.help) {
  process.stdout.write(`${START_USAGE}\n`)
  process.exit(0)
}
mkdirSync(plan.dataDir, { recursive: true, mode: 0o700 })
chmodSync(plan.dataDir, 0o700)
const rel = (p: string): string => { const r = relative(process.cwd(), p); return r.startsWith('..') || r === '' ? p : `./${r}` }

// The console is served from the checkout's dist/console/; build it (well under a second) so
// that it matches the sources this supernode runs.
try {
  await buildConsole()
} catch (err) {
  process.stderr.write(`naiad: the web console could not be built (${(err as Error).message.split('\n')[0]}); the API works without it\n`)
}

const supernode = start('supernode', 'supernode/bin/supernode.ts', plan.supernode)
watch(supernode)

let supernodeUrl = ''
try {
  supernodeUrl = await waitReady(supernode, (r) => String(r.http), '/readyz', failed.signal)
} catch (err) {
  await shutdown(1, `naiad: ${(err as Error).message}`)
}

/** Runs `supernode token create` on the supernode's data dir and keeps the token in a 0600 file. */
function createToken(dataDir: string, scope: 'join' | 'api', ttl: string, file: string): void {
  let out = ''
  try {
    out = execFileSync(process.execPath, [`${ROOT}supernode/bin/supernode.ts`, 'token', 'create', '--data-dir', dataDir, '--scope', scope, '--ttl', ttl], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
  } catch (err) {
    void shutdown(1, `naiad: cannot create a ${scope} token: ${(err as Error).message.split('\n')[0]}`)
  }
  writeFileSync(file, `${out.trim().split('\n').at(-1) ?? ''}\n`, { mode: 0o600 })
  chmodSync(file, 0o600)
}
const joinTokenFile = join(plan.dataDir, 'join-token')
const apiTokenFile = join(plan.dataDir, 'api-token')
// The join token need only outlive the daemon's first join: the daemon keeps the credential it earns.
createToken(String(supernode.ready?.dataDir), 'join', '1h', joinTokenFile)
createToken(String(supernode.ready?.dataDir), 'api', '0', apiTokenFile)

const daemon = start('dfdaemon', 'dfdaemon/bin/dfdaemon.ts', plan.dfdaemon, [`--supernode=${supernodeUrl}`, `--join-token-file=${joinTokenFile}`])
watch(daemon)

let apiUrl = ''
try {
  apiUrl = await waitReady(daemon, (r) => String(r.api), '/healthz', failed.signal)
} catch (err) {
  await shutdown(1, `naiad: ${(err as Error).message}`)
}

const loopback = (u: unknown): string => String(u).replace('://0.0.0.0:', '://127.0.0.1:').replace('://[::]:', '://[::1]:')
const mirrorUrl = loopback(daemon.ready?.proxy)
const list = (v: unknown): string => (Array.isArray(v) ? v.join(' ') : String(v ?? ''))
const plugins = (c: ChildPlan): string => c.env.NAIAD_PLUGINS?.split(',').join(', ') ?? 'as configured'
const row = (label: string, value: string): string => `             ${label.padEnd(10)} ${value}`
const daemonFlag = apiUrl === 'http://127.0.0.1:65003' ? '' : ` --daemon ${apiUrl}`
process.stdout.write([
  '',
  'Naiad is running on this machine:',
  `  supernode  ${'HTTP API'.padEnd(10)} ${supernodeUrl}`,
  row('console', `${supernodeUrl}/`),
  row('API token', `${rel(apiTokenFile)} (the API and the console ask for it)`),
  row('fabric', list(supernode.ready?.p2p)),
  row('plugins', plugins(plan.supernode)),
  row('data', rel(join(plan.dataDir, 'supernode'))),
  `  dfdaemon   ${'mirror'.padEnd(10)} ${mirrorUrl} (registry mirror and forward proxy)`,
  row('local API', apiUrl),
  row('fabric', list(daemon.ready?.p2p)),
  row('plugins', plugins(plan.dfdaemon)),
  row('data', rel(join(plan.dataDir, 'dfdaemon'))),
  '',
  'Fetch a file through the daemon (in another terminal):',
  `  npx dfget https://example.com/some/file -O /tmp/file${daemonFlag}`,
  'Pull images through the mirror (podman, skopeo and buildah; --runtime containerd for containerd):',
  `  npx dfdaemon init-config --runtime podman --registry REGISTRY_HOST --mirror ${mirrorUrl}`,
  '  (a registry that speaks plain HTTP also needs npm start -- --insecure-registry REGISTRY_HOST)',
  'Look around (the supernode\'s API wants the API token):',
  `  TOKEN=$(cat ${rel(apiTokenFile)})`,
  ...[
    [`-H "Authorization: Bearer $TOKEN" ${supernodeUrl}/api/v1/peers`, 'daemons that announced themselves'],
    [`-H "Authorization: Bearer $TOKEN" ${supernodeUrl}/api/v1/tasks`, 'tasks the scheduler knows'],
    [`${apiUrl}/metrics`, 'Prometheus metrics (the supernode has them too)']
  ].map(([url, what]) => `  curl ${url.padEnd(40)} # ${what}`),
  `More nodes: dfdaemon --supernode ${supernodeUrl} --join-token-file ${rel(joinTokenFile)} … (good for an hour;`,
  `  supernode token create --data-dir ${rel(String(supernode.ready?.dataDir))} makes another)`,
  '',
  'Ctrl-C stops both.',
  ''
].join('\n'))
