// Scenario 7 of the benchmark issue: one real supernode process against many synthetic
// peers. A few load-generator processes (bench/load/scheduler-peers.ts) each simulate a share
// of the peers, every peer with its own identity and its own loopback source address,
// speaking the real scheduler protocol over the fabric: announce host, register task,
// report pieces, get parents.
//
//   node bench/scenarios/scheduler-scale.ts [--quick] [--peers 10000] [--processes 3] [--duration 30s] [--profile]
//        [--alt-bin /tmp/main/supernode/bin/supernode.ts --alt-label main] [--supernodes 1,3] [--supernode-cpu 0.3 [--generator-cpu 0.2]]
//
// Reports piece reports per second sustained over the load window, get-parents p50/p99
// latency (as the peers saw it, over the fabric), and the supernode's peak RSS (VmHWM from
// /proc). Goal (issue 5): at least 20,000 reports/s, p99 at most 50 ms, RSS at most 1 GiB.
// With --alt-bin the same load runs against another build's supernode first (a fresh
// supernode, its own registration), and the table puts both side by side.
// With --supernodes N (N > 1) the load runs against a cluster of N supernodes on one
// PostgreSQL (the same cluster key in every data dir), the peers acting as cluster daemons
// (each task's calls to its owner, the host announced to all); throughput is summed, CPU and
// RSS are per supernode. A list (--supernodes 1,3) runs each size in turn, each with its own
// fresh supernodes and registration, and the table gives the ratio of the last to the first.
// With --supernode-cpu FRACTION each supernode runs in its own CPU cgroup capped at that
// fraction of a core (bench/lib/cpu-cap.ts): a model of one machine per supernode on a test
// machine whose cores also run the load generators, so that adding supernodes adds capacity;
// --generator-cpu does the same for each load generator, so that on a busy machine they still
// get enough CPU to offer more than the supernodes take.

import { spawn, type ChildProcess } from 'node:child_process'
import { copyFile, mkdir, mkdtemp, readFile, readdir, rm } from 'node:fs/promises'
import { cpus, loadavg, tmpdir } from 'node:os'
import { basename, join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'

import { formatBytes, ownerOf, parseDuration, taskIdOf } from '@naiad/proto'
import { BINS, NaiadProcess, createToken, startPostgres, TestOrigin, type PostgresHandle } from '@naiad/testkit'

import { createCpuCaps, parseCpuFraction, throttleDelta, underCap, type CpuCaps, type ThrottleStat } from '../lib/cpu-cap.ts'
import { summarizeFile, formatSummary, type ProfileSummary } from '../cpuprofile-summary.ts'
import type { Stats } from '../load/scheduler-peers.ts'
import { cpuSeconds, foreignCpu, killDescendants } from '../proc-stats.ts'
import { parseCommandLine, usageFailer } from '../report/cli.ts'
import { median, withSignal, writeResults } from '../report/helpers.ts'

const WORKER = fileURLToPath(new URL('../load/scheduler-peers.ts', import.meta.url))
const PROFILER = fileURLToPath(new URL('../load/cpu-profile-on-signal.ts', import.meta.url))
const RESULTS = fileURLToPath(new URL('../results/', import.meta.url))

const USAGE = `usage: node bench/scenarios/scheduler-scale.ts [options]
  --quick                 1,000 peers and a 15 s load window (unless given)
  --peers N               synthetic peers, all registered first (default 10000)
  --tasks N               tasks they share (default: one per 200 peers)
  --pieces N              pieces per task (default 128: 512 MiB at 4 MiB)
  --processes N           load-generator processes (default 3)
  --model M               daemon: connected peers download like dfdaemons at --rate pieces/s each, reporting on a
                          100 ms beat and polling for parents every 250 ms, slower when the supernode asks for a pace
                          (an offered load of processes × live × rate reports/s; default);
                          rounds: peers connect in turn and call as fast as answers come (a closed loop)
  --live N                peers connected at once per process (default 256; rounds 32)
  --rate N                daemon model: pieces a second each connected peer fetches and reports (default 30)
  --batch N               rounds model: piece results per reportPieces (default 4)
  --parents-every N       rounds model: one getParents per N reports (default 2)
  --protocol P            session: one scheduler session per peer, pipelined (1.1.0, what dfdaemon speaks; default);
                          stream: a stream per call (1.0.0, daemons before sessions), for comparison
  --duration DURATION     load window (default 30s; quick 15s), the first 2 s not counted
  --alt-bin FILE          also run the same load against this supernode entry point first (another build, e.g. a
                          checkout of main: /tmp/main/supernode/bin/supernode.ts), with its own registration
  --alt-label NAME        its name in the table (default alt)
  --supernodes N[,N…]     supernodes in the cluster (default 1: one supernode, no database); more than one: that many
                          on one PostgreSQL (a Debian postgresql server the scenario starts), the peers acting as cluster
                          daemons; a list (1,3) runs each size in turn with fresh supernodes and compares them
  --supernode-cpu F       run each supernode in its own cgroup (v1 cpu controller; needs root) capped at F of a core
                          (e.g. 0.3): one machine of that size per supernode, the other cores left to the generators
  --generator-cpu F       with --supernode-cpu: each load generator in its own group too, capped at F of a core and
                          weighted so that a machine busy with other work still gives it that much
  --profile               profile the supernode(s) over the load window (V8's sampling profiler, started and stopped
                          by signal: bench/load/cpu-profile-on-signal.ts) and summarise it
  --timeout DURATION      bound on the whole scenario (default 40m)
  --out PREFIX            results: PREFIX.json, PREFIX.md (default bench/results/scheduler-scale)`

const usageError = usageFailer('scheduler-scale', USAGE)

const args = parseCommandLine(USAGE, usageError, () => parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    peers: { type: 'string' },
    tasks: { type: 'string' },
    pieces: { type: 'string', default: '128' },
    processes: { type: 'string', default: '3' },
    model: { type: 'string', default: 'daemon' },
    live: { type: 'string' },
    rate: { type: 'string', default: '30' },
    batch: { type: 'string', default: '4' },
    'parents-every': { type: 'string', default: '2' },
    protocol: { type: 'string', default: 'session' },
    duration: { type: 'string' },
    'alt-bin': { type: 'string' },
    'alt-label': { type: 'string', default: 'alt' },
    supernodes: { type: 'string', default: '1' },
    'supernode-cpu': { type: 'string' },
    'generator-cpu': { type: 'string' },
    profile: { type: 'boolean', default: false },
    timeout: { type: 'string', default: '40m' },
    out: { type: 'string', default: join(RESULTS, 'scheduler-scale') },
    help: { type: 'boolean', short: 'h', default: false }
  }
}).values)
const whole = (v: string, flag: string): number => {
  const n = Number(v)
  if (!Number.isInteger(n) || n <= 0) usageError(`${flag} must be a positive whole number, not ${v}`)
  return n
}
const model = args.model
if (model !== 'daemon' && model !== 'rounds') usageError(`--model is daemon or rounds, not ${model}`)
const peers = whole(args.peers ?? (args.quick ? '1000' : '10000'), '--peers')
const tasks = whole(args.tasks ?? String(Math.max(1, Math.round(peers / 200))), '--tasks')
const pieces = whole(args.pieces, '--pieces')
const processes = Math.min(whole(args.processes, '--processes'), peers)
const live = whole(args.live ?? (model === 'daemon' ? '256' : '32'), '--live')
const rate = whole(args.rate, '--rate')
const batch = whole(args.batch, '--batch')
const protocol = args.protocol
if (protocol !== 'session' && protocol !== 'stream') usageError(`--protocol is session or stream, not ${protocol}`)
const parentsEvery = whole(args['parents-every'], '--parents-every')
const clusterSizes = args.supernodes.split(',').map((v) => whole(v.trim(), '--supernodes'))
if (clusterSizes.length > 1 && args['alt-bin'] !== undefined) usageError('--alt-bin compares builds at one cluster size: give one --supernodes')
let supernodeCpu: number | undefined
let generatorCpu: number | undefined
try {
  if (args['supernode-cpu'] !== undefined) supernodeCpu = parseCpuFraction(args['supernode-cpu'], '--supernode-cpu', cpus().length)
  if (args['generator-cpu'] !== undefined) generatorCpu = parseCpuFraction(args['generator-cpu'], '--generator-cpu', cpus().length)
} catch (err) {
  usageError((err as Error).message)
}
if (generatorCpu !== undefined && supernodeCpu === undefined) usageError('--generator-cpu goes with --supernode-cpu')
let durationMs = 0
let timeoutMs = 0
try {
  durationMs = parseDuration(args.duration ?? (args.quick ? '15s' : '30s'), '--duration')
  timeoutMs = parseDuration(args.timeout, '--timeout')
} catch (err) {
  usageError((err as Error).message)
}
const WARMUP_MS = 2000
if (durationMs <= WARMUP_MS + 1000) usageError('--duration must be longer than 3s (the first 2 s are warm-up)')
if (peers > 65000 * 200) usageError('--peers: too many for the loopback source addresses')
if (model === 'daemon' && live * processes > peers) usageError(`--live: ${live} × ${processes} processes is more than the ${peers} peers`)

const GOALS = { reportsPerS: 20_000, p99Ms: 50, rssBytes: 1024 ** 3 }

const interrupted = new AbortController()
for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => interrupted.abort(new Error(`interrupted by ${sig}`)))
const overall = AbortSignal.any([interrupted.signal, AbortSignal.timeout(timeoutMs)])
const log = (msg: string): void => { process.stderr.write(`${msg}\n`) }

// ---------------------------------------------------------------- pieces

/** Peak and current RSS of a process from /proc (VmHWM, VmRSS), bytes. */
async function rss(pid: number): Promise<{ peak: number; now: number }> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '')
  const kb = (key: string): number => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? 0) * 1024
  return { peak: kb('VmHWM'), now: kb('VmRSS') }
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]
}

type WorkerDone = Stats & { windowMs: number; startedAt: number; warmupMs: number; dialRetries: number; cpuS: number; loopLagP99Ms: number; loopLagMaxMs: number }

class Worker {
  readonly child: ChildProcess
  readonly registered: Promise<{ registered: number; errors: number; errorCodes: Record<string, number>; ms: number }>
  readonly connected: Promise<{ connected: number }>
  readonly done: Promise<WorkerDone>
  private stderr = ''

  constructor(args: string[]) {
    this.child = spawn(process.execPath, [WORKER, ...args], { stdio: ['pipe', 'pipe', 'pipe'] })
    this.child.stderr!.on('data', (d: Buffer) => { this.stderr = (this.stderr + d.toString()).slice(-4000) })
    const lines: Array<Record<string, unknown>> = []
    const waiters: Array<() => void> = []
    createInterface({ input: this.child.stdout! }).on('line', (line) => {
      try { lines.push(JSON.parse(line) as Record<string, unknown>) } catch { return }
      for (const w of waiters.splice(0)) w()
    })
    const exited = new Promise<never>((_, reject) => this.child.once('exit', (code) => reject(new Error(`load generator exited with ${code}: ${this.stderr.trim()}`))))
    exited.catch(() => {})
    const wait = (key: string): Promise<Record<string, unknown>> => Promise.race([exited, new Promise<Record<string, unknown>>((resolve) => {
      const check = (): void => {
        const found = lines.find((l) => key in l)
        if (found !== undefined) resolve(found)
        else waiters.push(check)
      }
      check()
    })])
    this.registered = wait('registered') as Promise<never>
    this.connected = wait('connected') as Promise<never>
    this.done = wait('done') as Promise<never>
    this.registered.catch(() => {})
    this.connected.catch(() => {})
    this.done.catch(() => {})
  }

  send(line: string): void {
    this.child.stdin!.write(`${line}\n`)
  }

  stop(): void {
    this.child.stdin?.end()
    setTimeout(() => this.child.kill('SIGKILL'), 10_000).unref()
  }
}

function bySecond(dones: WorkerDone[]): Result['parentsBySecond'] {
  const buckets = new Map<number, number[]>()
  for (const d of dones) d.parentsAt.forEach((at, k) => { const b = Math.floor(at / 1000); buckets.set(b, [...(buckets.get(b) ?? []), d.parentsMs[k]]) })
  return [...buckets].sort((a, b) => a[0] - b[0]).map(([s, xs]) => {
    xs.sort((a, b) => a - b)
    return { s, n: xs.length, p99: percentile(xs, 99), max: xs[xs.length - 1] }
  })
}

// ---------------------------------------------------------------- run

interface Result {
  label: string
  bin: string
  peers: number
  tasks: number
  pieces: number
  processes: number
  model: string
  concurrency: number
  rate: number
  batch: number
  parentsEvery: number
  protocol: string
  registerS: number
  /** Seconds from the end of the registrations until no supernode paced (waitUnpaced), and the largest pace left then. */
  settleS: number
  settledPaceS: number
  registerErrors: number
  connected: number
  windowS: number
  offeredPerS: number
  pieceReportsPerS: number
  reportCallsPerS: number
  parentsCallsPerS: number
  parentsP50Ms: number
  parentsP99Ms: number
  parentsMaxMs: number
  parentsSamples: number
  /** Per second of the window: timed getParents, their p99 and max (where the tail comes from). */
  parentsBySecond: Array<{ s: number; n: number; p99: number; max: number }>
  /** The load generators' own event-loop lag in the window (the worst generator's): part of every latency they time. */
  generatorsLoopLagP99Ms: number
  generatorsLoopLagMaxMs: number
  /** Wall clock (ms since the epoch) at which the counted window began, to line up with loop-probe.ts's per-second lines. */
  windowStartedAt: number
  busyPerS: number
  paceMaxMs: number
  paceMeanMs: number
  connectP50Ms: number
  sessions: number
  dialRetries: number
  errors: number
  errorCodes: Record<string, number>
  rssPeakBytes: number
  rssAfterRegisterBytes: number
  supernodeCpuS: number
  /** Piece reports per CPU-second the supernode used in the window (getParents included): what one free core would sustain. */
  reportsPerSupernodeCpuS: number
  generatorsCpuS: number
  otherCpuS: number
  stealS: number
  profile?: ProfileSummary
  /** With --supernode-cpu: the cap, and each supernode's CPU over the window against it. */
  cap?: CapResult
  /** With more than one supernode: each one's share (the figures above are summed, RSS the largest). */
  cluster?: Array<{ id: string; tasks: number; cpuS: number; rssPeakBytes: number; pieceReportsPerS: number; reportsPerCpuS: number }>
}

interface CapResult {
  cores: number
  periodUs: number
  quotaUs: number
  /** Wall time between the two CPU reads that bracket the load window (warm-up included). */
  wallS: number
  members: Array<{ cpuS: number; allowedS: number; under: boolean } & ThrottleStat>
  /** With --generator-cpu: each load generator's cap and its CPU over its window. */
  generators?: { cores: number; allowedS: number; cpuS: number[] }
}

/** The CPU caps of the whole scenario (one group per supernode of each run), with --supernode-cpu. */
let caps: CpuCaps | undefined
/** The load generators' caps, with --generator-cpu. */
let genCaps: CpuCaps | undefined
const capGroup = (work: string, k: number): string => `${basename(work)}-sn${k}`

/** The supernodes of one run: one alone (its own SQLite), or `n` sharing a PostgreSQL database and a cluster key. */
interface Supernodes {
  procs: NaiadProcess[]
  /** Each one's fabric address (ending in /p2p/<id>) and HTTP URL, in start order. */
  targets: string[]
  https: string[]
  dataDirs: string[]
  profDirs: string[]
}

async function startSupernodes(bin: string, work: string, origin: TestOrigin, n: number, database: string | undefined, procs: NaiadProcess[]): Promise<Supernodes> {
  const dataDirs = n === 1 ? [join(work, 'sn')] : Array.from({ length: n }, (_, k) => join(work, `sn${k}`))
  const profDirs = n === 1 ? [join(work, 'prof')] : Array.from({ length: n }, (_, k) => join(work, `prof${k}`))
  const start = (k: number): Promise<NaiadProcess> => {
    const p = new NaiadProcess(bin, [
      '--data-dir', dataDirs[k], '--listen', '127.0.0.1:0', '--p2p-listen', '/ip4/127.0.0.1/tcp/0', '--no-seed', '--log-level', 'info', ...(database === undefined ? [] : ['--database', database])
    ], { NAIAD_SOURCE_ALLOW: new URL(origin.url).host, ...(args.profile ? { NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --import ${PROFILER}`, NAIAD_CPU_PROFILE_DIR: profDirs[k] } : {}) })
    procs.push(p)
    // In the same turn as the spawn: the child is capped before its bootstrap gets far.
    caps?.join(capGroup(work, k), p.pid)
    return withSignal(p.ready, AbortSignal.any([overall, AbortSignal.timeout(30_000)]), 'starting the supernode').then(() => p)
  }
  const first = await start(0)
  // The first one made the cluster key; the operator copies it to every other member (tokens and credentials hold at each).
  for (let k = 1; k < n; k++) {
    await mkdir(dataDirs[k], { recursive: true, mode: 0o700 })
    await copyFile(join(dataDirs[0], 'cluster.key'), join(dataDirs[k], 'cluster.key'))
  }
  const rest = await Promise.all(Array.from({ length: n - 1 }, (_, k) => start(k + 1)))
  const readies = await Promise.all([first, ...rest].map((p) => p.ready))
  const targets = readies.map((r) => (r.p2p as string[])[0])
  const https = readies.map((r) => r.http as string)
  if (n > 1) await waitLive(https, targets.map((t) => t.slice(t.lastIndexOf('/p2p/') + 5)))
  return { procs: [first, ...rest], targets, https, dataDirs, profDirs }
}

/** Until every supernode's live set (GET /api/v1/supernodes, what daemons read) is exactly `ids`: ownership agrees everywhere. */
async function waitLive(https: string[], ids: string[]): Promise<void> {
  const want = [...ids].sort().join(',')
  const signal = AbortSignal.any([overall, AbortSignal.timeout(30_000)])
  for (const http of https) {
    for (;;) {
      const members = await fetch(`${http}/api/v1/supernodes`, { signal: AbortSignal.any([signal, AbortSignal.timeout(5_000)]) })
        .then(async (res) => (await res.json() as { members: Array<{ id: string }> }).members.map((m) => m.id).sort().join(','), () => '')
      if (members === want) break
      if (signal.aborted) throw new Error(`the supernode at ${http} did not see all ${ids.length} members live within 30 s (it sees: ${members || 'none'})`)
      await new Promise((r) => setTimeout(r, 200))
    }
  }
}

/** Longest wait for the supernodes to stop pacing after the registrations. */
const SETTLE_MAX_MS = 90_000

/** The pace a supernode's /metrics shows, in seconds (0 for a build without the metric; NaN when it cannot be read). */
async function paceOf(http: string, signal: AbortSignal): Promise<number> {
  try {
    const res = await fetch(`${http}/metrics`, { signal: AbortSignal.any([signal, AbortSignal.timeout(5_000)]) })
    if (!res.ok) return Number.NaN
    return Number(/^(?:naiad_)?scheduler_pace_seconds(?:\{[^}]*\})? +(\S+)$/m.exec(await res.text())?.[1] ?? 0)
  } catch {
    return Number.NaN
  }
}

/**
 * Until no supernode paces its daemons (`naiad_scheduler_pace_seconds` 0), for at most
 * SETTLE_MAX_MS. Registering every peer at once keeps the loop saturated for minutes (the
 * synthetic peers' connections and registrations come as fast as it answers, and no pace holds
 * them back), which raises the pace to its ceiling; a supernode lowers its pace at most once a
 * pace (from 15 s to none takes about 30 s). A window opened before that measures the decay,
 * not what the loop carries: 3,391-5,597 reports/s where the same build, settled, acknowledges
 * 20,000 and more. Returns the seconds waited and the paces left at the end.
 */
async function waitUnpaced(https: string[]): Promise<{ s: number; paces: number[] }> {
  const t0 = performance.now()
  const signal = AbortSignal.any([overall, AbortSignal.timeout(SETTLE_MAX_MS)])
  for (;;) {
    const paces = await Promise.all(https.map((http) => paceOf(http, signal)))
    if (paces.every((p) => p === 0) || signal.aborted) return { s: (performance.now() - t0) / 1000, paces }
    await new Promise((r) => setTimeout(r, 250))
  }
}

/** One supernode build (one or a cluster of `n`) against the whole load: start it, register every peer, connect, run the window. */
async function run(label: string, bin: string, work: string, origin: TestOrigin, n: number, database: string | undefined): Promise<Result> {
  const workers: Worker[] = []
  const procs: NaiadProcess[] = []
  const onAbort = (): void => { for (const w of workers) w.stop() }
  overall.addEventListener('abort', onAbort, { once: true })
  let sampler: NodeJS.Timeout | undefined
  try {
    const sns = await startSupernodes(bin, work, origin, n, database, procs)
    const joinToken = await createToken(sns.dataDirs[0], 'join')
    const pids = sns.procs.map((p) => p.pid)
    const where = n === 1 ? `supernode ${sns.targets[0]} (pid ${pids[0]})` : `${n} supernodes ${sns.targets.map((t, k) => `${t} (pid ${pids[k]})`).join(', ')} on one PostgreSQL`
    log(`[${label}] ${where}; ${peers} peers over ${tasks} tasks of ${pieces} pieces, ${processes} load generators × ${live} live peers, model ${model}`)

    const per = Math.ceil(peers / processes)
    for (let k = 0; k < processes; k++) {
      const first = k * per
      const count = Math.min(per, peers - first)
      if (count <= 0) break
      const w = new Worker([
        ...sns.targets.flatMap((t, j) => ['--supernode', t, '--http', sns.https[j]]), '--token', joinToken, '--origin', origin.url, '--keys', join(work, 'keys'), '--first', String(first), '--count', String(count), '--tasks', String(tasks),
        '--pieces', String(pieces), '--live', String(live), '--duration', `${durationMs}ms`, '--warmup', `${WARMUP_MS}ms`, '--batch', String(batch),
        '--parents-every', String(parentsEvery), '--protocol', protocol, '--model', model, '--rate', String(rate)
      ])
      workers.push(w)
      genCaps?.join(`${basename(work)}-gen${k}`, w.child.pid!)
    }

    const rssPeakSampled = pids.map(() => 0)
    sampler = setInterval(() => { pids.forEach((pid, k) => { rss(pid).then((r) => { rssPeakSampled[k] = Math.max(rssPeakSampled[k], r.now) }, () => {}) }) }, 250)
    const r0 = performance.now()
    const regs = await withSignal(Promise.all(workers.map((w) => w.registered)), overall, 'registering the peers')
    const registerS = (performance.now() - r0) / 1000
    const registerErrors = regs.reduce((a, r) => a + r.errors, 0)
    const afterRegister = await Promise.all(pids.map((pid) => rss(pid)))
    const rssAfterRegister = Math.max(...afterRegister.map((r) => r.now))
    log(`[${label}] registered ${peers - registerErrors} peers in ${registerS.toFixed(1)} s (${registerErrors} failed); supernode RSS ${afterRegister.map((r) => formatBytes(r.now)).join(', ')}`)
    const settle = await waitUnpaced(sns.https)
    const settleS = Math.round(settle.s * 10) / 10
    const settledPaceS = Math.max(0, ...settle.paces.map((p) => Number.isNaN(p) ? 0 : p))
    log(`[${label}] ${settle.paces.every((p) => p === 0) ? 'no supernode paces its daemons' : `still pacing (${settle.paces.map((p) => Number.isNaN(p) ? 'unreadable' : `${p} s`).join(', ')})`} ${settleS} s after the registrations`)
    for (const w of workers) w.send('connect')
    const conns = await withSignal(Promise.all(workers.map((w) => w.connected)), overall, 'connecting the live peers')
    const connected = conns.reduce((a, c) => a + c.connected, 0)
    if (model === 'daemon') log(`[${label}] ${connected} peers connected`)

    const groups = pids.map((_, k) => capGroup(work, k))
    const throttle0 = caps === undefined ? [] : await Promise.all(groups.map((g) => caps!.stat(g)))
    const sn0 = await Promise.all(pids.map((pid) => cpuSeconds(pid)))
    const w0 = performance.now()
    // --profile: the supernodes' profilers run for the load only (cpu-profile-on-signal.ts).
    const signalProfilers = (): void => { if (args.profile) for (const pid of pids) process.kill(pid, 'SIGUSR2') }
    signalProfilers()
    const tGo = process.hrtime.bigint()
    const { value: dones, otherCpuS, stealS } = await foreignCpu(async () => {
      for (const w of workers) w.send('go')
      return withSignal(Promise.all(workers.map((w) => w.done)), AbortSignal.any([overall, AbortSignal.timeout(durationMs + 60_000)]), 'the load window')
    })
    signalProfilers()
    const sn1 = await Promise.all(pids.map((pid) => cpuSeconds(pid)))
    const cpuWallS = (performance.now() - w0) / 1000
    const snCpu = pids.map((_, k) => sn1[k] - sn0[k])
    const snCpuTotal = snCpu.reduce((a, c) => a + c, 0)
    const windowS = dones[0].windowMs / 1000
    const sum = (f: (d: WorkerDone) => number): number => dones.reduce((a, d) => a + f(d), 0)
    const lat = dones.flatMap((d) => d.parentsMs).sort((a, b) => a - b)
    const connect = dones.flatMap((d) => d.connectMs)
    const errorCodes: Record<string, number> = {}
    for (const d of dones) for (const [c, n] of Object.entries(d.errorCodes)) errorCodes[c] = (errorCodes[c] ?? 0) + n
    const peaks = await Promise.all(pids.map(async (pid, k) => Math.max((await rss(pid)).peak, rssPeakSampled[k])))
    const paceAnswers = sum((d) => d.paceAnswers)
    const result: Result = {
      label, bin, peers, tasks, pieces, processes: workers.length, model, concurrency: workers.length * live, rate, batch, parentsEvery, protocol,
      registerS: Math.round(registerS * 10) / 10,
      settleS,
      settledPaceS,
      registerErrors,
      connected,
      windowS,
      offeredPerS: Math.round(sum((d) => d.offered) / windowS),
      pieceReportsPerS: Math.round(sum((d) => d.pieceReports) / windowS),
      reportCallsPerS: Math.round(sum((d) => d.reportCalls) / windowS),
      parentsCallsPerS: Math.round(sum((d) => d.parentsCalls) / windowS),
      parentsP50Ms: percentile(lat, 50),
      parentsP99Ms: percentile(lat, 99),
      parentsMaxMs: lat[lat.length - 1] ?? NaN,
      parentsSamples: lat.length,
      parentsBySecond: bySecond(dones),
      generatorsLoopLagP99Ms: Math.max(...dones.map((d) => d.loopLagP99Ms)),
      generatorsLoopLagMaxMs: Math.max(...dones.map((d) => d.loopLagMaxMs)),
      windowStartedAt: Math.min(...dones.map((d) => d.startedAt + d.warmupMs)),
      busyPerS: Math.round(sum((d) => d.busy) / windowS),
      paceMaxMs: Math.max(...dones.map((d) => d.paceMaxMs)),
      paceMeanMs: paceAnswers === 0 ? 0 : Math.round(sum((d) => d.paceSumMs) / paceAnswers),
      connectP50Ms: connect.length === 0 ? NaN : Math.round(median(connect) * 10) / 10,
      sessions: sum((d) => d.sessions),
      dialRetries: sum((d) => d.dialRetries),
      errors: sum((d) => d.errors),
      errorCodes,
      rssPeakBytes: Math.max(...peaks),
      rssAfterRegisterBytes: rssAfterRegister,
      supernodeCpuS: Math.round(snCpuTotal * 100) / 100,
      reportsPerSupernodeCpuS: Math.round(sum((d) => d.pieceReports) / Math.max(0.01, snCpuTotal)),
      generatorsCpuS: Math.round(sum((d) => d.cpuS) * 100) / 100,
      otherCpuS,
      stealS
    }
    if (caps !== undefined) {
      const throttle1 = await Promise.all(groups.map((g) => caps!.stat(g)))
      result.cap = {
        cores: caps.fraction,
        periodUs: caps.periodUs,
        quotaUs: caps.quotaUs,
        wallS: Math.round(cpuWallS * 100) / 100,
        members: snCpu.map((cpuS, k) => ({
          cpuS: Math.round(cpuS * 100) / 100,
          allowedS: Math.round(caps!.fraction * cpuWallS * 100) / 100,
          under: underCap(cpuS, cpuWallS, caps!.fraction),
          ...throttleDelta(throttle0[k], throttle1[k])
        }))
      }
      if (genCaps !== undefined) {
        result.cap.generators = { cores: genCaps.fraction, allowedS: Math.round(genCaps.fraction * cpuWallS * 100) / 100, cpuS: dones.map((d) => Math.round(d.cpuS * 100) / 100) }
      }
    }
    if (n > 1) {
      const ids = sns.targets.map((t) => t.slice(t.lastIndexOf('/p2p/') + 5))
      // The tasks each one owns, as the generators route them: the hash spreads few tasks unevenly.
      const owners = Array.from({ length: tasks }, (_, t) => ownerOf(taskIdOf({ url: `${origin.url}/scheduler-scale/task-${t}` }), ids))
      result.cluster = ids.map((id, k) => {
        const reports = sum((d) => d.pieceReportsBy[k])
        return {
          id,
          tasks: owners.filter((o) => o === id).length,
          cpuS: Math.round(snCpu[k] * 100) / 100,
          rssPeakBytes: peaks[k],
          pieceReportsPerS: Math.round(reports / windowS),
          reportsPerCpuS: Math.round(reports / Math.max(0.01, snCpu[k]))
        }
      })
    }
    if (args.profile) {
      // The first supernode's profile (with several, each runs the same code on its share of
      // the tasks), written once its profiler has stopped: wait for it a while.
      let files: string[] = []
      for (let i = 0; i < 100 && files.length === 0; i++) {
        await new Promise((r) => setTimeout(r, 200))
        files = (await readdir(sns.profDirs[0]).catch(() => [] as string[])).filter((f) => f.endsWith('.cpuprofile'))
      }
      if (files.length === 0) log(`[${label}] no CPU profile from the supernode in 20 s`)
      else {
        const fromUs = Number(tGo / 1000n) + WARMUP_MS * 1000
        result.profile = await summarizeFile(join(sns.profDirs[0], files[0]), { top: 15, from: fromUs, to: fromUs + windowS * 1e6 })
        // Kept beside the results, for a closer look (load/long-stretches.ts).
        await copyFile(join(sns.profDirs[0], files[0]), `${args.out}-${label}.cpuprofile`)
      }
    }
    for (const w of workers) w.stop()
    await Promise.all(procs.map((p) => p.stop()))
    log(`[${label}] ${result.pieceReportsPerS} reports/s, get-parents p99 ${result.parentsP99Ms} ms, peak RSS ${formatBytes(result.rssPeakBytes)}`)
    return result
  } finally {
    if (sampler !== undefined) clearInterval(sampler)
    overall.removeEventListener('abort', onAbort)
    for (const w of workers) w.stop()
    await Promise.all(procs.map((p) => p.stop()))
  }
}

const work = await mkdtemp(join(tmpdir(), 'naiad-sched-scale-'))
let origin: TestOrigin | undefined
let pg: PostgresHandle | undefined
let failed = false
try {
  // The tasks' origin: the supernode checks a task is public before it grants it to peers.
  origin = await new TestOrigin().start()
  for (let t = 0; t < tasks; t++) origin.files.set(`/scheduler-scale/task-${t}`, { data: Buffer.alloc(0) })
  // Several supernodes share their state on PostgreSQL: one server, a fresh database per run.
  if (clusterSizes.some((n) => n > 1)) pg = await startPostgres()
  if (supernodeCpu !== undefined) {
    caps = await createCpuCaps(supernodeCpu, 'naiad-sched-scale')
    log(`capping each supernode at ${supernodeCpu} core: cgroup ${caps.dir}, CFS quota ${caps.quotaUs} µs every ${caps.periodUs} µs`)
  }
  if (generatorCpu !== undefined) {
    genCaps = await createCpuCaps(generatorCpu, 'naiad-sched-scale-gen')
    log(`capping each load generator at ${generatorCpu} core: cgroup ${genCaps.dir}`)
  }
  const database = async (n: number, name: string): Promise<string | undefined> => (n > 1 ? pg!.createDatabase(name) : undefined)
  const results: Result[] = []
  if (clusterSizes.length > 1) {
    for (const [k, n] of clusterSizes.entries()) {
      results.push(await run(`${n} supernode${n === 1 ? '' : 's'}`, BINS.supernode, join(work, `sn-${k}`), origin, n, await database(n, `sched_${k}`)))
    }
  } else {
    const n = clusterSizes[0]
    if (args['alt-bin'] !== undefined) results.push(await run(args['alt-label'], args['alt-bin'], join(work, 'alt'), origin, n, await database(n, 'sched_alt')))
    results.push(await run('this', BINS.supernode, join(work, 'this'), origin, n, await database(n, 'sched_this')))
  }
  const md = markdown(results)
  process.stdout.write(`${md}\n`)
  const main = results[results.length - 1]
  await writeResults(args.out, 'scheduler-scale', { goals: GOALS, goal: goal(main), result: main, results }, md)
  log(`wrote ${args.out}.json, .md`)
} catch (err) {
  failed = true
  log(`scheduler-scale: ${overall.aborted ? (overall.reason as Error).message : (err as Error).stack ?? String(err)}`)
} finally {
  await origin?.stop()
  await pg?.stop()
  await killDescendants()
  for (const c of [caps, genCaps]) await c?.remove().catch((err: unknown) => { log(`scheduler-scale: ${(err as Error).message}`) })
  await rm(work, { recursive: true, force: true })
}
process.exit(failed ? 1 : 0)

// ---------------------------------------------------------------- report

function goal(r: Result): { met: boolean; misses: string[] } {
  const misses: string[] = []
  if (r.pieceReportsPerS < GOALS.reportsPerS) misses.push(`reports/s ${r.pieceReportsPerS} is ${((1 - r.pieceReportsPerS / GOALS.reportsPerS) * 100).toFixed(0)} % short of ${GOALS.reportsPerS}`)
  if (!(r.parentsP99Ms <= GOALS.p99Ms)) misses.push(`get-parents p99 ${r.parentsP99Ms.toFixed(1)} ms is ${(r.parentsP99Ms / GOALS.p99Ms).toFixed(1)}× the ${GOALS.p99Ms} ms goal`)
  if (r.rssPeakBytes > GOALS.rssBytes) misses.push(`peak RSS ${formatBytes(r.rssPeakBytes)} is ${((r.rssPeakBytes / GOALS.rssBytes - 1) * 100).toFixed(0)} % over 1 GiB`)
  return { met: misses.length === 0, misses }
}

function markdown(results: Result[]): string {
  const r = results[results.length - 1]
  const mark = (ok: boolean): string => (ok ? 'met' : '**not met**')
  const g = goal(r)
  const share = (x: Result): number => (x.otherCpuS + x.stealS) / (x.windowS * cpus().length)
  const how = r.model === 'daemon'
    ? `${r.connected} peers connected at once (${r.processes} load generators), each downloading like a dfdaemon at ${r.rate} pieces/s (offered ${r.concurrency * r.rate} reports/s): reports on a 100 ms beat, a getParents every 250 ms, both slower when the supernode asks for a pace; every peer restarts its download when it has every piece (the first joined at a random piece, so that the downloads do not end together), and its reports name the parents its last getParents gave`
    : `${r.processes} load-generator processes, ${r.concurrency} peers connected at once (each peer connects, runs up to 50 rounds as fast as answers come, disconnects; the next takes its place), ${r.batch} piece results per reportPieces, one getParents per ${r.parentsEvery} reports`
  const clustered = results.some((x) => x.cluster !== undefined)
  const capped = r.cap
  const lines = [
    `## Scheduler scale, ${r.peers} synthetic peers, ${r.tasks} tasks of ${r.pieces} pieces`,
    '',
    `${how}; ${r.protocol === 'stream' ? 'a stream per call (/naiad/scheduler/1.0.0)' : 'one scheduler session per peer (/naiad/scheduler/1.1.0)'}. Load window ${r.windowS.toFixed(0)} s after 2 s of warm-up; all ${r.peers} peers registered first (${results.map((x) => `${x.label} ${x.registerS} s`).join(', ')}); the load started once no supernode paced its daemons after that burst (${results.map((x) => `${x.label} ${x.settleS} s later${x.settledPaceS > 0 ? `, still ${x.settledPaceS} s at the ${SETTLE_MAX_MS / 1000} s limit` : ''}`).join('; ')}).`,
    ...(capped === undefined ? [] : ['', `Each supernode in its own CPU cgroup capped at ${capped.cores} core (CFS quota ${capped.quotaUs.toLocaleString('en-US')} µs every ${capped.periodUs.toLocaleString('en-US')} µs, from its spawn, and a raised weight so that a busy machine still gives it that much): a model of one machine of ${capped.cores} core per supernode, the load generators (uncapped) having the rest of the ${cpus().length} cores. It models per-machine capacity; it is not a measurement of ${r.cluster?.length ?? 1} machines (no network between them, one kernel, shared caches and memory bandwidth).`]),
    ...(clustered ? ['', 'Several supernodes: one cluster on one PostgreSQL database (the same cluster key in each data dir), every one seeing all live before the peers start; each peer joins at one, dials and announces its host to every one, and registers its task with the task\'s owner (rendezvous hashing over the live IDs), which gets all its calls. Rates are summed over the supernodes, CPU-s summed, RSS the largest one\'s.'] : []),
    '',
    `| figure | ${results.map((x) => x.label).join(' | ')} | goal |${results.length > 1 ? ` ${r.label} / ${results[0].label} |` : ''}`,
    `|---|${results.map(() => '---:').join('|')}|---:|${results.length > 1 ? '---:|' : ''}`
  ]
  const row = (name: string, f: (x: Result) => number, fmt: (v: number) => string, goalText = ''): void => {
    const base = f(results[0])
    const ratio = results.length > 1 ? ` ${base > 0 && Number.isFinite(base) ? (f(r) / base).toFixed(2) : '–'} |` : ''
    lines.push(`| ${name} | ${results.map((x) => fmt(f(x))).join(' | ')} | ${goalText} |${ratio}`)
  }
  const int = (v: number): string => Number.isFinite(v) ? Math.round(v).toLocaleString('en-US') : '–'
  const ms = (v: number): string => Number.isFinite(v) ? v.toFixed(1) : '–'
  if (clustered) row('supernodes', (x) => x.cluster?.length ?? 1, int)
  if (r.model === 'daemon') row('piece reports offered/s', (x) => x.offeredPerS, int)
  row('piece reports/s acknowledged', (x) => x.pieceReportsPerS, int, `≥ ${GOALS.reportsPerS.toLocaleString('en-US')}`)
  row('get-parents p99, ms', (x) => x.parentsP99Ms, ms, `≤ ${GOALS.p99Ms}`)
  row('get-parents p50, ms', (x) => x.parentsP50Ms, ms)
  row('supernode peak RSS, MiB', (x) => x.rssPeakBytes / 2 ** 20, int, '≤ 1,024')
  row('piece reports per supernode CPU-s', (x) => x.reportsPerSupernodeCpuS, int)
  row('reportPieces calls/s', (x) => x.reportCallsPerS, int)
  row('getParents calls/s (answered)', (x) => x.parentsCallsPerS, int)
  row('getParents put off (SN_ERR_BUSY)/s', (x) => x.busyPerS, int)
  row('pace asked (mean of answers), ms', (x) => x.paceMeanMs, int)
  row('pace asked (max), ms', (x) => x.paceMaxMs, int)
  row('failed calls', (x) => x.errors, int)
  row('supernode CPU-s in the window', (x) => x.supernodeCpuS, (v) => v.toFixed(1))
  if (clustered) {
    const busiest = (x: Result): number => Math.max(...(x.cluster?.map((m) => m.cpuS) ?? [x.supernodeCpuS]))
    row('busiest supernode CPU-s in the window', busiest, (v) => v.toFixed(1))
    // What the cluster would carry with a free core for each supernode: the busiest one saturates first.
    row('piece reports per CPU-s of the busiest supernode', (x) => (x.pieceReportsPerS * x.windowS) / Math.max(0.01, busiest(x)), int)
  }
  if (capped !== undefined) {
    const cells = (f: (c: CapResult) => string): string => results.map((x) => (x.cap === undefined ? '–' : f(x.cap))).join(' | ')
    const tail = `${results.length > 1 ? ' |' : ''}`
    lines.push(`| CPU-s per supernode in the window / allowed by the cap | ${cells((c) => `${c.members.map((m) => m.cpuS.toFixed(1)).join(', ')} / ${c.members[0].allowedS.toFixed(1)}`)} | |${tail}`)
    lines.push(`| every supernode under its cap | ${cells((c) => (c.members.every((m) => m.under) ? 'yes' : '**no**'))} | |${tail}`)
    lines.push(`| CFS periods throttled (of those it ran in), per supernode | ${cells((c) => c.members.map((m) => `${m.throttled.toLocaleString('en-US')} / ${m.periods.toLocaleString('en-US')}`).join(', '))} | |${tail}`)
    if (capped.generators !== undefined) lines.push(`| CPU-s per load generator in the window / allowed by its cap | ${cells((c) => (c.generators === undefined ? '–' : `${c.generators.cpuS.map((v) => v.toFixed(1)).join(', ')} / ${c.generators.allowedS.toFixed(1)}`))} | |${tail}`)
  }
  lines.push(
    '',
    `Goal for this build (≥ 20,000 reports/s, p99 ≤ 50 ms, RSS ≤ 1 GiB): **${g.met ? 'met' : 'not met'}**${g.met ? '' : ` (${g.misses.join('; ')})`}: ${mark(r.pieceReportsPerS >= GOALS.reportsPerS)} / ${mark(r.parentsP99Ms <= GOALS.p99Ms)} / ${mark(r.rssPeakBytes <= GOALS.rssBytes)}.`,
    ''
  )
  for (const x of results) {
    const worst = [...x.parentsBySecond].sort((a, b) => b.p99 - a.p99).slice(0, 3).map((b) => `${b.s}–${b.s + 1} s: ${b.p99.toFixed(0)} ms over ${b.n}`).join(', ')
    lines.push(`${x.label}: get-parents max ${x.parentsMaxMs.toFixed(0)} ms (${x.parentsSamples} timed; worst seconds by p99: ${worst}); connection set-up p50 ${x.connectP50Ms} ms (${x.sessions} sessions, ${x.dialRetries} refused dials retried); ${x.errors} failed calls${x.errors > 0 ? ` (${Object.entries(x.errorCodes).map(([c, n]) => `${c} ${n}`).join(', ')})` : ''}; ${x.registerErrors} peers failed to register; RSS after registration ${formatBytes(x.rssAfterRegisterBytes)}. CPU in the window: supernode ${x.supernodeCpuS.toFixed(1)} s (${((x.supernodeCpuS / x.windowS) * 100).toFixed(0)} % of one core), load generators ${x.generatorsCpuS.toFixed(1)} s, other processes ${x.otherCpuS.toFixed(1)} s${share(x) > 0.1 ? ' (**the machine was not idle: the rates are noisy**)' : ''}, stolen ${x.stealS.toFixed(1)} s.`, '')
    if (x.cluster !== undefined) {
      lines.push(`${x.label}, each supernode: ${x.cluster.map((m) => `${m.id.slice(-6)} (${m.tasks} tasks): ${m.pieceReportsPerS.toLocaleString('en-US')} reports/s, ${m.cpuS.toFixed(1)} CPU-s (${m.reportsPerCpuS.toLocaleString('en-US')} reports per CPU-s), peak RSS ${formatBytes(m.rssPeakBytes)}`).join('; ')}.`, '')
    }
  }
  if (capped !== undefined && results.length > 1) {
    // Nothing can grow if the smallest cluster already acknowledged what the peers would offer
    // unpaced (the offered row counts what they sent after the supernode's pace slowed them).
    const small = results[0]
    const nominal = small.concurrency * small.rate
    if (small.model === 'daemon' && small.pieceReportsPerS >= 0.9 * nominal) {
      lines.push(`**${small.label} acknowledged ${Math.round((small.pieceReportsPerS / nominal) * 100)} % of the ${nominal.toLocaleString('en-US')} reports/s the peers offer unpaced: it was not saturated, so the ratio cannot show growth; raise --rate or --live (or lower --supernode-cpu).**`, '')
    }
  }
  if (capped === undefined) lines.push(`Per CPU-second of the supernode: the piece reports (with the getParents calls that came with them) one free core would sustain at this mix. Load generators and supernode share the machine (${cpus().length} cores), so the rates are a lower bound of what the supernode alone sustains. Load average at the end: ${loadavg().map((l) => l.toFixed(2)).join(', ')}.`, '')
  else lines.push(`Per CPU-second of the supernode: the piece reports (with the getParents calls that came with them) one free core would sustain at this mix. The supernodes were capped${capped.generators === undefined ? ', the load generators not: when the generators\' CPU-s come near what the ' + String(cpus().length) + ' cores leave them (the window\'s core-seconds less the caps and the other processes)' : ' and so were the load generators: when their CPU-s come near their caps'}, the generators, not the supernodes, set the rate. Load average at the end: ${loadavg().map((l) => l.toFixed(2)).join(', ')}.`, '')
  for (const x of results) if (x.profile !== undefined) lines.push(formatSummary(x.profile, `Supernode CPU profile over the load window (${x.label})`), '')
  return lines.join('\n')
}
