// Piece-transfer throughput between two dfdaemons on loopback (scenario 3), against what the
// same bytes cost over plain TCP, a verified TLS copy and plain HTTP in the same run.
//
//   node bench/scenarios/piece-throughput.ts [--size 512MiB] [--runs 3] [--timeout 20m] [--profile] [--alt-bin FILE]
//
// Setup: a TestOrigin serving a blob from a temp file; two clusters, each a supernode with
// --no-seed and a daemon A warmed from the origin — one with the data channel over TLS (the
// default), one over plain TCP (piece.transport: tcp). Per run, each cluster starts a fresh
// daemon B that can only fetch from its A. Each run times, interleaved: both B downloads
// (POST to B's local API until the "done" line), one raw TCP transfer of the same file
// between two processes, a TLS 1.3 transfer whose receiver hashes and writes to a file (the
// verified TLS copy), the same over plain TCP, and one HTTP GET from the origin. B's peak
// RSS is sampled during its download. See bench/README.md.

import { copyFile, mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises'
import { cpus, tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'

import { formatBytes, parseDuration, parseSize, pieceSizeFor, type DownloadEvent } from '@naiad/proto'
import { startDaemon, startSupernode, TestOrigin, writeBlob, type DaemonHandle, type SupernodeHandle } from '@naiad/testkit'

import { formatSummary, summarizeFile, type ProfileSummary } from '../cpuprofile-summary.ts'
import { cpuDuring, foreignCpu, killDescendants, peakRss } from '../proc-stats.ts'
import { usageFailer } from '../report/cli.ts'
import { median, withSignal } from '../report/helpers.ts'
import { checkGoal, goalLine } from '../report/goals.ts'
import { childLines, type ChildLines } from '../testbed/child-lines.ts'

const TCP_PIPE = fileURLToPath(new URL('../testbed/tcp-pipe.ts', import.meta.url))
const RESULTS = fileURLToPath(new URL('../results/', import.meta.url))

const USAGE = `usage: node bench/scenarios/piece-throughput.ts [options]
  --size SIZE          blob size (default 512MiB; 256MiB for a quick run; 4GiB to watch B's RSS)
  --runs N             measurements of each transfer, interleaved (default 3; with --alt-bin an even number puts each build first as often)
  --timeout DURATION   bound on the whole benchmark (default 20m)
  --profile            after the measured runs, one more naiad transfer with daemons A and B
                       under --cpu-prof; prints their top self-time functions in that transfer
  --daemon-env K=V     environment for the daemons, e.g. NAIAD_DOWNLOAD_PER_PARENT=8 (repeatable)
  --bin FILE           dfdaemon entry point of the main pair (default: this repo's)
  --alt-bin FILE       also measure another dfdaemon build (e.g. a patched copy of the repo,
                       /tmp/exp/dfdaemon/bin/dfdaemon.ts) as its own A/B pair and supernode
  --alt-label NAME     name of that build in the table (default "alt")
  --alt-env K=V        environment for the alt daemons only (repeatable)
  --dir DIR            work directory, kept afterwards (default: a new temp dir, removed after)
  --out FILE           JSON results (default bench/results/piece-throughput.json)`

const usageError = usageFailer('piece-throughput', USAGE)

function parseOptions() {
  try {
    return parseArgs({
      options: {
        size: { type: 'string', default: '512MiB' },
        runs: { type: 'string', default: '3' },
        timeout: { type: 'string', default: '20m' },
        profile: { type: 'boolean', default: false },
        'daemon-env': { type: 'string', multiple: true, default: [] },
        bin: { type: 'string' },
        'alt-bin': { type: 'string' },
        'alt-label': { type: 'string', default: 'alt' },
        'alt-env': { type: 'string', multiple: true, default: [] },
        dir: { type: 'string' },
        out: { type: 'string', default: join(RESULTS, 'piece-throughput.json') },
        help: { type: 'boolean', short: 'h', default: false }
      }
    }).values
  } catch (err) {
    return usageError((err as Error).message)
  }
}

const args = parseOptions()
if (args.help) {
  process.stdout.write(`${USAGE}\n`)
  process.exit(0)
}

function envPairs(list: string[], flag: string): Record<string, string> {
  return Object.fromEntries(list.map((kv) => {
    const i = kv.indexOf('=')
    if (i <= 0) usageError(`${flag} takes KEY=VALUE, not ${kv}`)
    return [kv.slice(0, i), kv.slice(i + 1)]
  }))
}

function parsed<T>(fn: () => T): T {
  try {
    return fn()
  } catch (err) {
    return usageError((err as Error).message)
  }
}

const size = parsed(() => parseSize(args.size, '--size'))
const runs = Number(args.runs)
if (!Number.isInteger(runs) || runs < 1) usageError(`--runs must be a positive integer, not ${args.runs}`)
const daemonEnv = envPairs(args['daemon-env'], '--daemon-env')
const altEnv = { ...daemonEnv, ...envPairs(args['alt-env'], '--alt-env') }
// The whole benchmark, and each step (a transfer at no less than 20 MB/s), are bounded;
// Ctrl-C stops it the same way, without leaving daemons behind.
const interrupted = new AbortController()
for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => interrupted.abort(new Error(`interrupted by ${sig}`)))
const overall = AbortSignal.any([interrupted.signal, AbortSignal.timeout(parsed(() => parseDuration(args.timeout, '--timeout')))])
const transferMs = Math.max(60_000, Math.ceil((size / 20e6) * 1000))
const step = (ms = transferMs): AbortSignal => AbortSignal.any([overall, AbortSignal.timeout(ms)])
const log = (msg: string): void => { process.stderr.write(`${msg}\n`) }

// ---------------------------------------------------------------- helpers

const mbps = (bytes: number, ms: number): number => bytes / 1e6 / (ms / 1000)


/** Microseconds of the monotonic clock, the one V8 stamps .cpuprofile samples with. */
const nowUs = (): number => Number(process.hrtime.bigint() / 1000n)


/** A tcp-pipe.ts role in a child process; `next` yields the JSON lines it prints. */
const role = (roleArgs: string[], signal: AbortSignal): ChildLines => childLines(TCP_PIPE, roleArgs, signal)

/** When pieces landed, seen from the progress lines of a download (at most one per 200 ms). */
interface Timeline {
  /** First progress line with bytes. */
  firstMs: number
  /** Last progress line; between it and "done" B verifies the content and reports. */
  lastMs: number
  /** Longest wait between progress lines, i.e. without a piece landing. */
  maxGapMs: number
}

/** POSTs a download to a daemon's local API and reads the NDJSON answer to its last line. */
async function apiDownload(apiUrl: string, url: string, signal: AbortSignal): Promise<{ ms: number; last: DownloadEvent; timeline: Timeline }> {
  const t0 = performance.now()
  const res = await fetch(`${apiUrl}/api/v1/downloads`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ url }),
    signal
  })
  if (!res.ok || res.body === null) throw new Error(`POST ${apiUrl}/api/v1/downloads answered ${res.status}: ${await res.text()}`)
  const timeline: Timeline = { firstMs: -1, lastMs: -1, maxGapMs: 0 }
  let last: DownloadEvent | undefined
  let pending = ''
  for await (const chunk of res.body.pipeThrough(new TextDecoderStream())) {
    pending += chunk
    const lines = pending.split('\n')
    pending = lines.pop()!
    for (const line of lines.filter((l) => l !== '')) {
      last = JSON.parse(line) as DownloadEvent
      if (last.event !== 'progress' || last.completedBytes === 0) continue
      const now = performance.now() - t0
      if (timeline.firstMs < 0) timeline.firstMs = now
      else timeline.maxGapMs = Math.max(timeline.maxGapMs, now - timeline.lastMs)
      timeline.lastMs = now
    }
  }
  if (pending.trim() !== '') last = JSON.parse(pending) as DownloadEvent
  if (last === undefined) throw new Error(`POST ${apiUrl}/api/v1/downloads answered nothing`)
  return { ms: performance.now() - t0, last, timeline }
}

// ---------------------------------------------------------------- the transfers

interface Sample {
  ms: number
  mbps: number
  /** CPU seconds per process during the transfer. */
  cpu: Record<string, number>
  /** CPU seconds used meanwhile by processes that are not part of the benchmark. */
  otherCpuS?: number
  /** CPU seconds the hypervisor stole meanwhile. */
  stealS?: number
  timeline?: Timeline
  /** Daemon B's largest resident set during its download, MiB. */
  rssMiB?: number
}

const work = resolve(args.dir ?? await mkdtemp(join(tmpdir(), 'naiad-bench-')))
await mkdir(work, { recursive: true })
const blobPath = join(work, 'blob')
const origin = new TestOrigin()
let blobSha = ''
let blobUrl = ''

/**
 * The output of the last transfer that wrote one (a daemon B's data dir, a copy's file): it
 * is deleted just before the next transfer that writes starts, not when its own ends. Pages
 * the guest has not used lately cost a VM several times more to write into than pages just
 * freed (page cache for 512 MiB: about 1 s of kernel CPU against 0.1 s on this one, see
 * bench/README.md), so a transfer that ran right after another's output was deleted had an
 * edge its neighbours did not. This way every transfer that writes starts with one blob's
 * worth of just-freed pages (the first with the warm-up file's).
 */
let lastOutput: string | undefined

async function freeLastOutput(): Promise<void> {
  if (lastOutput === undefined) return
  await rm(lastOutput, { recursive: true, force: true })
  lastOutput = undefined
}

async function rawTcp(sink: 'count' | 'file', tls = false): Promise<Sample> {
  if (sink === 'file') await freeLastOutput()
  const signal = step()
  const out = join(work, 'tcp-out')
  const t = tls ? ['--tls'] : []
  const recv = role(['receive', '--sink', sink, ...(sink === 'file' ? ['--out', out] : []), ...t], signal)
  const { port } = await recv.next()
  const send = role(['send', '--port', String(port), '--file', blobPath, ...t], signal)
  const sha = sink === 'file' ? (await recv.next()).sha256 : blobSha
  const r = await recv.next()
  const sent = await send.next()
  await Promise.all([recv.exited, send.exited])
  if (r.bytes !== size || sha !== blobSha) throw new Error(`raw TCP (${sink}) moved ${String(r.bytes)} bytes with sha256 ${String(sha)}, expected ${size} and ${blobSha}`)
  if (sink === 'file') lastOutput = out
  const ms = r.ms as number
  return { ms, mbps: mbps(size, ms), cpu: { receiver: r.cpuS as number, sender: sent.cpuS as number } }
}

async function httpOrigin(): Promise<Sample> {
  const get = role(['http-get', '--url', blobUrl], step())
  const r = await get.next()
  await get.exited
  if (r.bytes !== size) throw new Error(`HTTP GET moved ${String(r.bytes)} bytes, expected ${size}`)
  const ms = r.ms as number
  return { ms, mbps: mbps(size, ms), cpu: { receiver: r.cpuS as number } }
}

/** A supernode without a seed and a daemon A that fetched the blob from the origin. */
class Cluster {
  readonly name: string
  private readonly bin: string | undefined
  private readonly env: Record<string, string>
  private supernode: SupernodeHandle | undefined
  private a: DaemonHandle | undefined
  private readonly daemons = new Set<DaemonHandle>()

  constructor(name: string, bin: string | undefined, env: Record<string, string>) {
    this.name = name
    this.bin = bin
    this.env = env
  }

  private dir(sub: string): string {
    return join(work, this.name, sub)
  }

  async start(): Promise<void> {
    this.supernode = await withSignal(startSupernode(this.dir('sn'), { args: ['--no-seed'] }), step(30_000), `starting the ${this.name} supernode`)
    this.a = await this.startDaemon('a')
    const warm = await apiDownload(this.a.apiUrl, blobUrl, step())
    if (warm.last.event !== 'done' || warm.last.fromOrigin !== size || warm.last.sha256 !== blobSha) {
      throw new Error(`${this.name} daemon A did not fetch the blob from the origin: ${JSON.stringify(warm.last)}`)
    }
    log(`${this.name}: daemon A warm in ${(warm.ms / 1000).toFixed(1)} s (${mbps(size, warm.ms).toFixed(0)} MB/s from the origin)`)
  }

  private async startDaemon(sub: string, env: Record<string, string> = {}): Promise<DaemonHandle> {
    const d = await withSignal(startDaemon(this.dir(sub), this.supernode!.url, { bin: this.bin, env: { ...this.env, ...env } }), step(30_000), `starting ${this.name} daemon ${sub}`)
    this.daemons.add(d)
    return d
  }

  private async stopDaemon(d: DaemonHandle): Promise<void> {
    this.daemons.delete(d)
    await d.process.stop()
  }

  /** One download by a fresh daemon B, which can only get the blob from daemon A. */
  async transfer(sub: string, env: Record<string, string> = {}): Promise<Sample & { t0Us: number; t1Us: number }> {
    await freeLastOutput()
    const b = await this.startDaemon(sub, env)
    try {
      const pids = { A: this.a!.process.pid, B: b.process.pid, supernode: this.supernode!.process.pid }
      let t0Us = 0
      let t1Us = 0
      const { value: { value: { ms, last, timeline }, cpu }, peakMiB } = await peakRss(b.process.pid, () => cpuDuring(pids, async () => {
        t0Us = nowUs()
        const r = await apiDownload(b.apiUrl, blobUrl, step())
        t1Us = nowUs()
        return r
      }))
      if (last.event !== 'done') throw new Error(`${this.name} daemon B failed: ${JSON.stringify(last)}`)
      // Anything from the origin means B did not (only) use A, and the number would mean nothing.
      if (last.fromPeers !== size || last.fromOrigin !== 0 || last.sha256 !== blobSha || last.cached) {
        throw new Error(`${this.name} daemon B did not get the whole blob from daemon A: ${JSON.stringify(last)}`)
      }
      return { ms, mbps: mbps(size, ms), cpu, timeline, t0Us, t1Us, rssMiB: peakMiB }
    } finally {
      // B leaves the scheduler on SIGTERM, so the next B has A as its only parent.
      await this.stopDaemon(b)
      lastOutput = this.dir(sub)
    }
  }

  /**
   * One transfer with A and B under the V8 profiler, summarized over the transfer's window.
   * A restarts on its warm store; asking it for the blob again re-announces its copy.
   */
  async profile(): Promise<{ ms: number; mbps: number; A: ProfileSummary; B: ProfileSummary }> {
    const dirs = { A: join(work, 'prof-a'), B: join(work, 'prof-b') }
    const env = (dir: string): Record<string, string> => ({ NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --cpu-prof --cpu-prof-dir=${dir}`.trim() })
    await this.stopDaemon(this.a!)
    this.a = await this.startDaemon('a', env(dirs.A))
    const again = await apiDownload(this.a.apiUrl, blobUrl, step())
    if (again.last.event !== 'done' || !again.last.cached) throw new Error(`daemon A lost its copy: ${JSON.stringify(again.last)}`)
    await new Promise((r) => setTimeout(r, 500))
    const r = await this.transfer('b-prof', env(dirs.B))
    // Profiles are written when the process exits.
    await this.stopDaemon(this.a)
    const find = async (dir: string): Promise<string> => {
      const f = (await readdir(dir)).find((n) => n.endsWith('.cpuprofile'))
      if (f === undefined) throw new Error(`no .cpuprofile in ${dir}: did the daemon exit cleanly?`)
      return join(dir, f)
    }
    const window = { from: r.t0Us, to: r.t1Us, top: 25 }
    const [A, B] = await Promise.all([summarizeFile(await find(dirs.A), window), summarizeFile(await find(dirs.B), window)])
    return { ms: r.ms, mbps: r.mbps, A, B }
  }

  async stop(): Promise<void> {
    for (const d of this.daemons) await d.process.stop().catch(() => {})
    this.daemons.clear()
    await this.supernode?.process.stop().catch(() => {})
  }

  lastLogs(): string {
    return [...this.daemons].map((d) => `--- ${this.name} daemon ${d.peerId}:\n${d.process.logs.slice(-10).join('\n')}`).join('\n')
  }
}

// ---------------------------------------------------------------- report

function foreignLoadNote(samples: Record<string, Sample[]>): string {
  const all = Object.values(samples).flat()
  const other = all.reduce((a, s) => a + (s.otherCpuS ?? 0) + (s.stealS ?? 0), 0)
  const wall = all.reduce((a, s) => a + s.ms / 1000, 0)
  const share = other / (wall * cpus().length)
  const note = `Other processes (and the hypervisor) took ${other.toFixed(1)} CPU-s while the transfers ran (${(share * 100).toFixed(0)}% of ${cpus().length} cores).`
  return share > 0.1 ? `**Warning:** ${note} The machine was not idle; the numbers are noisy.` : note
}

function report(samples: Record<string, Sample[]>, rows: Array<[string, string, string]>): string {
  const med = (name: string): number => median(samples[name].map((s) => s.mbps))
  // On a busy machine the best run is the one least disturbed by other processes.
  const best = (name: string): number => Math.max(...samples[name].map((s) => s.mbps))
  const cpuMed = (name: string, k: string): string => median(samples[name].map((s) => s.cpu[k] ?? 0)).toFixed(2)
  const perGiB = (name: string, k: string): string => (median(samples[name].map((s) => s.cpu[k] ?? 0)) / (size / 2 ** 30)).toFixed(2)
  const raw = med('raw-tcp')
  const tls = med('tls+sha256+file')
  const naiadRows = rows.filter(([, name]) => name.startsWith('naiad'))
  return [
    `## Piece throughput, ${formatBytes(size)} blob (${formatBytes(pieceSizeFor(size))} pieces), median of ${runs}`,
    '',
    '| transfer | median MB/s | best MB/s | runs MB/s | median vs raw TCP | median vs verified TLS copy | note |',
    '|---|---:|---:|---|---:|---:|---|',
    ...rows.map(([label, name, note]) => `| ${label} | ${med(name).toFixed(0)} | ${best(name).toFixed(0)} | ${samples[name].map((s) => s.mbps.toFixed(0)).join(', ')} | ${(med(name) / raw).toFixed(2)} | ${(med(name) / tls).toFixed(2)} | ${note} |`),
    '',
    ...naiadRows.flatMap(([label, name]) => [
      `${label}: ${goalLine(checkGoal('throughput / raw TCP (issue 10)', med(name) / raw, 'at least', 0.5))}`,
      `${label}: ${goalLine(checkGoal('throughput / SHA-256-verified node:tls copy (issue 10)', med(name) / tls, 'at least', 0.9))}`
    ]),
    '',
    'Receiver CPU (median, seconds per transfer; per GiB in brackets):',
    ...naiadRows.map(([, name]) => `- ${name}: B ${cpuMed(name, 'B')} (${perGiB(name, 'B')}/GiB), A ${cpuMed(name, 'A')} (${perGiB(name, 'A')}/GiB), supernode ${cpuMed(name, 'supernode')}`),
    `- verified TLS copy: receiver ${cpuMed('tls+sha256+file', 'receiver')} (${perGiB('tls+sha256+file', 'receiver')}/GiB), sender ${cpuMed('tls+sha256+file', 'sender')}`,
    `- raw TCP: receiver ${cpuMed('raw-tcp', 'receiver')} (${perGiB('raw-tcp', 'receiver')}/GiB), sender ${cpuMed('raw-tcp', 'sender')}; with sha256 + file: receiver ${cpuMed('raw-tcp+sha256+file', 'receiver')}`,
    '',
    'Daemon B peak RSS during its download (MiB, max over runs): ' + naiadRows.map(([, name]) => `${name} ${Math.max(...samples[name].map((s) => s.rssMiB ?? 0)).toFixed(0)}`).join(', ') +
      (size >= 4 * 2 ** 30 ? `; ${goalLine(checkGoal('daemon RSS while moving 4 GiB (issue 10)', Math.max(...naiadRows.flatMap(([, n]) => samples[n].map((s) => s.rssMiB ?? 0))), 'at most', 300))}` : ''),
    '',
    foreignLoadNote(samples),
    ''
  ].join('\n')
}

// ---------------------------------------------------------------- main

const clusters: Cluster[] = []
const stopAll = async (): Promise<void> => {
  for (const c of clusters) await c.stop()
  await origin.stop().catch(() => {})
}
// Every wait below listens to `overall`, so the main flow unwinds through its finally; this
// is the backstop should something not let go.
const stopOnAbort = (): void => {
  log(interrupted.signal.aborted ? 'interrupted; stopping' : `timed out after ${args.timeout}; stopping`)
  setTimeout(() => { stopAll().then(killDescendants).finally(() => process.exit(1)) }, 20_000).unref()
}
overall.addEventListener('abort', stopOnAbort, { once: true })

let failed = false
try {
  log(`writing a ${formatBytes(size)} blob to ${blobPath}`)
  blobSha = await writeBlob(blobPath, size, 'piece-throughput')
  await origin.start()
  origin.files.set('/blob', { path: blobPath })
  blobUrl = `${origin.url}/blob`

  const rows: Array<[string, string, string]> = [
    ['raw TCP, receiver counts bytes', 'raw-tcp', 'the transport ceiling'],
    ['node:tls (TLS 1.3), receiver hashes + writes a file', 'tls+sha256+file', 'the verified TLS copy: same encryption, verification and disk write'],
    ['raw TCP, receiver hashes + writes a file', 'raw-tcp+sha256+file', 'plain copy with the same verification and disk write'],
    ['HTTP GET from the origin, receiver counts', 'http-origin', 'what a client of the origin gets'],
    [`naiad: daemon B from daemon A, TLS data channel${args.bin === undefined ? '' : ` (${args.bin})`}`, 'naiad', 'POST to B until "done" (pieces verified as they arrive)'],
    ['naiad: the same, plain TCP data channel', 'naiad:tcp', 'piece.transport: tcp on both daemons']
  ]
  const order: Array<[string, (i: number) => Promise<Sample>]> = [
    ['raw-tcp', () => rawTcp('count')],
    ['tls+sha256+file', () => rawTcp('file', true)],
    ['raw-tcp+sha256+file', () => rawTcp('file')],
    ['http-origin', httpOrigin]
  ]
  const main = new Cluster('naiad', args.bin === undefined ? undefined : resolve(args.bin), daemonEnv)
  clusters.push(main)
  await main.start()
  const plain = new Cluster('naiad:tcp', args.bin === undefined ? undefined : resolve(args.bin), { ...daemonEnv, NAIAD_PIECE_TRANSPORT: 'tcp' })
  clusters.push(plain)
  await plain.start()
  order.unshift(['naiad', (i) => main.transfer(`b-${i}`)], ['naiad:tcp', (i) => plain.transfer(`b-${i}`)])
  if (args['alt-bin'] !== undefined) {
    const name = `naiad:${args['alt-label']}`
    const alt = new Cluster(name, resolve(args['alt-bin']), altEnv)
    clusters.push(alt)
    await alt.start()
    order.splice(1, 0, [name, (i) => alt.transfer(`b-${i}`)])
    rows.push([`${name}: ${args['alt-bin']}`, name, 'the same, other build'])
  }

  const samples: Record<string, Sample[]> = Object.fromEntries(order.map(([name]) => [name, []]))
  // The first transfer that writes starts with freed pages too (see lastOutput).
  lastOutput = join(work, 'warm-up')
  await copyFile(blobPath, lastOutput)
  for (let i = 0; i < runs; i++) {
    // Rotating the order keeps page cache and CPU frequency effects from favouring one row.
    // The other build trades places with the main one every other round: whichever ran second
    // of the two moved up to 1.5x the bytes of the same build run first (bench/README.md), so
    // with a fixed pair order the comparison measured the position.
    const round = order.map((_, k) => order[(k + i) % order.length])
    if (i % 2 === 1) {
      const a = round.findIndex(([name]) => name === 'naiad')
      const b = round.findIndex(([name]) => name.startsWith('naiad:') && name !== 'naiad:tcp')
      if (a >= 0 && b >= 0) [round[a], round[b]] = [round[b], round[a]]
    }
    for (const [name, fn] of round) {
      const { value: s, otherCpuS, stealS } = await foreignCpu(() => fn(i))
      Object.assign(s, { otherCpuS, stealS })
      samples[name].push(s)
      const tl = s.timeline === undefined ? '' : `, pieces from ${(s.timeline.firstMs / 1000).toFixed(2)} to ${(s.timeline.lastMs / 1000).toFixed(2)} s, longest gap ${s.timeline.maxGapMs.toFixed(0)} ms`
      log(`run ${i + 1}/${runs} ${name}: ${s.mbps.toFixed(0)} MB/s (${(s.ms / 1000).toFixed(2)} s${tl}; cpu-s ${JSON.stringify(s.cpu)}, other processes ${otherCpuS}, stolen ${stealS})`)
    }
  }
  const markdown = report(samples, rows)
  process.stdout.write(`${markdown}\n`)

  let profile: Awaited<ReturnType<Cluster['profile']>> | undefined
  if (args.profile) {
    log('profiling one more naiad transfer')
    profile = await main.profile()
    process.stdout.write(`## CPU profile of one naiad transfer (${profile.mbps.toFixed(0)} MB/s under the profiler, ${Math.round(profile.ms)} ms)\n\n`)
    process.stdout.write(`${formatSummary(profile.B, 'daemon B (downloader)')}\n${formatSummary(profile.A, 'daemon A (uploader)')}\n`)
  }

  const med = (name: string): number => median(samples[name].map((s) => s.mbps))
  const result = {
    benchmark: 'piece-throughput',
    date: new Date().toISOString(),
    node: process.version,
    cpus: cpus().length,
    cpuModel: cpus()[0]?.model,
    size,
    pieceSize: pieceSizeFor(size),
    runs,
    daemonEnv,
    bin: args.bin,
    altBin: args['alt-bin'],
    altEnv: args['alt-bin'] === undefined ? undefined : altEnv,
    medianMBps: Object.fromEntries(Object.keys(samples).map((n) => [n, Math.round(med(n))])),
    bestMBps: Object.fromEntries(Object.keys(samples).map((n) => [n, Math.round(Math.max(...samples[n].map((s) => s.mbps)))])),
    ratios: Object.fromEntries(Object.keys(samples).filter((n) => n.startsWith('naiad')).map((n) => [n, {
      vsRawTcp: med(n) / med('raw-tcp'),
      vsVerifiedTls: med(n) / med('tls+sha256+file'),
      vsRawTcpSha256File: med(n) / med('raw-tcp+sha256+file'),
      vsHttp: med(n) / med('http-origin')
    }])),
    samples,
    profile
  }
  await mkdir(join(args.out, '..'), { recursive: true })
  await writeFile(args.out, `${JSON.stringify(result, null, 2)}\n`)
  await writeFile(args.out.replace(/\.json$/, '') + '.md', `${markdown}\n`)
  log(`wrote ${args.out}`)
} catch (err) {
  failed = true
  log(`piece-throughput: ${overall.aborted ? (overall.reason as Error).message : (err as Error).stack ?? String(err)}`)
  if (!overall.aborted) for (const c of clusters) log(c.lastLogs())
} finally {
  overall.removeEventListener('abort', stopOnAbort)
  await stopAll()
  await killDescendants()
  if (args.dir === undefined) await rm(work, { recursive: true, force: true })
}
process.exit(failed ? 1 : 0)
