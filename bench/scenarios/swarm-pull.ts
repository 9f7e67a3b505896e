// Scenario 1 of the benchmark issue, for a blob: N hosts pull the same blob at once, each
// over its own shaped link, directly from the origin (curl in the host's namespace) against
// through Naiad (a dfdaemon per host, the supernode in its own namespace, dfget on each host).
//
//   node bench/scenarios/swarm-pull.ts [--quick] [--hosts 1,4,8,16] [--size 256MiB]
//        [--host-bandwidth 200] [--registry-bandwidth 400] [--rtt 2]
//
// Per N it reports completion time (median and max over the hosts, from the common start to
// each client's exit), origin egress (TestOrigin's own count), and the ratio to the physical
// limit, size / host bandwidth. Goal (issue 5): Naiad at the largest N within 1.3× the
// physical limit with origin egress at most 1.1× the blob.

import { existsSync } from 'node:fs'
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises'
import { cpus, loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'

import { formatBytes, parseDuration, parseSize } from '@naiad/proto'
import { BINS, createToken, writeBlob } from '@naiad/testkit'

import { formatSummary, summarizeFile } from '../cpuprofile-summary.ts'
import { cpuSeconds, foreignCpu, killDescendants, machineCores, reapedChildrenCpu } from '../proc-stats.ts'
import { parseCommandLine, usageFailer } from '../report/cli.ts'
import { linePlot } from '../report/svg-plot.ts'
import { Testbed, type Node } from '../testbed/netns.ts'
import { NodeProcess, runIn } from '../testbed/processes.ts'
import { linesOf } from '../testbed/child-lines.ts'
import { median, withSignal, writeResults } from '../report/helpers.ts'

const ORIGIN_SERVER = fileURLToPath(new URL('../testbed/origin-server.ts', import.meta.url))
const RESULTS = fileURLToPath(new URL('../results/', import.meta.url))
const TCP_PIPE = fileURLToPath(new URL('../testbed/tcp-pipe.ts', import.meta.url))
const BUNDLED_DFGET = fileURLToPath(new URL('../../dist/dfget.js', import.meta.url))
/** The dfget users install (the bundle, after `npm run build`), else the TypeScript source. */
const DFGET = existsSync(BUNDLED_DFGET) ? BUNDLED_DFGET : BINS.dfget

const USAGE = `usage: node bench/scenarios/swarm-pull.ts [options]
  --quick                   N = 1,4,8 and a 64 MiB blob (unless given)
  --hosts LIST              numbers of hosts, comma-separated (default 1,4,8,16)
  --size SIZE               blob size (default 256MiB)
  --host-bandwidth MBIT     each host's link, Mbit/s in each direction (default 200)
  --registry-bandwidth MBIT the origin's uplink, Mbit/s (default 400)
  --supernode-bandwidth MBIT the supernode's link (default: the host bandwidth)
  --rtt MS                  round trip between two nodes added by the links (default 2; needs sch_netem)
  --timeout DURATION        bound on the whole scenario (default 30m)
  --dir DIR                 work directory, kept afterwards (default: a temp dir, removed)
  --profile                 at the largest N, run the supernode and the first daemon under the V8
                            profiler and print their top self-time functions during the trial
  --baseline DIR            also run the Naiad trials with another checkout (e.g. main, with its
                            node_modules), alternating with this tree's: rows "baseline"
  --runs K                  Naiad (and baseline) trials per N (default 1)
  --no-direct               leave out the direct trials (curl from the origin)
  --log-level LEVEL         log level of the supernode and the daemons (default info); with --dir, their logs are kept there
  --out PREFIX              results: PREFIX.json, PREFIX.md, PREFIX.svg (default bench/results/swarm-pull)`

const usageError = usageFailer('swarm-pull', USAGE)

const args = parseCommandLine(USAGE, usageError, () => parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    hosts: { type: 'string' },
    size: { type: 'string' },
    'host-bandwidth': { type: 'string', default: '200' },
    'registry-bandwidth': { type: 'string', default: '400' },
    'supernode-bandwidth': { type: 'string' },
    rtt: { type: 'string', default: '2' },
    timeout: { type: 'string', default: '30m' },
    dir: { type: 'string' },
    'log-level': { type: 'string', default: 'info' },
    profile: { type: 'boolean', default: false },
    baseline: { type: 'string' },
    runs: { type: 'string', default: '1' },
    'no-direct': { type: 'boolean', default: false },
    out: { type: 'string', default: join(RESULTS, 'swarm-pull') },
    help: { type: 'boolean', short: 'h', default: false }
  }
}).values)

const positive = (v: string, flag: string): number => {
  const n = Number(v)
  if (!Number.isFinite(n) || n <= 0) usageError(`${flag} must be a positive number, not ${v}`)
  return n
}
const hostCounts = (args.hosts ?? (args.quick ? '1,4,8' : '1,4,8,16')).split(',').map((s) => positive(s, '--hosts'))
if (hostCounts.some((n) => !Number.isInteger(n) || n > 200)) usageError('--hosts takes whole numbers up to 200')
let size = 0
let timeoutMs = 0
try {
  size = parseSize(args.size ?? (args.quick ? '64MiB' : '256MiB'), '--size')
  timeoutMs = parseDuration(args.timeout, '--timeout')
} catch (err) {
  usageError((err as Error).message)
}
const hostMbit = positive(args['host-bandwidth'], '--host-bandwidth')
const registryMbit = positive(args['registry-bandwidth'], '--registry-bandwidth')
const supernodeMbit = positive(args['supernode-bandwidth'] ?? args['host-bandwidth'], '--supernode-bandwidth')
const rttMs = Number(args.rtt)
if (!(rttMs >= 0)) usageError(`--rtt must be a number of ms, not ${args.rtt}`)

const interrupted = new AbortController()
for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => interrupted.abort(new Error(`interrupted by ${sig}`)))
const overall = AbortSignal.any([interrupted.signal, AbortSignal.timeout(timeoutMs)])
const log = (msg: string): void => { process.stderr.write(`${msg}\n`) }

const runs = positive(args.runs, '--runs')
if (!Number.isInteger(runs)) usageError('--runs takes a whole number')

/** The binaries of one build: this tree's, or the --baseline checkout's (its bundled dfget if built). */
interface Build { supernode: string; dfdaemon: string; dfget: string }
const THIS_BUILD: Build = { supernode: BINS.supernode, dfdaemon: BINS.dfdaemon, dfget: DFGET }
const BASELINE: Build | undefined = args.baseline === undefined
  ? undefined
  : {
    supernode: join(args.baseline, 'supernode/bin/supernode.ts'),
    dfdaemon: join(args.baseline, 'dfdaemon/bin/dfdaemon.ts'),
    dfget: existsSync(join(args.baseline, 'dist/dfget.js')) ? join(args.baseline, 'dist/dfget.js') : join(args.baseline, 'dfget/bin/dfget.ts')
  }
if (BASELINE !== undefined && !existsSync(BASELINE.dfdaemon)) usageError(`--baseline ${args.baseline}: no dfdaemon/bin/dfdaemon.ts there`)

/** Seconds the blob takes over one host link at its nominal rate: the physical limit. */
const physicalS = (size * 8) / (hostMbit * 1e6)
// A trial may take as long as the direct case at the registry's rate, with a wide margin.
const trialMs = (n: number): number => Math.ceil(Math.max(120_000, 10 * 1000 * (n * size * 8) / (registryMbit * 1e6)))



// ---------------------------------------------------------------- the origin

class Origin {
  private readonly child: ReturnType<Testbed['spawn']>
  private readonly pending: Array<(v: Record<string, unknown>) => void> = []
  readonly url: Promise<string>

  constructor(bed: Testbed, node: Node, blobPath: string, paths: string[]) {
    const child = bed.spawn(node, process.execPath, [ORIGIN_SERVER, '--listen', `${node.ip}:8080`, '--file', blobPath, ...paths.flatMap((p) => ['--path', p])], { stdio: ['pipe', 'pipe', 'pipe'] })
    this.child = child
    let stderr = ''
    child.stderr!.on('data', (d: Buffer) => { stderr += d.toString() })
    this.url = new Promise((resolve, reject) => {
      createInterface({ input: child.stdout! }).on('line', (line) => {
        const msg = JSON.parse(line) as Record<string, unknown>
        if (msg.ready === true) resolve(msg.url as string)
        else this.pending.shift()?.(msg)
      })
      child.once('exit', (code) => reject(new Error(`origin server exited with ${code}: ${stderr.trim()}`)))
    })
    this.url.catch(() => {})
  }

  /** Body bytes the origin has served for `path` so far. */
  served(path: string): Promise<number> {
    const answer = new Promise<number>((resolve) => {
      this.pending.push((msg) => resolve(((msg.served as Record<string, number>)[path]) ?? 0))
      this.child.stdin!.write('served\n')
    })
    return withSignal(answer, AbortSignal.any([overall, AbortSignal.timeout(10_000)]), 'asking the origin for its byte count')
  }

  stop(): void {
    this.child.stdin?.end()
  }
}

// ---------------------------------------------------------------- trials

export interface Trial {
  /** `baseline`: the Naiad trial run with the --baseline checkout. */
  method: 'direct' | 'naiad' | 'baseline'
  hosts: number
  /** Completion time of each host, s, from the common start to its client's exit. */
  times: number[]
  medianS: number
  maxS: number
  /** The same as the client itself measured it (curl's time_total, dfget's elapsedMs): without process start-up. */
  clientTimes: number[]
  /** Naiad: bytes each host got from peers (the supernode's seed included) and from the origin, per dfget. */
  fromPeers?: number[]
  fromOrigin?: number[]
  originEgress: number
  /** CPU seconds of the Naiad processes during the trial (daemons summed, supernode, the dfget runs). */
  cpu?: { daemons: number; supernode: number; dfget: number }
  otherCpuS: number
  stealS: number
  /** Naiad: core-seconds the whole machine sat idle between the dfget starts and the last exit, and the cores' seconds in that window. */
  idle?: { idleS: number; coreS: number }
}

const work = args.dir ?? await mkdtemp(join(tmpdir(), 'naiad-swarm-'))
await mkdir(work, { recursive: true })
const blobPath = join(work, 'blob')

async function direct(bed: Testbed, hosts: Node[], origin: Origin, url: string, path: string): Promise<Omit<Trial, 'otherCpuS' | 'stealS'>> {
  const signal = AbortSignal.any([overall, AbortSignal.timeout(trialMs(hosts.length))])
  const runs = await Promise.all(hosts.map((h) => runIn(bed, h, 'curl', ['-sS', '-f', '-o', join(work, `${h.name}.direct`), '-w', '%{size_download} %{time_total}', url], signal)))
  runs.forEach((r, i) => {
    if (r.code !== 0 || Number(r.stdout.split(' ')[0]) !== size) throw new Error(`direct: curl on ${hosts[i].name} exited with ${r.code}, ${r.stdout} bytes: ${r.stderr.trim()}`)
  })
  await Promise.all(hosts.map((h) => rm(join(work, `${h.name}.direct`), { force: true })))
  const times = runs.map((r) => r.ms / 1000)
  const clientTimes = runs.map((r) => Number(r.stdout.split(' ')[1]))
  return { method: 'direct', hosts: hosts.length, times, medianS: median(times), maxS: Math.max(...times), clientTimes, originEgress: await origin.served(path) }
}

async function naiad(bed: Testbed, sn: Node, hosts: Node[], origin: Origin, url: string, path: string, sha: string, build: Build, label: string): Promise<Omit<Trial, 'otherCpuS' | 'stealS'>> {
  const started: NodeProcess[] = []
  const dir = join(work, label)
  try {
    // The origin sits on the testbed's private network: the source policy must allow it.
    const allow = { NAIAD_SOURCE_ALLOW: new URL(url).host }
    const profiling = args.profile && hosts.length === Math.max(...hostCounts)
    const profDir = join(work, 'profiles', label)
    const prof = (name: string): Record<string, string> => profiling ? { NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --cpu-prof --cpu-prof-dir=${join(profDir, name)}`.trim() } : {}
    const supernode = new NodeProcess(bed, sn, build.supernode, ['--data-dir', join(dir, 'sn'), '--listen', `${sn.ip}:8002`, '--p2p-listen', `/ip4/${sn.ip}/tcp/8003`, '--log-level', args['log-level']], { ...allow, ...prof('supernode') })
    started.push(supernode)
    await withSignal(supernode.ready, AbortSignal.any([overall, AbortSignal.timeout(30_000)]), 'starting the supernode')
    const joinToken = await createToken(join(dir, 'sn'), 'join')
    const daemons = hosts.map((h) => new NodeProcess(bed, h, build.dfdaemon, [
      '--supernode', `http://${sn.ip}:8002`, '--data-dir', join(dir, h.name), '--api-listen', '127.0.0.1:65003', '--proxy-listen', '127.0.0.1:65001',
      '--p2p-listen', `/ip4/${h.ip}/tcp/65002`, '--log-level', args['log-level']
    ], { ...allow, NAIAD_JOIN_TOKEN: joinToken, ...(h === hosts[0] ? prof('daemon') : {}) }))
    started.push(...daemons)
    // Many daemons loading their modules at once on a shared machine can take minutes.
    await withSignal(Promise.all(daemons.map((d) => d.ready)), AbortSignal.any([overall, AbortSignal.timeout(Math.max(60_000, 10_000 * hosts.length))]), 'starting the daemons')
    const cpu0 = await Promise.all(started.map((p) => cpuSeconds(p.pid)))
    const reaped0 = await reapedChildrenCpu()
    // The machine's cores through the trial, every 100 ms: kept with the logs (--dir), for
    // swarm-timeline.ts to say when they sat idle.
    const cores = [await machineCores()]
    const sampler = setInterval(() => { machineCores().then((c) => cores.push(c), () => {}) }, 100)
    const window = { from: Number(process.hrtime.bigint() / 1000n), to: 0 }
    const signal = AbortSignal.any([overall, AbortSignal.timeout(trialMs(hosts.length))])
    const runs = await Promise.all(hosts.map((h) => runIn(bed, h, process.execPath, [
      build.dfget, url, '-O', join(dir, `${h.name}.out`), '--daemon', 'http://127.0.0.1:65003', '--digest', `sha256:${sha}`, '--no-progress', '--json'
    ], signal))).finally(() => clearInterval(sampler))
    cores.push(await machineCores())
    const cpu1 = await Promise.all(started.map((p) => cpuSeconds(p.pid)))
    window.to = Number(process.hrtime.bigint() / 1000n)
    // The dfget runs are this process's children (ip netns exec execs them), reaped by now
    // (and counted before the daemons are stopped: they are children too).
    const dfgetCpu = (await reapedChildrenCpu()) - reaped0
    if (profiling) {
      // Profiles are written as the processes exit.
      await Promise.all(started.map((p) => p.stop()))
      for (const name of ['supernode', 'daemon']) {
        const f = (await readdir(join(profDir, name))).find((n) => n.endsWith('.cpuprofile'))
        if (f !== undefined) log(formatSummary(await summarizeFile(join(profDir, name, f), { ...window, top: 30 }), `${name} at N=${hosts.length}`))
      }
    }
    runs.forEach((r, i) => {
      if (r.code !== 0) throw new Error(`naiad: dfget on ${hosts[i].name} exited with ${r.code}: ${r.stdout.trim()} ${r.stderr.trim()}\n${daemons[i].logs.slice(-10).join('\n')}`)
    })
    const times = runs.map((r) => r.ms / 1000)
    const results = runs.map((r) => JSON.parse(r.stdout.trim().split('\n').pop()!) as { elapsedMs: number; fromPeers: number; fromOrigin: number })
    const used = cpu1.map((c, i) => c - cpu0[i])
    if (args.dir !== undefined) await writeFile(join(work, `${label}-cores.jsonl`), cores.map((c) => JSON.stringify(c)).join('\n'))
    const [c0, c1] = [cores[0], cores[cores.length - 1]]
    const idle = { idleS: Math.round((c1.idleS - c0.idleS) * 100) / 100, coreS: Math.round((c1.idleS - c0.idleS + c1.busyS - c0.busyS) * 100) / 100 }
    return {
      method: build === THIS_BUILD ? 'naiad' : 'baseline',
      hosts: hosts.length,
      times,
      medianS: median(times),
      maxS: Math.max(...times),
      clientTimes: results.map((r) => r.elapsedMs / 1000),
      fromPeers: results.map((r) => r.fromPeers),
      fromOrigin: results.map((r) => r.fromOrigin),
      originEgress: await origin.served(path),
      cpu: { supernode: Math.round(used[0] * 100) / 100, daemons: Math.round(used.slice(1).reduce((a, b) => a + b, 0) * 100) / 100, dfget: Math.round(dfgetCpu * 100) / 100 },
      idle
    }
  } finally {
    await Promise.all(started.map((p) => p.stop()))
    if (args.dir !== undefined) await Promise.all(started.map((p, i) => writeFile(join(work, `${label}-${i === 0 ? 'supernode' : hosts[i - 1].name}.log`), p.logs.join('\n'))))
    await rm(dir, { recursive: true, force: true })
  }
}

// ---------------------------------------------------------------- report

const fmtS = (s: number): string => s.toFixed(2)

/** Verified TLS copies run for the reference; the median counts. */
const REFERENCE_COPIES = 3

/**
 * The reference for CPU per byte: a verified TLS copy of the blob between two hosts of the
 * testbed, over the same shaped links (TLS 1.3, the receiver hashes every byte and writes a
 * file), both ends' CPU seconds per GiB — the kernel's work on the veth and HTB path lands
 * in the sending and receiving processes, for the copy as for the daemons.
 */
async function verifiedTlsCopy(bed: Testbed, from: Node, to: Node): Promise<{ cpuPerGiB: number; receiverPerGiB: number }> {
  const signal = AbortSignal.any([overall, AbortSignal.timeout(trialMs(1))])
  const out = join(work, 'tls-copy')
  const recv = linesOf(bed.spawn(to, process.execPath, [TCP_PIPE, 'receive', '--sink', 'file', '--out', out, '--tls', '--host', to.ip]), 'tls receive', signal)
  const { port } = await recv.next()
  const send = linesOf(bed.spawn(from, process.execPath, [TCP_PIPE, 'send', '--port', String(port), '--host', to.ip, '--file', blobPath, '--tls']), 'tls send', signal)
  await recv.next() // the digest
  const r = await recv.next()
  const s = await send.next()
  await Promise.all([recv.exited, send.exited])
  await rm(out, { force: true })
  const gib = size / 2 ** 30
  return { cpuPerGiB: ((r.cpuS as number) + (s.cpuS as number)) / gib, receiverPerGiB: (r.cpuS as number) / gib }
}

/** CPU seconds of every Naiad process (daemons, supernode, dfget runs) in a trial. */
const cpuOf = (t: Trial): number => t.cpu!.daemons + t.cpu!.supernode + t.cpu!.dfget
const perGiBOf = (t: Trial): number => cpuOf(t) / (t.hosts * size / 2 ** 30)
const meanOf = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length

/** Naiad's CPU seconds per GiB delivered (every Naiad process, dfget included), at the largest N, the mean over its runs. */
function cpuGoal(trials: Trial[], reference: { cpuPerGiB: number }): { text: string; perGiB: number; ratio: number } {
  const n = Math.max(...hostCounts)
  const ts = trials.filter((x) => x.method === 'naiad' && x.hosts === n)
  const cpu = meanOf(ts.map(cpuOf))
  const perGiB = meanOf(ts.map(perGiBOf))
  const ratio = perGiB / reference.cpuPerGiB
  const over = ts.length > 1 ? ` (mean of ${ts.length} runs: ${ts.map((t) => perGiBOf(t).toFixed(2)).join(', ')})` : ''
  return { perGiB, ratio, text: `Goal: CPU per GiB delivered at N = ${n} (daemons, supernode and dfget runs: ${cpu.toFixed(1)} CPU-s for ${formatBytes(n * size)}) at most 1.5× a verified TLS copy's (sender + receiver over the same links, ${reference.cpuPerGiB.toFixed(2)} CPU-s/GiB in the same run, the median of ${REFERENCE_COPIES} copies). Measured: ${perGiB.toFixed(2)} CPU-s/GiB${over} = ${ratio.toFixed(2)}× → **${ratio <= 1.5 ? 'met' : 'not met'}**.` }
}

/** This tree against the --baseline checkout at each N: means over the runs, side by side. */
function baselineLines(trials: Trial[]): string[] {
  if (BASELINE === undefined) return []
  const rows = hostCounts.map((n) => {
    const of = (m: Trial['method']): Trial[] => trials.filter((t) => t.method === m && t.hosts === n)
    const a = of('naiad')
    const b = of('baseline')
    const cell = (ts: Trial[], f: (t: Trial) => number): string => ts.map((t) => f(t).toFixed(2)).join(', ')
    return `| ${n} | ${cell(a, (t) => t.maxS)} | ${cell(b, (t) => t.maxS)} | ${(meanOf(a.map((t) => t.maxS)) / meanOf(b.map((t) => t.maxS))).toFixed(2)} | ${cell(a, perGiBOf)} | ${cell(b, perGiBOf)} | ${(meanOf(a.map(perGiBOf)) / meanOf(b.map(perGiBOf))).toFixed(2)} |`
  })
  return [
    `This tree against the baseline (${args.baseline}), alternating, each run a fresh supernode and fresh daemons:`,
    '',
    '| hosts | max s, this tree | max s, baseline | ratio of means | CPU-s per GiB, this tree | CPU-s per GiB, baseline | ratio of means |',
    '|---:|---|---|---:|---|---|---:|',
    ...rows,
    ''
  ]
}

function goal(trials: Trial[]): { met: boolean; text: string; hosts: number; timeRatio: number; egressRatio: number } {
  const n = Math.max(...hostCounts)
  // The slowest of the runs.
  const t = trials.filter((x) => x.method === 'naiad' && x.hosts === n).sort((a, b) => b.maxS - a.maxS)[0]
  const timeRatio = t.maxS / physicalS
  const egressRatio = t.originEgress / size
  const met = timeRatio <= 1.3 && egressRatio <= 1.1
  const misses = [
    ...(timeRatio > 1.3 ? [`time ${timeRatio.toFixed(2)}× the limit, ${((timeRatio / 1.3 - 1) * 100).toFixed(0)} % over the 1.3× goal (${fmtS(t.maxS)} s against ${fmtS(1.3 * physicalS)} s)`] : []),
    ...(egressRatio > 1.1 ? [`origin egress ${egressRatio.toFixed(2)}× the blob, ${((egressRatio / 1.1 - 1) * 100).toFixed(0)} % over the 1.1× goal`] : [])
  ]
  const text = `Goal: Naiad at N = ${n} within 1.3× the physical limit (${fmtS(physicalS)} s) with origin egress ≤ 1.1× the blob. ` +
    `Measured: ${timeRatio.toFixed(2)}× the limit (max ${fmtS(t.maxS)} s), egress ${egressRatio.toFixed(2)}× the blob → **${met ? 'met' : 'not met'}**` +
    (met ? '.' : `: ${misses.join('; ')}.`)
  return { met, text, hosts: n, timeRatio, egressRatio }
}

function markdown(trials: Trial[], delayNote: string | undefined, reference: { cpuPerGiB: number }): string {
  const directMax = (n: number): number | undefined => trials.find((t) => t.method === 'direct' && t.hosts === n)?.maxS
  const vsDirect = (t: Trial): string => {
    const d = directMax(t.hosts)
    return d === undefined ? '' : (t.maxS / d).toFixed(2)
  }
  const rows = [...trials].sort((a, b) => b.maxS - a.maxS)
  const other = trials.reduce((a, t) => a + t.otherCpuS + t.stealS, 0)
  const wall = trials.reduce((a, t) => a + t.maxS, 0)
  const share = other / (wall * cpus().length)
  return [
    `## Swarm pull, ${formatBytes(size)} blob, hosts at ${hostMbit} Mbit/s, registry uplink ${registryMbit} Mbit/s, supernode ${supernodeMbit} Mbit/s, RTT ${delayNote === undefined ? `${rttMs} ms` : 'not emulated'}`,
    '',
    `Physical limit (size / host bandwidth): ${fmtS(physicalS)} s. Slowest first.`,
    '',
    '| method | hosts | median s | max s | max / limit | max as the client timed it | origin egress | egress / blob | max vs direct, same N | Naiad CPU-s (daemons + supernode + dfget) | CPU-s per GiB delivered |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
    ...rows.map((t) => `| ${t.method} | ${t.hosts} | ${fmtS(t.medianS)} | ${fmtS(t.maxS)} | ${(t.maxS / physicalS).toFixed(2)} | ${fmtS(Math.max(...t.clientTimes))} | ${formatBytes(t.originEgress)} | ${(t.originEgress / size).toFixed(2)} | ${vsDirect(t)} | ${t.cpu === undefined ? '' : `${t.cpu.daemons.toFixed(1)} + ${t.cpu.supernode.toFixed(1)} + ${t.cpu.dfget.toFixed(1)}`} | ${t.cpu === undefined ? '' : ((t.cpu.daemons + t.cpu.supernode + t.cpu.dfget) / (t.hosts * size / 2 ** 30)).toFixed(2)} |`),
    '',
    goal(trials).text,
    '',
    cpuGoal(trials, reference).text,
    '',
    ...baselineLines(trials),
    ...(delayNote === undefined ? [] : [`Note: ${delayNote}; the --rtt flag had no effect on this machine.`, '']),
    `dfget: ${DFGET}. Completion time runs from the common start to each client's exit: curl for direct, dfget (a Node process, so including its start-up) for Naiad; daemons and the supernode are started before the clock starts. "As the client timed it" leaves out process start-up (curl's time_total, dfget's elapsedMs).`,
    '',
    `${share > 0.1 ? '**Warning:** ' : ''}Other processes (and the hypervisor) took ${other.toFixed(1)} CPU-s during the trials (${(share * 100).toFixed(0)} % of ${cpus().length} cores)${share > 0.1 ? '; the machine was not idle and the times are noisy' : ''} (this count includes the kernel's softirq time, where the veth, bridge and HTB work of the testbed itself is done). Load average at the end: ${loadavg().map((l) => l.toFixed(2)).join(', ')}.`,
    ''
  ].join('\n')
}

function plot(trials: Trial[]): string {
  const series = (method: Trial['method']): Array<[number, number]> => trials.filter((t) => t.method === method).map((t) => [t.hosts, t.maxS])
  return linePlot([
    { label: 'direct (max)', color: '#d62728', points: series('direct') },
    { label: 'Naiad (max)', color: '#1f77b4', points: series('naiad') },
    ...(BASELINE === undefined ? [] : [{ label: 'baseline (max)', color: '#2ca02c', points: series('baseline') }]),
    { label: 'physical limit', color: '#555', dashed: true, points: hostCounts.map((n) => [n, physicalS]) }
  ], { title: `Swarm pull of a ${formatBytes(size)} blob, ${hostMbit} Mbit/s hosts`, xLabel: 'hosts pulling at once', yLabel: 'completion time, s (slowest host)' })
}

// ---------------------------------------------------------------- main

let bed: Testbed | undefined
let origin: Origin | undefined
let failed = false
try {
  log(`writing a ${formatBytes(size)} blob to ${blobPath}`)
  const sha = await writeBlob(blobPath, size, 'swarm-pull')
  bed = await Testbed.create({ signal: overall, log, exitOnSignal: false })
  const originNode = await bed.addNode('origin', { rateMbit: registryMbit, rttMs })
  const snNode = await bed.addNode('supernode', { rateMbit: supernodeMbit, rttMs })
  const hosts: Node[] = []
  for (let i = 0; i < Math.max(...hostCounts); i++) hosts.push(await bed.addNode(`h${i}`, { rateMbit: hostMbit, rttMs }))
  // One path per trial: the origin counts per path, and no trial can hit a cache of another.
  const pathOf = (method: string, n: number, run: number): string => `/${method}-${n}-${run}/blob`
  // Per N: direct once, then this tree and the baseline alternating, `runs` times each.
  const plan = (k: number): Array<{ method: Trial['method']; run: number }> => {
    const naiads = Array.from({ length: runs }, (_, r) => {
      const pair: Array<Trial['method']> = BASELINE === undefined ? ['naiad'] : (k + r) % 2 === 0 ? ['naiad', 'baseline'] : ['baseline', 'naiad']
      return pair.map((method) => ({ method, run: r }))
    }).flat()
    if (args['no-direct']) return naiads
    // Alternate which goes first, so neither always meets a warmer page cache.
    return k % 2 === 0 ? [{ method: 'direct', run: 0 }, ...naiads] : [...naiads, { method: 'direct', run: 0 }]
  }
  origin = new Origin(bed, originNode, blobPath, hostCounts.flatMap((n, k) => plan(k).map((p) => pathOf(p.method, n, p.run))))
  const base = await withSignal(origin.url, AbortSignal.any([overall, AbortSignal.timeout(30_000)]), 'starting the origin')

  const trials: Trial[] = []
  for (const [k, n] of hostCounts.entries()) {
    const hs = hosts.slice(0, n)
    for (const { method, run } of plan(k)) {
      const path = pathOf(method, n, run)
      const url = `${base}${path}`
      const label = `${method}-${n}-${run}`
      const { value, otherCpuS, stealS } = await foreignCpu(() => method === 'direct'
        ? direct(bed!, hs, origin!, url, path)
        : naiad(bed!, snNode, hs, origin!, url, path, sha, method === 'naiad' ? THIS_BUILD : BASELINE!, label))
      const t: Trial = { ...value, otherCpuS, stealS }
      trials.push(t)
      log(`N=${n} ${method}: median ${fmtS(t.medianS)} s, max ${fmtS(t.maxS)} s (${(t.maxS / physicalS).toFixed(2)}× the limit), origin egress ${formatBytes(t.originEgress)}${t.cpu === undefined ? '' : `, cpu-s daemons ${t.cpu.daemons} supernode ${t.cpu.supernode} dfget ${t.cpu.dfget} (${perGiBOf(t).toFixed(2)} per GiB)`}; other processes ${otherCpuS} cpu-s, stolen ${stealS}${t.idle === undefined ? '' : `; machine idle ${t.idle.idleS} of ${t.idle.coreS} core-s (${(100 * t.idle.idleS / Math.max(t.idle.coreS, 0.01)).toFixed(0)} %)`}`)
    }
  }

  // One copy of a 64 MiB blob is two short processes: their CPU per GiB moved from 10.6 to
  // 14.7 between runs on one machine, so the reference is a median of several.
  const copies: Array<Awaited<ReturnType<typeof verifiedTlsCopy>>> = []
  for (let i = 0; i < REFERENCE_COPIES; i++) copies.push(await verifiedTlsCopy(bed, hosts[0], hosts[1] ?? hosts[0]))
  copies.sort((a, b) => a.cpuPerGiB - b.cpuPerGiB)
  const reference = copies[Math.floor(copies.length / 2)]
  log(`verified TLS copy of the blob between two testbed hosts: ${reference.cpuPerGiB.toFixed(2)} CPU-s per GiB (sender + receiver; median of ${copies.map((c) => c.cpuPerGiB.toFixed(2)).join(', ')})`)
  const md = markdown(trials, bed.delayUnsupported, reference)
  process.stdout.write(`${md}\n`)
  const g = goal(trials)
  await writeResults(args.out, 'swarm-pull', {
    size,
    hostCounts,
    hostMbit,
    registryMbit,
    supernodeMbit,
    rttMs,
    rttEmulated: bed.delayUnsupported === undefined,
    rttNote: bed.delayUnsupported,
    physicalLimitS: physicalS,
    goal: g,
    cpu: { reference, ...cpuGoal(trials, reference) },
    dfget: DFGET,
    trials
  }, md)
  await writeFile(`${args.out}.svg`, plot(trials))
  log(`wrote ${args.out}.json, .md, .svg`)
} catch (err) {
  failed = true
  log(`swarm-pull: ${overall.aborted ? (overall.reason as Error).message : (err as Error).stack ?? String(err)}`)
} finally {
  origin?.stop()
  await bed?.destroy()
  await killDescendants()
  if (args.dir === undefined) await rm(work, { recursive: true, force: true })
}
process.exit(failed ? 1 : 0)
