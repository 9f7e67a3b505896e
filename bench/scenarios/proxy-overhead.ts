// Scenario 2 of the benchmark issue: what dfdaemon's registry mirror costs on one host. A
// blob in a real docker-registry on loopback is fetched, in the same run and interleaved:
// directly from the registry; through a freshly started dfdaemon's mirror with nothing
// cached anywhere (cold); through the same daemon again (warm); and raw loopback TCP of the
// same bytes as the ceiling.
//
//   node bench/scenarios/proxy-overhead.ts [--quick] [--size 1GiB] [--runs 3]
//
// Goals (issue 5): cold time at most 1.15× the direct time; warm throughput at least 60 % of
// raw loopback TCP. See bench/README.md for exactly what "cold" includes.

import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'

import { formatBytes, parseDuration, parseSize } from '@naiad/proto'
import { BINS, createToken, metric, NaiadProcess, pushBlobFile, startDaemon, startRegistry, TEST_SOURCE_ALLOW, writeBlob, type DaemonHandle, type RegistryHandle } from '@naiad/testkit'

import { formatSummary, summarizeFile, type ProfileSummary } from '../cpuprofile-summary.ts'

import { cpuSeconds, foreignCpu, killDescendants, threadCpuSeconds } from '../proc-stats.ts'
import { parseCommandLine, usageFailer } from '../report/cli.ts'
import { checkGoal, goalLine, machineNote, mbps, table } from '../report/goals.ts'
import { median, withSignal, writeResults } from '../report/helpers.ts'
import { childLines } from '../testbed/child-lines.ts'

const TCP_PIPE = fileURLToPath(new URL('../testbed/tcp-pipe.ts', import.meta.url))
const RESULTS = fileURLToPath(new URL('../results/', import.meta.url))
const REPO = 'bench/proxy-overhead'

const USAGE = `usage: node bench/scenarios/proxy-overhead.ts [options]
  --quick              a 256 MiB blob and 1 run (unless given)
  --size SIZE          blob size (default 1GiB)
  --runs N             measurements of each row, interleaved (default 3)
  --profile            after the measured runs, one more cold + warm pair with the daemon and the
                       supernode under --cpu-prof; prints their top self-time functions per phase
  --timeline DIR       supernode and daemon at debug level; their logs (the per-piece timeline of
                       each cold pull: bench/README.md) go to DIR/<run>-<process>.log
  --timeout DURATION   bound on the whole scenario (default 20m)
  --dir DIR            work directory, kept afterwards (default: a temp dir, removed)
  --out PREFIX         results: PREFIX.json, PREFIX.md (default bench/results/proxy-overhead)`

const usageError = usageFailer('proxy-overhead', USAGE)

const args = parseCommandLine(USAGE, usageError, () => parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    size: { type: 'string' },
    runs: { type: 'string' },
    profile: { type: 'boolean', default: false },
    timeline: { type: 'string' },
    timeout: { type: 'string', default: '20m' },
    dir: { type: 'string' },
    out: { type: 'string', default: join(RESULTS, 'proxy-overhead') },
    help: { type: 'boolean', short: 'h', default: false }
  }
}).values)

let size = 0
let timeoutMs = 0
try {
  size = parseSize(args.size ?? (args.quick ? '256MiB' : '1GiB'), '--size')
  timeoutMs = parseDuration(args.timeout, '--timeout')
} catch (err) {
  usageError((err as Error).message)
}
const runs = Number(args.runs ?? (args.quick ? '1' : '3'))
if (!Number.isInteger(runs) || runs < 1 || runs > 20) usageError(`--runs must be a whole number from 1 to 20, not ${args.runs}`)

const interrupted = new AbortController()
for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => interrupted.abort(new Error(`interrupted by ${sig}`)))
const overall = AbortSignal.any([interrupted.signal, AbortSignal.timeout(timeoutMs)])
// One transfer at no less than 10 MB/s, with a floor for start-up.
const step = (): AbortSignal => AbortSignal.any([overall, AbortSignal.timeout(Math.round(Math.max(90_000, (size / 10e6) * 1000)))])
const log = (msg: string): void => { process.stderr.write(`${msg}\n`) }

type Row = 'direct' | 'naiad-cold' | 'naiad-warm' | 'raw-tcp'

interface Sample {
  row: Row
  run: number
  ms: number
  mbps: number
  /** CPU seconds per process during the transfer (client, daemon, supernode, registry). */
  cpu: Record<string, number>
  /** Cold only: the daemon's verified bytes by source after the transfer (its metrics). */
  daemonBytes?: { origin: number; peer: number }
  otherCpuS: number
  stealS: number
}

const work = args.dir ?? await mkdtemp(join(tmpdir(), 'naiad-proxy-'))
await mkdir(work, { recursive: true })
const blobPath = join(work, 'blob')

/** A GET in a child process (tcp-pipe.ts http-get): counts the body, times request to last byte. */
async function httpGet(url: string, pids: Record<string, number>, mainThreads: Record<string, number> = {}): Promise<{ ms: number; cpu: Record<string, number> }> {
  const read = (): Promise<number[]> => Promise.all([...Object.values(pids).map(cpuSeconds), ...Object.values(mainThreads).map((p) => threadCpuSeconds(p))])
  const cpu0 = await read()
  const get = childLines(TCP_PIPE, ['http-get', '--url', url], step())
  const r = await get.next()
  await get.exited
  const cpu1 = await read()
  if (r.bytes !== size) throw new Error(`GET ${url} got ${String(r.bytes)} bytes, expected ${size}`)
  const cpu: Record<string, number> = { client: r.cpuS as number }
  ;[...Object.keys(pids), ...Object.keys(mainThreads)].forEach((k, i) => { cpu[k] = Math.round((cpu1[i] - cpu0[i]) * 100) / 100 })
  return { ms: r.ms as number, cpu }
}

async function rawTcp(): Promise<{ ms: number; cpu: Record<string, number> }> {
  const signal = step()
  const recv = childLines(TCP_PIPE, ['receive', '--sink', 'count'], signal)
  const { port } = await recv.next()
  const send = childLines(TCP_PIPE, ['send', '--port', String(port), '--file', blobPath], signal)
  const r = await recv.next()
  const sent = await send.next()
  await Promise.all([recv.exited, send.exited])
  if (r.bytes !== size) throw new Error(`raw TCP moved ${String(r.bytes)} bytes, expected ${size}`)
  return { ms: r.ms as number, cpu: { receiver: r.cpuS as number, sender: sent.cpuS as number } }
}

/** Microseconds of the monotonic clock, the one V8 stamps .cpuprofile samples with. */
const nowUs = (): number => Number(process.hrtime.bigint() / 1000n)

interface Windows { coldUs: [number, number]; warmUs: [number, number] }

/**
 * A fresh supernode (seed peer on, as installed) and daemon; cold GET, then warm GET. With
 * `profileDir` both run under --cpu-prof (profiles land there when they exit).
 */
async function naiad(registry: RegistryHandle, blobUrlPath: string, run: number, profileDir?: string, windows?: Windows): Promise<Array<Omit<Sample, 'otherCpuS' | 'stealS'>>> {
  const dir = join(work, `naiad-${run}`)
  const env = (name: string): Record<string, string> => profileDir === undefined ? {} : { NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --cpu-prof --cpu-prof-dir=${join(profileDir, name)}`.trim() }
  let sn: NaiadProcess | undefined
  let d: DaemonHandle | undefined
  try {
    // As testkit's startSupernode, with the environment for the profiler.
    const level = args.timeline === undefined ? 'info' : 'debug'
    sn = new NaiadProcess(BINS.supernode, ['--data-dir', join(dir, 'sn'), '--listen', '127.0.0.1:0', '--p2p-listen', '/ip4/127.0.0.1/tcp/0', '--log-level', level], { NAIAD_SOURCE_ALLOW: TEST_SOURCE_ALLOW, ...env('supernode') })
    const snUrl = String((await withSignal(sn.ready, overall, 'starting the supernode')).http)
    const joinToken = await createToken(join(dir, 'sn'), 'join')
    d = await withSignal(startDaemon(join(dir, 'daemon'), snUrl, { args: ['--insecure-registry', registry.host, '--default-registry', registry.url, '--log-level', level], env: env('daemon'), joinToken }), overall, 'starting the daemon')
    const pids = { daemon: d.process.pid, supernode: sn.pid, registry: registry.process.pid! }
    const url = `${d.proxyUrl}${blobUrlPath}`
    const c0 = nowUs()
    const coldAt = Date.now()
    // The supernode's main thread too: the seed's pace is set by it, not by its other threads.
    const cold = await httpGet(url, pids, { 'supernode main thread': sn.pid })
    if (windows !== undefined) windows.coldUs = [c0, nowUs()]
    if (args.timeline !== undefined) {
      await mkdir(args.timeline, { recursive: true })
      await writeFile(join(args.timeline, `${run}-cold.json`), JSON.stringify({ startMs: coldAt, endMs: Date.now() }))
    }
    const daemonBytes = {
      origin: await metric(d.apiUrl, 'naiad_download_bytes_total', { source: 'origin' }),
      peer: await metric(d.apiUrl, 'naiad_download_bytes_total', { source: 'peer' })
    }
    if (daemonBytes.origin + daemonBytes.peer !== size) throw new Error(`the cold daemon stored ${daemonBytes.origin + daemonBytes.peer} bytes, expected ${size}: was the blob cached?`)
    const w0 = nowUs()
    const warm = await httpGet(url, pids)
    if (windows !== undefined) windows.warmUs = [w0, nowUs()]
    const after = await metric(d.apiUrl, 'naiad_download_bytes_total')
    if (after !== size) throw new Error(`the warm GET made the daemon fetch ${after - size} more bytes: it was not served from its cache`)
    return [
      { row: 'naiad-cold', run, ms: cold.ms, mbps: mbps(size, cold.ms), cpu: cold.cpu, daemonBytes },
      { row: 'naiad-warm', run, ms: warm.ms, mbps: mbps(size, warm.ms), cpu: warm.cpu }
    ]
  } finally {
    await d?.process.stop()
    await sn?.stop()
    if (args.timeline !== undefined) {
      await mkdir(args.timeline, { recursive: true })
      if (sn !== undefined) await writeFile(join(args.timeline, `${run}-supernode.log`), sn.logs.join('\n'))
      if (d !== undefined) await writeFile(join(args.timeline, `${run}-daemon.log`), d.process.logs.join('\n'))
    }
    await rm(dir, { recursive: true, force: true })
  }
}

// ---------------------------------------------------------------- report

const ROW_TEXT: Record<Row, string> = {
  direct: 'direct from the registry',
  'naiad-cold': 'through dfdaemon, cold',
  'naiad-warm': 'through dfdaemon, warm',
  'raw-tcp': 'raw loopback TCP'
}

function summarize(samples: Sample[]): Record<Row, { medianMs: number; bestMs: number; medianMbps: number; cpu: Record<string, number> }> {
  const out = {} as Record<Row, { medianMs: number; bestMs: number; medianMbps: number; cpu: Record<string, number> }>
  for (const row of Object.keys(ROW_TEXT) as Row[]) {
    const s = samples.filter((x) => x.row === row)
    const cpuKeys = [...new Set(s.flatMap((x) => Object.keys(x.cpu)))]
    out[row] = {
      medianMs: median(s.map((x) => x.ms)),
      bestMs: Math.min(...s.map((x) => x.ms)),
      medianMbps: mbps(size, median(s.map((x) => x.ms))),
      cpu: Object.fromEntries(cpuKeys.map((k) => [k, Math.round(median(s.map((x) => x.cpu[k] ?? 0)) * 100) / 100]))
    }
  }
  return out
}

function goals(samples: Sample[]): ReturnType<typeof checkGoal>[] {
  const m = summarize(samples)
  return [
    checkGoal('cold time / direct time (medians)', m['naiad-cold'].medianMs / m.direct.medianMs, 'at most', 1.15),
    checkGoal('warm throughput / raw loopback TCP throughput (medians)', m['naiad-warm'].medianMbps / m['raw-tcp'].medianMbps, 'at least', 0.6)
  ]
}

function markdown(samples: Sample[]): string {
  const m = summarize(samples)
  const rows = (Object.keys(ROW_TEXT) as Row[]).sort((a, b) => m[b].medianMs - m[a].medianMs)
  const cold = samples.filter((s) => s.row === 'naiad-cold')
  const other = samples.reduce((a, s) => a + s.otherCpuS + s.stealS, 0)
  const wall = samples.reduce((a, s) => a + s.ms / 1000, 0)
  return [
    `## Proxy overhead on one host, ${formatBytes(size)} blob, ${runs} run${runs === 1 ? '' : 's'} of each, interleaved`,
    '',
    'Slowest first.',
    '',
    table(['transfer', 'median s', 'best s', 'median MB/s', 'time vs direct', 'MB/s vs raw TCP', 'CPU-s per transfer (median)'], ['l', 'r', 'r', 'r', 'r', 'r', 'l'],
      rows.map((r) => [ROW_TEXT[r], (m[r].medianMs / 1000).toFixed(2), (m[r].bestMs / 1000).toFixed(2), m[r].medianMbps.toFixed(0),
        (m[r].medianMs / m.direct.medianMs).toFixed(2), (m[r].medianMbps / m['raw-tcp'].medianMbps).toFixed(2),
        Object.entries(m[r].cpu).map(([k, v]) => `${k} ${v.toFixed(1)}`).join(', ')])),
    '',
    ...goals(samples).map((g) => `- ${goalLine(g)}`),
    '',
    `Cold: the daemon stored ${[...new Set(cold.map((s) => `${formatBytes(s.daemonBytes!.origin)} from the registry itself and ${formatBytes(s.daemonBytes!.peer)} from peers (the supernode's seed)`))].join(' or ')} (per run: ${cold.map((s) => `${formatBytes(s.daemonBytes!.peer)} from peers`).join(', ')}).`,
    '',
    'All four are GETs (or, for raw TCP, a stream) received by a separate Node process that counts the bytes, timed from the request to the last byte. ' +
    '"Cold" is a GET to the mirror of a dfdaemon and supernode started fresh for that run and ready before the clock starts, with the blob in no cache ' +
    '(neither the daemon\'s piece store nor the seed\'s): it includes the mirror\'s authorization HEAD to the registry, registering the task with the supernode, ' +
    'the swarm fetching the blob from the registry (the seed peer goes back to source, the daemon takes pieces from it or from the registry), ' +
    'SHA-256 of every piece and of the whole blob, and streaming it to the client from the piece store (piece by piece as the swarm stores them, the last piece once the whole blob matched its digest). "Warm" is the same GET again to the same daemon, ' +
    'served from its piece store. Both sides read files the page cache holds (the blob was just written or read).',
    '',
    machineNote(other, wall),
    ''
  ].join('\n')
}

// ---------------------------------------------------------------- main

let registry: RegistryHandle | undefined
let failed = false
try {
  log(`writing a ${formatBytes(size)} blob to ${blobPath}`)
  const sha = await writeBlob(blobPath, size, 'proxy-overhead')
  registry = await withSignal(startRegistry(join(work, 'registry')), overall, 'starting the registry')
  await withSignal(pushBlobFile(registry.url, REPO, blobPath, `sha256:${sha}`), overall, 'pushing the blob')
  const blobUrlPath = `/v2/${REPO}/blobs/sha256:${sha}`
  log(`blob sha256:${sha} in ${registry.url}/v2/${REPO}`)

  const samples: Sample[] = []
  const units = ['direct', 'naiad', 'raw-tcp'] as const
  for (let run = 0; run < runs; run++) {
    // Rotate the order, so that no row always follows the same one.
    const order = units.map((_, i) => units[(i + run) % units.length])
    for (const unit of order) {
      const reg = registry
      if (unit === 'naiad') {
        const { value, otherCpuS, stealS } = await foreignCpu(() => naiad(reg, blobUrlPath, run))
        // The foreign CPU of the pair is split by time, for the machine note only.
        const total = value.reduce((a, s) => a + s.ms, 0)
        for (const s of value) samples.push({ ...s, otherCpuS: otherCpuS * s.ms / total, stealS: stealS * s.ms / total })
      } else {
        const { value, otherCpuS, stealS } = await foreignCpu(async () => unit === 'direct' ? await httpGet(`${reg.url}${blobUrlPath}`, { registry: reg.process.pid! }) : await rawTcp())
        samples.push({ row: unit, run, ms: value.ms, mbps: mbps(size, value.ms), cpu: value.cpu, otherCpuS, stealS })
      }
      for (const s of samples.filter((x) => x.run === run && (x.row === unit || x.row.startsWith(unit)))) {
        log(`run ${run + 1}/${runs} ${s.row}: ${(s.ms / 1000).toFixed(2)} s, ${s.mbps.toFixed(0)} MB/s; cpu-s ${JSON.stringify(s.cpu)}; other processes ${s.otherCpuS.toFixed(1)} cpu-s`)
      }
    }
  }

  let profile: Record<string, ProfileSummary> | undefined
  let md = markdown(samples)
  if (args.profile) {
    const dir = join(work, 'prof')
    const windows: Windows = { coldUs: [0, 0], warmUs: [0, 0] }
    const [cold, warm] = await naiad(registry, blobUrlPath, runs, dir, windows)
    log(`profiled: cold ${(cold.ms / 1000).toFixed(2)} s, warm ${(warm.ms / 1000).toFixed(2)} s`)
    const find = async (name: string): Promise<string> => {
      const f = (await readdir(join(dir, name))).find((n) => n.endsWith('.cpuprofile'))
      if (f === undefined) throw new Error(`no .cpuprofile of the ${name}: did it exit cleanly?`)
      return join(dir, name, f)
    }
    profile = {
      'daemon, cold': await summarizeFile(await find('daemon'), { from: windows.coldUs[0], to: windows.coldUs[1], top: 20 }),
      'supernode, cold': await summarizeFile(await find('supernode'), { from: windows.coldUs[0], to: windows.coldUs[1], top: 20 }),
      'daemon, warm': await summarizeFile(await find('daemon'), { from: windows.warmUs[0], to: windows.warmUs[1], top: 20 })
    }
    md += `\n### Profile (one more cold + warm pair: cold ${(cold.ms / 1000).toFixed(2)} s, warm ${(warm.ms / 1000).toFixed(2)} s under the profiler)\n\n\`\`\`\n${Object.entries(profile).map(([k, v]) => formatSummary(v, k)).join('\n')}\n\`\`\`\n`
  }
  process.stdout.write(`${md}\n`)
  await writeResults(args.out, 'proxy-overhead', {
    size,
    runs,
    summary: summarize(samples),
    goals: goals(samples),
    samples,
    profile
  }, md)
  log(`wrote ${args.out}.json, .md`)
} catch (err) {
  failed = true
  log(`proxy-overhead: ${overall.aborted ? (overall.reason as Error).message : (err as Error).stack ?? String(err)}`)
} finally {
  await registry?.stop()
  await killDescendants()
  if (args.dir === undefined) await rm(work, { recursive: true, force: true })
}
process.exit(failed ? 1 : 0)
