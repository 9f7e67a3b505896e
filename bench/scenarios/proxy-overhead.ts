// Scenario 2 of the benchmark issue: what dfdaemon's registry mirror costs on one host. A
// blob in a real docker-registry on loopback is fetched, in the same run and interleaved:
// directly from the registry; through a freshly started dfdaemon's mirror with nothing
// cached anywhere (cold); through the same daemon again (warm); and raw loopback TCP of the
// same bytes as the ceiling. With --link the registry sits in a network namespace behind a
// shaped link, and everything else (clients, supernode, daemon, raw TCP) in another.
//
//   node bench/scenarios/proxy-overhead.ts [--quick] [--size 1GiB] [--runs 3] [--link MBIT]
//
// Goals: cold time at most 2× the direct time on loopback and 1.15× behind a 1 Gbit/s link
// (issue 10, which replaced issue 5's 1.15× on loopback: there the blob crosses two processes,
// each hashing it, against one copy); warm throughput at least 60 % of raw loopback TCP.
// See bench/README.md for exactly what "cold" includes.

import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'

import { formatBytes, parseDuration, parseSize } from '@naiad/proto'
import { BINS, createToken, metricIn, NaiadProcess, pushBlobFile, startRegistry, TEST_SOURCE_ALLOW, writeBlob, type RegistryHandle } from '@naiad/testkit'

import { formatSummary, summarizeFile, type ProfileSummary } from '../cpuprofile-summary.ts'

import { cpuSeconds, foreignCpu, killDescendants, threadCpuSeconds } from '../proc-stats.ts'
import { parseCommandLine, usageFailer } from '../report/cli.ts'
import { checkGoal, goalLine, machineNote, mbps, table } from '../report/goals.ts'
import { median, withSignal, writeResults } from '../report/helpers.ts'
import { childLines, linesOf, type ChildLines } from '../testbed/child-lines.ts'
import { Testbed, type Node } from '../testbed/netns.ts'
import { NodeProcess, runIn } from '../testbed/processes.ts'

const TCP_PIPE = fileURLToPath(new URL('../testbed/tcp-pipe.ts', import.meta.url))
const RESULTS = fileURLToPath(new URL('../results/', import.meta.url))
const REPO = 'bench/proxy-overhead'

const USAGE = `usage: node bench/scenarios/proxy-overhead.ts [options]
  --quick              a 256 MiB blob and 1 run (unless given)
  --size SIZE          blob size (default 1GiB)
  --runs N             measurements of each row, interleaved (default 3)
  --link MBIT          put the registry behind a link of MBIT Mbit/s in a network namespace (needs root); 0: loopback (default)
  --profile            after the measured runs, one more cold + warm pair with the daemon and the
                       supernode under --cpu-prof; prints their top self-time functions per phase
  --timeline DIR       supernode and daemon at debug level; their logs (the per-piece timeline of
                       each cold pull: bench/README.md) go to DIR/<run>-<process>.log
  --timeout DURATION   bound on the whole scenario (default 20m)
  --dir DIR            work directory, kept afterwards (default: a temp dir, removed)
  --out PREFIX         results: PREFIX.json, PREFIX.md (default bench/results/proxy-overhead[-linkMBIT])`

const usageError = usageFailer('proxy-overhead', USAGE)

const args = parseCommandLine(USAGE, usageError, () => parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    size: { type: 'string' },
    runs: { type: 'string' },
    link: { type: 'string', default: '0' },
    profile: { type: 'boolean', default: false },
    timeline: { type: 'string' },
    timeout: { type: 'string', default: '20m' },
    dir: { type: 'string' },
    out: { type: 'string' },
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
const linkMbit = Number(args.link)
if (!Number.isFinite(linkMbit) || linkMbit < 0) usageError(`--link must be a number of Mbit/s (0: loopback), not ${args.link}`)
const out = args.out ?? join(RESULTS, linkMbit > 0 ? `proxy-overhead-link${linkMbit}` : 'proxy-overhead')

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

/** Where the client side runs (the GETs, raw TCP, the supernode and the daemon): this namespace, or a testbed node. */
interface Place {
  /** A script of ours (tcp-pipe.ts) whose JSON lines are read. */
  lines(script: string, argv: string[], signal: AbortSignal): ChildLines
  naiad(bin: string, argv: string[], env: Record<string, string>): NaiadProcess | NodeProcess
  /** A daemon's /metrics text. */
  metrics(apiUrl: string): Promise<string>
}

const here: Place = {
  lines: childLines,
  naiad: (bin, argv, env) => new NaiadProcess(bin, argv, env),
  metrics: async (apiUrl) => await (await fetch(`${apiUrl}/metrics`, { signal: step() })).text()
}

function inNode(bed: Testbed, node: Node): Place {
  return {
    lines: (script, argv, signal) => linesOf(bed.spawn(node, process.execPath, [script, ...argv]), `${script} ${argv[0] ?? ''}`, signal),
    naiad: (bin, argv, env) => new NodeProcess(bed, node, bin, argv, env),
    // The daemon's API is on the node's own loopback, which this namespace cannot reach.
    metrics: async (apiUrl) => {
      const r = await runIn(bed, node, 'curl', ['-sSf', `${apiUrl}/metrics`], step())
      if (r.code !== 0) throw new Error(`curl ${apiUrl}/metrics in ${node.name} exited ${r.code}: ${r.stderr.trim()}`)
      return r.stdout
    }
  }
}

const work = args.dir ?? await mkdtemp(join(tmpdir(), 'naiad-proxy-'))
await mkdir(work, { recursive: true })
const blobPath = join(work, 'blob')
let place = here

/** A GET in a child process (tcp-pipe.ts http-get): counts the body, times request to last byte. */
async function httpGet(url: string, pids: Record<string, number>, mainThreads: Record<string, number> = {}): Promise<{ ms: number; cpu: Record<string, number> }> {
  const read = (): Promise<number[]> => Promise.all([...Object.values(pids).map(cpuSeconds), ...Object.values(mainThreads).map((p) => threadCpuSeconds(p))])
  const cpu0 = await read()
  const get = place.lines(TCP_PIPE, ['http-get', '--url', url], step())
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
  const recv = place.lines(TCP_PIPE, ['receive', '--sink', 'count'], signal)
  const { port } = await recv.next()
  const send = place.lines(TCP_PIPE, ['send', '--port', String(port), '--file', blobPath], signal)
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
  let sn: NaiadProcess | NodeProcess | undefined
  let d: NaiadProcess | NodeProcess | undefined
  try {
    // As testkit's startSupernode and startDaemon, in `place`, with the environment for the
    // profiler. Behind a link the registry is on the testbed's network: the source policy must allow it.
    const level = args.timeline === undefined ? 'info' : 'debug'
    const allow = { NAIAD_SOURCE_ALLOW: linkMbit > 0 ? new URL(registry.url).hostname : TEST_SOURCE_ALLOW }
    sn = place.naiad(BINS.supernode, ['--data-dir', join(dir, 'sn'), '--listen', '127.0.0.1:0', '--p2p-listen', '/ip4/127.0.0.1/tcp/0', '--log-level', level], { ...allow, ...env('supernode') })
    const snUrl = String((await withSignal(sn.ready, overall, 'starting the supernode')).http)
    const joinToken = await createToken(join(dir, 'sn'), 'join')
    d = place.naiad(BINS.dfdaemon, ['--supernode', snUrl, '--data-dir', join(dir, 'daemon'), '--api-listen', '127.0.0.1:0', '--proxy-listen', '127.0.0.1:0', '--p2p-listen', '/ip4/127.0.0.1/tcp/0',
      '--insecure-registry', registry.host, '--default-registry', registry.url, '--log-level', level], { ...allow, NAIAD_JOIN_TOKEN: joinToken, ...env('daemon') })
    const ready = await withSignal(d.ready, overall, 'starting the daemon')
    const apiUrl = String(ready.api)
    const metric = async (name: string, labels?: Record<string, string>): Promise<number> => metricIn(await place.metrics(apiUrl), name, labels)
    const pids = { daemon: d.pid, supernode: sn.pid, registry: registry.process.pid! }
    const url = `${String(ready.proxy)}${blobUrlPath}`
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
      origin: await metric('naiad_download_bytes_total', { source: 'origin' }),
      peer: await metric('naiad_download_bytes_total', { source: 'peer' })
    }
    if (daemonBytes.origin + daemonBytes.peer !== size) throw new Error(`the cold daemon stored ${daemonBytes.origin + daemonBytes.peer} bytes, expected ${size}: was the blob cached?`)
    const w0 = nowUs()
    const warm = await httpGet(url, pids)
    if (windows !== undefined) windows.warmUs = [w0, nowUs()]
    const after = await metric('naiad_download_bytes_total')
    if (after !== size) throw new Error(`the warm GET made the daemon fetch ${after - size} more bytes: it was not served from its cache`)
    return [
      { row: 'naiad-cold', run, ms: cold.ms, mbps: mbps(size, cold.ms), cpu: cold.cpu, daemonBytes },
      { row: 'naiad-warm', run, ms: warm.ms, mbps: mbps(size, warm.ms), cpu: warm.cpu }
    ]
  } finally {
    await d?.stop()
    await sn?.stop()
    if (args.timeline !== undefined) {
      await mkdir(args.timeline, { recursive: true })
      if (sn !== undefined) await writeFile(join(args.timeline, `${run}-supernode.log`), sn.logs.join('\n'))
      if (d !== undefined) await writeFile(join(args.timeline, `${run}-daemon.log`), d.logs.join('\n'))
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
    checkGoal(`cold time / direct time (medians${linkMbit > 0 ? `, registry behind ${linkMbit} Mbit/s` : ''})`, m['naiad-cold'].medianMs / m.direct.medianMs, 'at most', linkMbit > 0 ? 1.15 : 2),
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
    `## Proxy overhead on one host, ${formatBytes(size)} blob, ${runs} run${runs === 1 ? '' : 's'} of each, interleaved${linkMbit > 0 ? ` (registry behind a ${linkMbit} Mbit/s link)` : ''}`,
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
    'served from its piece store. Both sides read files the page cache holds (the blob was just written or read).' +
    (linkMbit > 0
      ? ` The registry runs in a network namespace whose link is shaped to ${linkMbit} Mbit/s each way (tc HTB, no added delay); the clients, supernode, daemon and both ends of raw TCP run in another namespace, ` +
        'on its loopback, whose own link is not the bottleneck. Every byte from the registry (direct, or to the seed and the daemon) crosses the shaped link.'
      : ''),
    '',
    machineNote(other, wall),
    ''
  ].join('\n')
}

// ---------------------------------------------------------------- main

let registry: RegistryHandle | undefined
let bed: Testbed | undefined
let failed = false
try {
  log(`writing a ${formatBytes(size)} blob to ${blobPath}`)
  const sha = await writeBlob(blobPath, size, 'proxy-overhead')
  const registryDir = join(work, 'registry')
  registry = await withSignal(startRegistry(registryDir), overall, 'starting the registry')
  await withSignal(pushBlobFile(registry.url, REPO, blobPath, `sha256:${sha}`), overall, 'pushing the blob')
  if (linkMbit > 0) {
    // The push went to a registry on loopback; one over the same storage in the origin
    // namespace serves it. So the push crosses no link and this namespace needs no route in.
    await registry.stop()
    registry = undefined
    const testbed = await Testbed.create({ signal: overall, log, exitOnSignal: false })
    bed = testbed
    const originNode = await testbed.addNode('origin', { rateMbit: linkMbit, rttMs: 0 })
    // The node's own link is not the bottleneck: only the registry's is shaped to MBIT.
    const client = await testbed.addNode('client', { rateMbit: Math.max(10_000, 10 * linkMbit), rttMs: 0 })
    registry = await withSignal(startRegistry(registryDir, { host: originNode.ip, spawn: (cmd, argv, options) => testbed.spawn(originNode, cmd, argv, options) }), overall, 'starting the registry in its namespace')
    place = inNode(testbed, client)
  }
  const blobUrlPath = `/v2/${REPO}/blobs/sha256:${sha}`
  log(`blob sha256:${sha} in ${registry.url}/v2/${REPO}${linkMbit > 0 ? ` behind ${linkMbit} Mbit/s` : ''}`)

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
  await writeResults(out, 'proxy-overhead', {
    size,
    runs,
    linkMbit,
    summary: summarize(samples),
    goals: goals(samples),
    samples,
    profile
  }, md)
  log(`wrote ${out}.json, .md`)
} catch (err) {
  failed = true
  log(`proxy-overhead: ${overall.aborted ? (overall.reason as Error).message : (err as Error).stack ?? String(err)}`)
} finally {
  await registry?.stop()
  await bed?.destroy()
  await killDescendants()
  if (args.dir === undefined) await rm(work, { recursive: true, force: true })
}
process.exit(failed ? 1 : 0)
