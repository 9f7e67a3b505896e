// A soak: many dfget loops at once, for minutes, over a set of small files, through a few
// daemons whose cache quota is smaller than the set — the load under which daemons used
// to die (an unhandled DFD_ERR_CACHE_FULL) and fetches to wait 10 s for a parent before
// going to the origin. Reports fetches, failures by code, the origin's egress against the
// distinct bytes, back-to-source counts, and each daemon's RSS at the start and the end.
//
//   node bench/scenarios/soak.ts [--loops 16] [--duration 10m] [--files 40] [--file-size 4MiB]
//                                [--daemons 4] [--quota 96MiB] [--dfget FILE]
//
// Goals (issue 10): no daemon dies; the origin serves each file about once (egress over
// distinct bytes at most 1.1); no fetch waits seconds for a parent while the seed holds
// the piece (back-to-source downloads: none).

import { existsSync } from 'node:fs'
import { mkdir, mkdtemp, rm } from 'node:fs/promises'
import { spawn } from 'node:child_process'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'

import { formatBytes, parseDuration, parseSize } from '@naiad/proto'
import { BINS, createToken, metric, NaiadProcess, writeBlob } from '@naiad/testkit'

import { foreignCpu, killDescendants, rssMiB } from '../proc-stats.ts'
import { parseCommandLine, usageFailer } from '../report/cli.ts'
import { checkGoal, goalLine, machineNote, table } from '../report/goals.ts'
import { median, withSignal, writeResults } from '../report/helpers.ts'
import { childLines } from '../testbed/child-lines.ts'

const ORIGIN_SERVER = fileURLToPath(new URL('../testbed/origin-server.ts', import.meta.url))
const RESULTS = fileURLToPath(new URL('../results/', import.meta.url))
const BUNDLED_DFGET = fileURLToPath(new URL('../../dist/dfget.js', import.meta.url))

const USAGE = `usage: node bench/scenarios/soak.ts [options]
  --loops N            dfget loops running at once (default 16)
  --duration DURATION  how long the loops run (default 10m)
  --files N            distinct files (default 40)
  --file-size SIZE     size of each (default 4MiB)
  --daemons N          dfdaemons; each loop picks one at random per fetch (default 4)
  --quota SIZE         each daemon's cache quota (default 96MiB)
  --dfget FILE         the dfget to run (default: the bundle dist/dfget.js when built, else dfget/bin/dfget.ts)
  --dir DIR            work directory, kept afterwards (default: a temp dir, removed)
  --out PREFIX         results: PREFIX.json, PREFIX.md (default bench/results/soak)`

const usageError = usageFailer('soak', USAGE)
const args = parseCommandLine(USAGE, usageError, () => parseArgs({
  options: {
    loops: { type: 'string', default: '16' },
    duration: { type: 'string', default: '10m' },
    files: { type: 'string', default: '40' },
    'file-size': { type: 'string', default: '4MiB' },
    daemons: { type: 'string', default: '4' },
    quota: { type: 'string', default: '96MiB' },
    dfget: { type: 'string' },
    dir: { type: 'string' },
    out: { type: 'string', default: join(RESULTS, 'soak') },
    help: { type: 'boolean', short: 'h', default: false }
  }
}).values)

const whole = (v: string, flag: string, max: number): number => {
  const n = Number(v)
  if (!Number.isInteger(n) || n < 1 || n > max) usageError(`${flag} must be a whole number from 1 to ${max}, not ${v}`)
  return n
}
const loops = whole(args.loops, '--loops', 256)
const files = whole(args.files, '--files', 10_000)
const daemonCount = whole(args.daemons, '--daemons', 32)
let durationMs = 0
let fileSize = 0
let quota = 0
try {
  durationMs = parseDuration(args.duration, '--duration')
  fileSize = parseSize(args['file-size'], '--file-size')
  quota = parseSize(args.quota, '--quota')
} catch (err) {
  usageError((err as Error).message)
}
const dfgetBin = args.dfget ?? (existsSync(BUNDLED_DFGET) ? BUNDLED_DFGET : BINS.dfget)

const interrupted = new AbortController()
for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => interrupted.abort(new Error(`interrupted by ${sig}`)))
// The loops stop starting fetches at the duration; a fetch then gets a minute to finish.
const overall = AbortSignal.any([interrupted.signal, AbortSignal.timeout(durationMs + 5 * 60_000)])
const log = (msg: string): void => { process.stderr.write(`${msg}\n`) }

interface Fetch { loop: number; file: number; daemon: number; ms: number; code: number; error: string }

const work = args.dir ?? await mkdtemp(join(tmpdir(), 'naiad-soak-'))
await mkdir(work, { recursive: true })
const procs: NaiadProcess[] = []
let failed = false

function dfget(url: string, out: string, api: string): Promise<{ code: number; ms: number; error: string }> {
  return new Promise((resolve) => {
    const t0 = performance.now()
    const child = spawn(process.execPath, [dfgetBin, url, '-O', out, '--daemon', api, '--no-progress', '--timeout', '2m'], { stdio: ['ignore', 'ignore', 'pipe'] })
    let stderr = ''
    child.stderr.on('data', (d: Buffer) => { stderr = (stderr + d.toString()).slice(-2000) })
    const kill = (): void => { child.kill('SIGKILL') }
    overall.addEventListener('abort', kill, { once: true })
    child.once('exit', (code, sig) => {
      overall.removeEventListener('abort', kill)
      // dfget's one-line error ends with the code in brackets.
      const m = /\[([A-Z0-9_]+)\]\s*$/.exec(stderr.trim())
      resolve({ code: code ?? (sig === null ? -1 : 128), ms: performance.now() - t0, error: code === 0 ? '' : m?.[1] ?? (stderr.trim().split('\n').at(-1) ?? `signal ${sig}`) })
    })
  })
}

try {
  log(`writing ${files} files of ${formatBytes(fileSize)}`)
  const paths: string[] = []
  for (let i = 0; i < files; i++) {
    const p = join(work, `file-${i}`)
    await writeBlob(p, fileSize, `soak-${i}`)
    paths.push(p)
  }
  // One origin process, each file at its own path; it counts the bytes it serves.
  const origin = childLines(ORIGIN_SERVER, ['--listen', '127.0.0.1:0', ...paths.flatMap((p, i) => ['--path', `/f${i}=${p}`])], overall, { stdin: 'pipe' })
  const { url: originUrl } = await withSignal(origin.next(), overall, 'starting the origin') as { url: string }
  // The origin is on loopback: the source policy must allow it.
  const allow = { NAIAD_SOURCE_ALLOW: new URL(originUrl).host }
  const sn = new NaiadProcess(BINS.supernode, ['--data-dir', join(work, 'sn'), '--listen', '127.0.0.1:0', '--p2p-listen', '/ip4/127.0.0.1/tcp/0', '--log-level', 'info'], allow)
  procs.push(sn)
  const snReady = await withSignal(sn.ready, overall, 'starting the supernode')
  const daemons: Array<{ p: NaiadProcess; api: string }> = []
  const joinToken = await createToken(join(work, 'sn'), 'join')
  for (let i = 0; i < daemonCount; i++) {
    const p = new NaiadProcess(BINS.dfdaemon, ['--supernode', String(snReady.http), '--data-dir', join(work, `d${i}`), '--api-listen', '127.0.0.1:0', '--proxy-listen', '127.0.0.1:0',
      '--p2p-listen', '/ip4/127.0.0.1/tcp/0', '--log-level', 'info', '--cache-quota', `${Math.floor(quota / 2 ** 20)}MiB`],
      { ...allow, NAIAD_JOIN_TOKEN: joinToken })
    procs.push(p)
    const ready = await withSignal(p.ready, overall, `starting daemon ${i}`)
    daemons.push({ p, api: String(ready.api) })
  }
  const rssStart = await Promise.all(daemons.map((d) => rssMiB(d.p.pid)))
  log(`origin ${originUrl}; ${daemonCount} daemons (quota ${formatBytes(quota)} each); ${loops} loops for ${args.duration}; dfget ${dfgetBin}`)

  const fetches: Fetch[] = []
  const until = Date.now() + durationMs
  let lastReport = Date.now()
  const { otherCpuS } = await foreignCpu(() => Promise.all([...Array(loops).keys()].map(async (loop) => {
    for (let n = 0; Date.now() < until && !overall.aborted; n++) {
      const file = Math.floor(Math.random() * files)
      const daemon = Math.floor(Math.random() * daemonCount)
      const out = join(work, `out-${loop}`)
      const r = await dfget(`${originUrl}/f${file}`, out, daemons[daemon].api)
      await rm(out, { force: true })
      fetches.push({ loop, file, daemon, ms: r.ms, code: r.code, error: r.error })
      if (Date.now() - lastReport > 30_000) {
        lastReport = Date.now()
        log(`${fetches.length} fetches, ${fetches.filter((f) => f.code !== 0).length} failed, ${Math.round((until - Date.now()) / 1000)} s left`)
      }
    }
  })))
  origin.send('served')
  const { served: perPath } = await withSignal(origin.next(), overall, 'reading the origin\'s counts') as { served: Record<string, number> }
  const served = Object.values(perPath).reduce((a, b) => a + b, 0)
  origin.kill()

  const alive = daemons.map((d) => d.p.proc.exitCode === null && d.p.proc.signalCode === null)
  const rssEnd = await Promise.all(daemons.map((d) => rssMiB(d.p.pid)))
  const backToSource = (await Promise.all(daemons.map((d) => metric(d.api, 'naiad_back_to_source_total').catch(() => 0)))).reduce((a, b) => a + b, 0)
  // Why the daemons went to the origin, from their 'back to source' log lines (the last 5,000 lines each).
  const reasons = new Map<string, number>()
  for (const d of daemons) {
    for (const line of d.p.logs) {
      if (!line.includes('"back to source"')) continue
      try {
        const reason = String((JSON.parse(line) as { reason?: unknown }).reason).replace(/\d+ ms/, 'N ms')
        reasons.set(reason, (reasons.get(reason) ?? 0) + 1)
      } catch { /* not a JSON line */ }
    }
  }
  const failures = new Map<string, number>()
  for (const f of fetches) if (f.code !== 0) failures.set(f.error, (failures.get(f.error) ?? 0) + 1)
  const ok = fetches.filter((f) => f.code === 0).map((f) => f.ms)
  const sorted = [...ok].sort((a, b) => a - b)
  const distinct = files * fileSize
  const goals = [
    checkGoal('daemons still running at the end', alive.filter(Boolean).length, 'at least', daemonCount),
    checkGoal('origin egress / distinct bytes', served / distinct, 'at most', 1.1),
    checkGoal('downloads that went back to the origin on a daemon', backToSource, 'at most', 0)
  ]
  const md = [
    `## Soak: ${loops} dfget loops for ${args.duration}, ${files} files of ${formatBytes(fileSize)}, ${daemonCount} daemons with ${formatBytes(quota)} of cache each`,
    '',
    table(['fetches', 'failed', 'failures by code', 'fetch p50 s', 'fetch p99 s', 'origin egress', 'distinct bytes', 'egress / distinct', 'back to source'], ['r', 'r', 'l', 'r', 'r', 'r', 'r', 'r', 'r'], [[
      fetches.length, fetches.length - ok.length, [...failures].map(([k, v]) => `${k} ${v}`).join(', ') || '—',
      (median(ok) / 1000).toFixed(2), ((sorted[Math.floor(sorted.length * 0.99)] ?? 0) / 1000).toFixed(2),
      formatBytes(served), formatBytes(distinct), (served / distinct).toFixed(2), backToSource
    ]]),
    '',
    table(['daemon', 'alive', 'RSS at start MiB', 'RSS at end MiB'], ['l', 'l', 'r', 'r'], daemons.map((_, i) => [`d${i}`, alive[i] ? 'yes' : '**no**', rssStart[i].toFixed(0), rssEnd[i].toFixed(0)])),
    '',
    ...goals.map((g) => `- ${goalLine(g)}`),
    '',
    `Back to source, by reason: ${[...reasons].sort((a, b) => b[1] - a[1]).map(([k, v]) => `${v} × ${k}`).join('; ') || 'none'}.`,
    '',
    `Origin egress is the body bytes the origin sent (its own count). dfget: ${dfgetBin}.`,
    '',
    machineNote(otherCpuS, durationMs / 1000),
    ''
  ].join('\n')
  process.stdout.write(`${md}\n`)
  await writeResults(args.out, 'soak', { loops, durationMs, files, fileSize, daemons: daemonCount, quota, fetches: fetches.length, failures: Object.fromEntries(failures), served, distinct, backToSource, backToSourceReasons: Object.fromEntries(reasons), alive, rssStart, rssEnd, goals }, md)
  log(`wrote ${args.out}.json, .md`)
} catch (err) {
  failed = true
  log(`soak: ${overall.aborted ? (overall.reason as Error).message : (err as Error).stack ?? String(err)}`)
  for (const p of procs) log(p.logs.slice(-10).join('\n'))
} finally {
  for (const p of procs) await p.stop().catch(() => {})
  await killDescendants()
  if (args.dir === undefined) await rm(work, { recursive: true, force: true })
}
process.exit(failed ? 1 : 0)
