// One node, as a user first meets Naiad: `dfget` of a file through the node's dfdaemon (and
// the supernode's seed), cold and warm, against `curl` straight from the origin and `cp`
// of a file the page cache holds — whole commands, timed from spawn to exit, interleaved in
// one run. With --link the origin sits in a network namespace behind a shaped link, and the
// node (supernode, dfdaemon, dfget, curl) in another.
//
//   node bench/scenarios/single-node.ts [--size 256MiB] [--runs 3] [--link MBIT] [--dfget FILE]
//
// Goals (issue 10): dfget cold at most 3× curl on loopback, 1.15× behind a 1 Gbit/s link;
// dfget warm at most 2× cp.

import { createHash } from 'node:crypto'
import { createReadStream, existsSync } from 'node:fs'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { spawn } from 'node:child_process'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'

import { formatBytes, parseDuration, parseSize } from '@naiad/proto'
import { BINS, createToken, NaiadProcess, writeBlob } from '@naiad/testkit'

import { cpuSeconds, foreignCpu, killDescendants } from '../proc-stats.ts'
import { parseCommandLine, usageFailer } from '../report/cli.ts'
import { checkGoal, goalLine, machineNote, table } from '../report/goals.ts'
import { median, withSignal, writeResults } from '../report/helpers.ts'
import { childLines, linesOf, type ChildLines } from '../testbed/child-lines.ts'
import { Testbed, type Node } from '../testbed/netns.ts'
import { NodeProcess } from '../testbed/processes.ts'

const ORIGIN_SERVER = fileURLToPath(new URL('../testbed/origin-server.ts', import.meta.url))
const RESULTS = fileURLToPath(new URL('../results/', import.meta.url))
const BUNDLED_DFGET = fileURLToPath(new URL('../../dist/dfget.js', import.meta.url))

const USAGE = `usage: node bench/scenarios/single-node.ts [options]
  --size SIZE          file size (default 256MiB)
  --runs N             measurements of each row, interleaved (default 3)
  --link MBIT          put the origin behind a link of MBIT Mbit/s in a network namespace (needs root); 0: loopback (default)
  --dfget FILE         the dfget to time (default: the installable bundle dist/dfget.js when built, else dfget/bin/dfget.ts)
  --timeout DURATION   bound on the whole scenario (default 20m)
  --dir DIR            work directory, kept afterwards with the processes' logs (default: a temp dir, removed);
                       with --runs 1 and --log-level debug, \`node bench/timeline-summary.ts DIR\` reads the cold pull's per-piece timeline
  --log-level LEVEL    the supernode's and the daemon's log level (default info)
  --out PREFIX         results: PREFIX.json, PREFIX.md (default bench/results/single-node[-linkMBIT])`

const usageError = usageFailer('single-node', USAGE)

async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256')
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer)
  return hash.digest('hex')
}
const args = parseCommandLine(USAGE, usageError, () => parseArgs({
  options: {
    size: { type: 'string', default: '256MiB' },
    runs: { type: 'string', default: '3' },
    link: { type: 'string', default: '0' },
    dfget: { type: 'string' },
    timeout: { type: 'string', default: '20m' },
    dir: { type: 'string' },
    'log-level': { type: 'string', default: 'info' },
    out: { type: 'string' },
    help: { type: 'boolean', short: 'h', default: false }
  }
}).values)

let size = 0
let timeoutMs = 0
try {
  size = parseSize(args.size, '--size')
  timeoutMs = parseDuration(args.timeout, '--timeout')
} catch (err) {
  usageError((err as Error).message)
}
const runs = Number(args.runs)
if (!Number.isInteger(runs) || runs < 1 || runs > 20) usageError(`--runs must be a whole number from 1 to 20, not ${args.runs}`)
const linkMbit = Number(args.link)
if (!Number.isFinite(linkMbit) || linkMbit < 0) usageError(`--link must be a number of Mbit/s (0: loopback), not ${args.link}`)
const dfgetBin = args.dfget ?? (existsSync(BUNDLED_DFGET) ? BUNDLED_DFGET : BINS.dfget)
const out = args.out ?? join(RESULTS, linkMbit > 0 ? `single-node-link${linkMbit}` : 'single-node')

const interrupted = new AbortController()
for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => interrupted.abort(new Error(`interrupted by ${sig}`)))
const overall = AbortSignal.any([interrupted.signal, AbortSignal.timeout(timeoutMs)])
const step = (): AbortSignal => AbortSignal.any([overall, AbortSignal.timeout(Math.round(Math.max(60_000, (size / 5e6) * 1000)))])
const log = (msg: string): void => { process.stderr.write(`${msg}\n`) }

type Row = 'curl' | 'dfget-cold' | 'dfget-warm' | 'cp' | 'cp-sync'
const ROW_TEXT: Record<Row, string> = {
  curl: 'curl from the origin',
  'dfget-cold': 'dfget, nothing cached (daemon and seed)',
  'dfget-warm': 'dfget again (daemon cache)',
  cp: 'cp of a file in the page cache',
  'cp-sync': 'cp, then sync of the copy (the durability dfget gives its output)'
}

interface Sample { row: Row; run: number; ms: number; naiadCpuS: number; otherCpuS: number; startedAt: number }

/** Where the node's commands run: this namespace (loopback), or the client namespace of a testbed. */
interface Place {
  /** Runs a command to completion; ms from spawn to exit. */
  run(cmd: string, argv: string[]): Promise<{ code: number | null; ms: number; stderr: string }>
  naiad(bin: string, argv: string[], env: Record<string, string>): NaiadProcess | NodeProcess
}

function runHere(cmd: string, argv: string[]): Promise<{ code: number | null; ms: number; stderr: string }> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now()
    const child = spawn(cmd, argv, { stdio: ['ignore', 'ignore', 'pipe'], signal: step() })
    let stderr = ''
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
    child.once('error', reject)
    child.once('exit', (code) => resolve({ code, ms: performance.now() - t0, stderr }))
  })
}

const work = args.dir ?? await mkdtemp(join(tmpdir(), 'naiad-single-'))
await mkdir(work, { recursive: true })
const blobPath = join(work, 'blob')
let bed: Testbed | undefined
let originProc: ChildLines | undefined
const procs: Array<NaiadProcess | NodeProcess> = []
let failed = false

try {
  log(`writing a ${formatBytes(size)} file to ${blobPath}`)
  const sha = await writeBlob(blobPath, size, 'single-node')
  // Every dfget cold run asks for a URL no cache has seen; curl for the same file.
  const paths = [...Array(runs).keys()].flatMap((i) => [`/curl-${i}`, `/cold-${i}`])
  const originArgs = (listen: string): string[] => [ORIGIN_SERVER, '--listen', listen, '--file', blobPath, ...paths.flatMap((p) => ['--path', p])]
  let place: Place
  if (linkMbit > 0) {
    bed = await Testbed.create({ signal: overall, log })
    const originNode = await bed.addNode('origin', { rateMbit: linkMbit, rttMs: 0 })
    // The node's own link is not the bottleneck: only the origin's is shaped to MBIT.
    const client: Node = await bed.addNode('client', { rateMbit: Math.max(10_000, 10 * linkMbit), rttMs: 0 })
    const child = bed.spawn(originNode, process.execPath, originArgs(`${originNode.ip}:0`), { stdio: ['pipe', 'pipe', 'pipe'] })
    originProc = linesOf(child, 'origin-server', overall)
    place = {
      run: async (cmd, argv) => {
        const t0 = performance.now()
        const c = bed!.spawn(client, cmd, argv)
        let stderr = ''
        c.stderr!.on('data', (d: Buffer) => { stderr += d.toString() })
        const code = await new Promise<number | null>((resolve) => c.once('exit', resolve))
        return { code, ms: performance.now() - t0, stderr }
      },
      naiad: (bin, argv, env) => new NodeProcess(bed!, client, bin, argv, env)
    }
  } else {
    originProc = childLines(ORIGIN_SERVER, originArgs('127.0.0.1:0').slice(1), overall, { stdin: 'pipe' })
    place = { run: runHere, naiad: (bin, argv, env) => new NaiadProcess(bin, argv, env) }
  }
  const { url: originUrl } = await withSignal(originProc.next(), overall, 'starting the origin') as { url: string }

  // The origin is on loopback or the testbed's private network: the source policy must allow it.
  const allow = { NAIAD_SOURCE_ALLOW: new URL(originUrl).host }
  const sn = place.naiad(BINS.supernode, ['--data-dir', join(work, 'sn'), '--listen', '127.0.0.1:0', '--p2p-listen', '/ip4/127.0.0.1/tcp/0', '--log-level', args['log-level']], allow)
  procs.push(sn)
  const snReady = await withSignal(sn.ready, overall, 'starting the supernode')
  const daemon = place.naiad(BINS.dfdaemon, ['--supernode', String(snReady.http), '--data-dir', join(work, 'daemon'), '--api-listen', '127.0.0.1:0', '--proxy-listen', '127.0.0.1:0', '--p2p-listen', '/ip4/127.0.0.1/tcp/0', '--log-level', args['log-level'], '--cache-quota', `${Math.ceil(size * (runs + 2) / 2 ** 20)}MiB`],
    { ...allow, NAIAD_JOIN_TOKEN: await createToken(join(work, 'sn'), 'join') })
  procs.push(daemon)
  const dReady = await withSignal(daemon.ready, overall, 'starting the dfdaemon')
  const api = String(dReady.api)
  const naiadPids = (): number[] => [sn.pid, daemon.pid]
  log(`origin ${originUrl}${linkMbit > 0 ? ` behind ${linkMbit} Mbit/s` : ' on loopback'}; dfget: ${dfgetBin}`)

  const samples: Sample[] = []
  const target = (name: string): string => join(work, `out-${name}`)
  const timed = async (row: Row, run: number, cmd: string, argv: string[], file: string): Promise<void> => {
    const cpu0 = await Promise.all(naiadPids().map(cpuSeconds))
    const startedAt = Date.now()
    const { value: r, otherCpuS } = await foreignCpu(() => place.run(cmd, argv))
    const cpu1 = await Promise.all(naiadPids().map(cpuSeconds))
    if (r.code !== 0) throw new Error(`${row}: ${cmd} exited ${r.code}: ${r.stderr.trim().split('\n').slice(-3).join(' | ')}`)
    if (await sha256File(file) !== sha) throw new Error(`${row}: ${file} does not have the file's SHA-256`)
    await rm(file, { force: true })
    const naiadCpuS = cpu1.reduce((a, c, i) => a + c - cpu0[i], 0)
    samples.push({ row, run, ms: r.ms, naiadCpuS, otherCpuS, startedAt })
    log(`run ${run + 1}/${runs} ${row}: ${(r.ms / 1000).toFixed(3)} s (daemon + supernode ${naiadCpuS.toFixed(2)} cpu-s; other processes ${otherCpuS.toFixed(1)})`)
  }
  const dfget = (url: string, file: string): [string, string[]] => [process.execPath, [dfgetBin, url, '-O', file, '--daemon', api, '--no-progress']]

  const units: Array<(run: number) => Promise<void>> = [
    (run) => timed('curl', run, 'curl', ['-sSf', '-o', target('curl'), `${originUrl}/curl-${run}`], target('curl')),
    async (run) => {
      await timed('dfget-cold', run, ...dfget(`${originUrl}/cold-${run}`, target('cold')), target('cold'))
      // Warm right after: the same URL, now in the daemon's cache.
      await timed('dfget-warm', run, ...dfget(`${originUrl}/cold-${run}`, target('warm')), target('warm'))
    },
    (run) => timed('cp', run, 'cp', [blobPath, target('cp')], target('cp')),
    // dfget fsyncs its output before the rename (a crash leaves no FILE, the old one or the
    // whole new one); cp does not. This row shows what that durability costs on its own.
    (run) => timed('cp-sync', run, 'sh', ['-c', 'cp "$1" "$2" && sync "$2"', 'sh', blobPath, target('cp-sync')], target('cp-sync'))
  ]
  for (let run = 0; run < runs; run++) {
    for (let k = 0; k < units.length; k++) await units[(k + run) % units.length](run)
  }

  const med = (row: Row): number => median(samples.filter((s) => s.row === row).map((s) => s.ms))
  const coldBound = linkMbit > 0 ? 1.15 : 3
  const goals = [
    checkGoal(`dfget cold / curl (medians${linkMbit > 0 ? `, origin behind ${linkMbit} Mbit/s` : ', loopback'})`, med('dfget-cold') / med('curl'), 'at most', coldBound),
    checkGoal('dfget warm / cp (medians)', med('dfget-warm') / med('cp'), 'at most', 2)
  ]
  const other = samples.reduce((a, s) => a + s.otherCpuS, 0)
  const wall = samples.reduce((a, s) => a + s.ms / 1000, 0)
  const md = [
    `## One node, ${formatBytes(size)} file, ${runs} run${runs === 1 ? '' : 's'} of each, interleaved (${linkMbit > 0 ? `origin behind a ${linkMbit} Mbit/s link` : 'origin on loopback'})`,
    '',
    table(['command', 'median s', 'best s', 'runs s', 'vs curl', 'daemon + supernode CPU-s (median)'], ['l', 'r', 'r', 'l', 'r', 'r'],
      (Object.keys(ROW_TEXT) as Row[]).map((row) => {
        const s = samples.filter((x) => x.row === row)
        return [ROW_TEXT[row], (med(row) / 1000).toFixed(3), (Math.min(...s.map((x) => x.ms)) / 1000).toFixed(3), s.map((x) => (x.ms / 1000).toFixed(2)).join(', '),
          (med(row) / med('curl')).toFixed(2), median(s.map((x) => x.naiadCpuS)).toFixed(2)]
      })),
    '',
    ...goals.map((g) => `- ${goalLine(g)}`),
    `- dfget warm / (cp, then sync): ${(med('dfget-warm') / med('cp-sync')).toFixed(2)} (not a goal: the same durability on both sides)`,
    '',
    `Each row is a whole command, from spawn to exit, writing the file (${dfgetBin.endsWith('.js') ? 'dfget is the installable bundle' : 'dfget runs from its TypeScript source'}: ${dfgetBin}). ` +
    '"Cold": a URL neither the daemon nor the seed has seen; the seed fetches it from the origin while the daemon streams it from the seed, and dfget links (or, across file systems, copies) the verified file from the daemon\'s store. ' +
    '"Warm": the same URL again. Every output is checked against the file\'s SHA-256 after the clock stops.',
    '',
    machineNote(other, wall),
    ''
  ].join('\n')
  process.stdout.write(`${md}\n`)
  await writeResults(out, 'single-node', { size, runs, linkMbit, dfget: dfgetBin, goals, samples }, md)
  log(`wrote ${out}.json, .md`)
  if (args.dir !== undefined) {
    // The processes' own lines, to set a cold pull's phases (their pino times) against the
    // samples' startedAt, in the layout timeline-summary.ts reads (one set per cold run; the
    // logs are the whole session's).
    for (const s of samples.filter((x) => x.row === 'dfget-cold')) {
      await writeFile(join(work, `${s.run}-cold.json`), JSON.stringify({ startMs: s.startedAt, endMs: s.startedAt + s.ms }))
      await writeFile(join(work, `${s.run}-supernode.log`), `${sn.logs.join('\n')}\n`)
      await writeFile(join(work, `${s.run}-daemon.log`), `${daemon.logs.join('\n')}\n`)
    }
    log(`kept the supernode's and the daemon's logs in ${work}`)
  }
} catch (err) {
  failed = true
  log(`single-node: ${overall.aborted ? (overall.reason as Error).message : (err as Error).stack ?? String(err)}`)
  for (const p of procs) log(p.logs.slice(-10).join('\n'))
} finally {
  for (const p of procs) await p.stop().catch(() => {})
  originProc?.kill()
  await bed?.destroy()
  await killDescendants()
  if (args.dir === undefined) await rm(work, { recursive: true, force: true })
}
process.exit(failed ? 1 : 0)
