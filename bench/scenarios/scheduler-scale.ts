// Scenario 7 of the benchmark issue: one real supernode process against many synthetic
// peers. A few load-generator processes (bench/load/scheduler-peers.ts) each simulate a share
// of the peers, every peer with its own identity and its own loopback source address,
// speaking the real scheduler protocol over the fabric: announce host, register task,
// report pieces, get parents.
//
//   node bench/scenarios/scheduler-scale.ts [--quick] [--peers 10000] [--processes 3] [--duration 30s] [--profile]
//
// Reports piece reports per second sustained over the load window, get-parents p50/p99
// latency (as the peers saw it, over the fabric), and the supernode's peak RSS (VmHWM from
// /proc). Goal (issue 5): at least 20,000 reports/s, p99 at most 50 ms, RSS at most 1 GiB.

import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises'
import { cpus, loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'

import { formatBytes, parseDuration } from '@naiad/proto'
import { BINS, NaiadProcess, createToken, TestOrigin } from '@naiad/testkit'
import { freePort } from '../testbed/ports.ts'

import { summarizeFile, formatSummary, type ProfileSummary } from '../cpuprofile-summary.ts'
import { cpuSeconds, foreignCpu, killDescendants } from '../proc-stats.ts'
import { parseCommandLine, usageFailer } from '../report/cli.ts'
import { median, withSignal, writeResults } from '../report/helpers.ts'

const WORKER = fileURLToPath(new URL('../load/scheduler-peers.ts', import.meta.url))
const RESULTS = fileURLToPath(new URL('../results/', import.meta.url))

const USAGE = `usage: node bench/scenarios/scheduler-scale.ts [options]
  --quick                 1,000 peers and a 15 s load window (unless given)
  --peers N               synthetic peers (default 10000)
  --tasks N               tasks they share (default: one per 200 peers)
  --pieces N              pieces per task (default 128: 512 MiB at 4 MiB)
  --processes N           load-generator processes (default 3)
  --live N                peers connected at once per process (default 32)
  --batch N               piece results per reportPieces call (default 4; a dfdaemon flushes every 100 ms)
  --parents-every N       one getParents per N reports (default 2)
  --protocol P            session: one scheduler session per peer, pipelined (1.1.0, what dfdaemon speaks; default);
                          stream: a stream per call (1.0.0, daemons before sessions), for comparison
  --duration DURATION     load window (default 30s; quick 15s), the first 2 s not counted
  --profile               run the supernode under --cpu-prof and summarise the load window
  --timeout DURATION      bound on the whole scenario (default 20m)
  --out PREFIX            results: PREFIX.json, PREFIX.md (default bench/results/scheduler-scale)`

const usageError = usageFailer('scheduler-scale', USAGE)

const args = parseCommandLine(USAGE, usageError, () => parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    peers: { type: 'string' },
    tasks: { type: 'string' },
    pieces: { type: 'string', default: '128' },
    processes: { type: 'string', default: '3' },
    live: { type: 'string', default: '32' },
    batch: { type: 'string', default: '4' },
    'parents-every': { type: 'string', default: '2' },
    protocol: { type: 'string', default: 'session' },
    duration: { type: 'string' },
    profile: { type: 'boolean', default: false },
    timeout: { type: 'string', default: '20m' },
    out: { type: 'string', default: join(RESULTS, 'scheduler-scale') },
    help: { type: 'boolean', short: 'h', default: false }
  }
}).values)
const whole = (v: string, flag: string): number => {
  const n = Number(v)
  if (!Number.isInteger(n) || n <= 0) usageError(`${flag} must be a positive whole number, not ${v}`)
  return n
}
const peers = whole(args.peers ?? (args.quick ? '1000' : '10000'), '--peers')
const tasks = whole(args.tasks ?? String(Math.max(1, Math.round(peers / 200))), '--tasks')
const pieces = whole(args.pieces, '--pieces')
const processes = Math.min(whole(args.processes, '--processes'), peers)
const live = whole(args.live, '--live')
const batch = whole(args.batch, '--batch')
const protocol = args.protocol
if (protocol !== 'session' && protocol !== 'stream') usageError(`--protocol is session or stream, not ${protocol}`)
const parentsEvery = whole(args['parents-every'], '--parents-every')
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

interface WorkerDone {
  windowMs: number
  reportCalls: number
  pieceReports: number
  parentsCalls: number
  parentsMs: number[]
  errors: number
  errorCodes: Record<string, number>
  sessions: number
  connectMs: number[]
  dialRetries: number
  cpuS: number
}

class Worker {
  readonly child: ChildProcess
  readonly registered: Promise<{ registered: number; errors: number; errorCodes: Record<string, number>; ms: number }>
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
    this.done = wait('done') as Promise<never>
    this.registered.catch(() => {})
    this.done.catch(() => {})
  }

  go(): void {
    this.child.stdin!.write('go\n')
  }

  stop(): void {
    this.child.stdin?.end()
    setTimeout(() => this.child.kill('SIGKILL'), 10_000).unref()
  }
}

// ---------------------------------------------------------------- run

interface Result {
  peers: number
  tasks: number
  pieces: number
  processes: number
  concurrency: number
  batch: number
  parentsEvery: number
  protocol: string
  registerS: number
  registerErrors: number
  windowS: number
  pieceReportsPerS: number
  reportCallsPerS: number
  parentsCallsPerS: number
  parentsP50Ms: number
  parentsP99Ms: number
  parentsMaxMs: number
  parentsSamples: number
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
}

const work = await mkdtemp(join(tmpdir(), 'naiad-sched-scale-'))
const workers: Worker[] = []
let supernode: NaiadProcess | undefined
let origin: TestOrigin | undefined
let failed = false
try {
  const profDir = join(work, 'prof')
  const httpPort = await freePort()
  // The tasks' origin: the supernode checks a task is public before it grants it to peers.
  origin = await new TestOrigin().start()
  for (let t = 0; t < tasks; t++) origin.files.set(`/scheduler-scale/task-${t}`, { data: Buffer.alloc(0) })
  supernode = new NaiadProcess(BINS.supernode, [
    '--data-dir', join(work, 'sn'), '--listen', `127.0.0.1:${httpPort}`, '--p2p-listen', '/ip4/127.0.0.1/tcp/0', '--no-seed', '--log-level', 'info'
  ], { NAIAD_SOURCE_ALLOW: new URL(origin.url).host, ...(args.profile ? { NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --cpu-prof --cpu-prof-dir=${profDir}` } : {}) })
  const ready = await withSignal(supernode.ready, AbortSignal.any([overall, AbortSignal.timeout(30_000)]), 'starting the supernode')
  const target = (ready.p2p as string[])[0]
  const joinToken = await createToken(join(work, 'sn'), 'join')
  const snPid = supernode.pid
  log(`supernode ${target} (pid ${snPid}); ${peers} peers over ${tasks} tasks of ${pieces} pieces, ${processes} load generators × ${live} live peers`)

  const per = Math.ceil(peers / processes)
  for (let k = 0; k < processes; k++) {
    const first = k * per
    const count = Math.min(per, peers - first)
    if (count <= 0) break
    workers.push(new Worker([
      '--supernode', target, '--http', `http://127.0.0.1:${httpPort}`, '--token', joinToken, '--origin', origin.url, '--keys', join(work, 'keys'), '--first', String(first), '--count', String(count), '--tasks', String(tasks),
      '--pieces', String(pieces), '--live', String(live), '--duration', `${durationMs}ms`, '--warmup', `${WARMUP_MS}ms`, '--batch', String(batch),
      '--parents-every', String(parentsEvery), '--protocol', protocol
    ]))
  }
  const onAbort = (): void => { for (const w of workers) w.stop() }
  overall.addEventListener('abort', onAbort, { once: true })

  let rssPeakSampled = 0
  const sampler = setInterval(() => { rss(snPid).then((r) => { rssPeakSampled = Math.max(rssPeakSampled, r.now) }, () => {}) }, 250)
  try {
    const r0 = performance.now()
    const regs = await withSignal(Promise.all(workers.map((w) => w.registered)), overall, 'registering the peers')
    const registerS = (performance.now() - r0) / 1000
    const registerErrors = regs.reduce((a, r) => a + r.errors, 0)
    const afterRegister = await rss(snPid)
    log(`registered ${peers - registerErrors} peers in ${registerS.toFixed(1)} s (${registerErrors} failed); supernode RSS ${formatBytes(afterRegister.now)}`)

    const sn0 = await cpuSeconds(snPid)
    const tGo = process.hrtime.bigint()
    const { value: dones, otherCpuS, stealS } = await foreignCpu(async () => {
      for (const w of workers) w.go()
      return withSignal(Promise.all(workers.map((w) => w.done)), AbortSignal.any([overall, AbortSignal.timeout(durationMs + 60_000)]), 'the load window')
    })
    const sn1 = await cpuSeconds(snPid)
    const windowS = dones[0].windowMs / 1000
    const sum = (f: (d: WorkerDone) => number): number => dones.reduce((a, d) => a + f(d), 0)
    const lat = dones.flatMap((d) => d.parentsMs).sort((a, b) => a - b)
    const connect = dones.flatMap((d) => d.connectMs)
    const errorCodes: Record<string, number> = {}
    for (const d of dones) for (const [c, n] of Object.entries(d.errorCodes)) errorCodes[c] = (errorCodes[c] ?? 0) + n
    const peak = await rss(snPid)
    const result: Result = {
      peers, tasks, pieces, processes: workers.length, concurrency: workers.length * live, batch, parentsEvery, protocol,
      registerS: Math.round(registerS * 10) / 10,
      registerErrors,
      windowS,
      pieceReportsPerS: Math.round(sum((d) => d.pieceReports) / windowS),
      reportCallsPerS: Math.round(sum((d) => d.reportCalls) / windowS),
      parentsCallsPerS: Math.round(sum((d) => d.parentsCalls) / windowS),
      parentsP50Ms: percentile(lat, 50),
      parentsP99Ms: percentile(lat, 99),
      parentsMaxMs: lat[lat.length - 1] ?? NaN,
      parentsSamples: lat.length,
      connectP50Ms: connect.length === 0 ? NaN : Math.round(median(connect) * 10) / 10,
      sessions: sum((d) => d.sessions),
      dialRetries: sum((d) => d.dialRetries),
      errors: sum((d) => d.errors),
      errorCodes,
      rssPeakBytes: Math.max(peak.peak, rssPeakSampled),
      rssAfterRegisterBytes: afterRegister.now,
      supernodeCpuS: Math.round((sn1 - sn0) * 100) / 100,
      reportsPerSupernodeCpuS: Math.round(sum((d) => d.pieceReports) / Math.max(0.01, sn1 - sn0)),
      generatorsCpuS: Math.round(sum((d) => d.cpuS) * 100) / 100,
      otherCpuS,
      stealS
    }
    for (const w of workers) w.stop()
    await supernode.stop()
    if (args.profile) {
      const files = (await readdir(profDir).catch(() => [] as string[])).filter((f) => f.endsWith('.cpuprofile'))
      if (files.length > 0) {
        const fromUs = Number(tGo / 1000n) + WARMUP_MS * 1000
        result.profile = await summarizeFile(join(profDir, files[0]), { top: 15, from: fromUs, to: fromUs + windowS * 1e6 })
      }
    }
    const md = markdown(result)
    process.stdout.write(`${md}\n`)
    await writeResults(args.out, 'scheduler-scale', {
      goals: GOALS, goal: goal(result), result
    }, md)
    log(`wrote ${args.out}.json, .md`)
  } finally {
    clearInterval(sampler)
    overall.removeEventListener('abort', onAbort)
  }
} catch (err) {
  failed = true
  log(`scheduler-scale: ${overall.aborted ? (overall.reason as Error).message : (err as Error).stack ?? String(err)}`)
} finally {
  for (const w of workers) w.stop()
  await supernode?.stop()
  await origin?.stop()
  await killDescendants()
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

function markdown(r: Result): string {
  const mark = (ok: boolean): string => (ok ? 'met' : '**not met**')
  const g = goal(r)
  const share = (r.otherCpuS + r.stealS) / (r.windowS * cpus().length)
  const lines = [
    `## Scheduler scale, ${r.peers} synthetic peers, ${r.tasks} tasks of ${r.pieces} pieces`,
    '',
    `${r.processes} load-generator processes, ${r.concurrency} peers connected at once (each peer connects, runs up to 50 rounds, disconnects; the next takes its place), ${r.batch} piece results per reportPieces, one getParents per ${r.parentsEvery} reports, ${r.protocol === 'stream' ? 'a stream per call (/naiad/scheduler/1.0.0)' : 'one scheduler session per peer (/naiad/scheduler/1.1.0)'}. Load window ${r.windowS.toFixed(0)} s after 2 s of warm-up; all peers registered first (${r.registerS} s).`,
    '',
    '| figure | measured | goal | |',
    '|---|---:|---:|---|',
    `| piece reports/s (sustained over the window) | ${r.pieceReportsPerS} | ≥ ${GOALS.reportsPerS} | ${mark(r.pieceReportsPerS >= GOALS.reportsPerS)}${r.pieceReportsPerS >= GOALS.reportsPerS ? '' : `, ${((1 - r.pieceReportsPerS / GOALS.reportsPerS) * 100).toFixed(0)} % short`} |`,
    `| get-parents p99, ms | ${r.parentsP99Ms.toFixed(1)} | ≤ ${GOALS.p99Ms} | ${mark(r.parentsP99Ms <= GOALS.p99Ms)}${r.parentsP99Ms <= GOALS.p99Ms ? '' : `, ${(r.parentsP99Ms / GOALS.p99Ms).toFixed(1)}× the goal`} |`,
    `| get-parents p50, ms | ${r.parentsP50Ms.toFixed(1)} | | |`,
    `| supernode peak RSS | ${formatBytes(r.rssPeakBytes)} | ≤ 1.0 GiB | ${mark(r.rssPeakBytes <= GOALS.rssBytes)} |`,
    '',
    `Goal (≥ 20,000 reports/s, p99 ≤ 50 ms, RSS ≤ 1 GiB): **${g.met ? 'met' : 'not met'}**${g.met ? '' : ` (${g.misses.join('; ')})`}.`,
    '',
    `Also: ${r.reportCallsPerS} reportPieces calls/s, ${r.parentsCallsPerS} getParents calls/s (${r.parentsSamples} timed, max ${r.parentsMaxMs.toFixed(0)} ms); connection set-up p50 ${r.connectP50Ms} ms (including the wait for one of 3 set-up slots per process) (${r.sessions} sessions, ${r.dialRetries} refused dials retried); ${r.errors} failed calls${r.errors > 0 ? ` (${Object.entries(r.errorCodes).map(([c, n]) => `${c} ${n}`).join(', ')})` : ''}; ${r.registerErrors} peers failed to register. RSS after registration ${formatBytes(r.rssAfterRegisterBytes)}.`,
    '',
    `Per CPU-second of the supernode: ${r.reportsPerSupernodeCpuS} piece reports (with the getParents calls that came with them), i.e. what one free core would sustain at this mix.`,
    '',
    `CPU during the window: supernode ${r.supernodeCpuS.toFixed(1)} s (${((r.supernodeCpuS / r.windowS) * 100).toFixed(0)} % of one core), load generators ${r.generatorsCpuS.toFixed(1)} s, other processes ${r.otherCpuS.toFixed(1)} s${share > 0.1 ? ' (**the machine was not idle: the rates are noisy**)' : ''}, stolen ${r.stealS.toFixed(1)} s; ${cpus().length} cores. Load generators and supernode share the machine, so the rates are a lower bound of what the supernode alone sustains. Load average at the end: ${loadavg().map((l) => l.toFixed(2)).join(', ')}.`,
    ''
  ]
  if (r.profile !== undefined) lines.push(formatSummary(r.profile, 'Supernode CPU profile over the load window'), '')
  return lines.join('\n')
}
