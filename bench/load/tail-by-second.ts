// Lines up, second by second, the get-parents latency the synthetic peers saw in a
// scheduler-scale run with what loop-probe.ts recorded in the supernode and in the load
// generators: which side of the wire the slow answers waited on.
//
//   NODE_OPTIONS="--import ./bench/load/loop-probe.ts" NAIAD_LOOP_PROBE_DIR=/tmp/probe \
//     node bench/scenarios/scheduler-scale.ts --peers 10000 --out /tmp/run
//   node bench/load/tail-by-second.ts /tmp/run.json /tmp/probe
//
// Per second of the counted window: timed calls, their p99 and max as the peers saw them;
// the supernode's longest loop delay, its utilisation and GC pauses in that second, the polls
// that reached it and the pace its gauge set; each generator's longest loop delay. Then, for
// the window: how bunched the polls came, and the supernode's old space (how fast it grew
// between major collections, per 1,000 reports too; its major collections; and those that
// compacted the heap). With --alt-bin each build's window is printed in turn.

import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'

interface ProbeLine { t: number; lagMaxMs: number; elu: number; gcMs: number; gcMaxMs: number; gcKinds: Record<string, number>; polls?: number; pollsMax100ms?: number; paceMinMs?: number; paceMaxMs?: number; oldUsedMiB?: number; heapTotalMiB?: number }
interface RunResult {
  label: string
  windowStartedAt?: number
  parentsP50Ms: number
  parentsP99Ms: number
  pieceReportsPerS?: number
  generatorsLoopLagP99Ms?: number
  generatorsLoopLagMaxMs?: number
  parentsBySecond: Array<{ s: number; n: number; p99: number; max: number }>
}

/** How much memory a committed heap must give back in one major collection to count as a compaction (V8's memory reducer). */
const COMPACTION_MIB = 80

const [resultFile, probeDir] = process.argv.slice(2)
if (resultFile === undefined || probeDir === undefined) {
  process.stderr.write('usage: tail-by-second.ts RESULT.json PROBE_DIR\n')
  process.exit(2)
}
const doc = JSON.parse(readFileSync(resultFile, 'utf8')) as { results?: RunResult[] } | RunResult
const results = 'results' in doc && doc.results !== undefined ? doc.results : [doc as RunResult]
const probes = readdirSync(probeDir).filter((f) => f.endsWith('.jsonl')).map((f) => ({
  file: f,
  lines: readFileSync(join(probeDir, f), 'utf8').trim().split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as ProbeLine)
}))
/** The line that covers second t: a starved process's timer may skip a second, and its next line then covers both. */
const at = (lines: ProbeLine[], t: number): ProbeLine | undefined => lines.find((l) => l.t >= t && l.t <= t + 2)
const pad = (x: unknown, n: number): string => String(x).padStart(n)
/** The gauge's pace in the second (probes from before it was recorded: blank): one figure, or its least-most. */
const paceText = (l: ProbeLine): string => (l.paceMaxMs === undefined ? '' : l.paceMinMs === l.paceMaxMs ? String(l.paceMaxMs) : `${l.paceMinMs}-${l.paceMaxMs}`)

for (const r of results) {
  if (r.windowStartedAt === undefined) {
    process.stdout.write(`${r.label}: no windowStartedAt (a run from before loop-probe.ts)\n`)
    continue
  }
  const t0 = Math.floor(r.windowStartedAt / 1000)
  const live = (f: { lines: ProbeLine[] }): boolean => f.lines.some((l) => l.t >= t0 && l.t <= t0 + 30)
  const supernodes = probes.filter((p) => p.file.includes('supernode') && live(p))
  const generators = probes.filter((p) => p.file.includes('scheduler-peers') && live(p))
  process.stdout.write(`${r.label}: get-parents p50 ${r.parentsP50Ms} ms, p99 ${r.parentsP99Ms} ms; generators' own loop lag p99 ${r.generatorsLoopLagP99Ms ?? '?'} ms, max ${r.generatorsLoopLagMaxMs ?? '?'} ms\n`)
  process.stdout.write(' s     n   p99   max | supernode: lag max  elu  GC ms (longest)  polls (most in 100 ms)  pace ms | generators: lag max each\n')
  let sum = { n: 0, snLag: 0, seconds: 0 }
  const burst = { polls: 0, peaks: 0 }
  for (const b of r.parentsBySecond) {
    // A probe line stamped t covers the second that ends at t.
    const t = t0 + b.s + 1
    const sn = supernodes.map((p) => at(p.lines, t)).find((l) => l !== undefined)
    const gens = generators.map((p) => at(p.lines, t)?.lagMaxMs ?? '-')
    const snText = sn === undefined ? `${pad('-', 17)}` : `${pad(sn.lagMaxMs, 8)} ${pad(sn.elu.toFixed(2), 5)} ${pad(sn.gcMs, 5)} (${sn.gcMaxMs}${sn.gcKinds.major !== undefined ? ' major' : ''}) ${pad(sn.polls ?? '', 6)} (${sn.pollsMax100ms ?? ''}) ${pad(paceText(sn), 10)}`
    process.stdout.write(`${pad(b.s, 2)} ${pad(b.n, 5)} ${pad(Math.round(b.p99), 5)} ${pad(Math.round(b.max), 5)} | ${snText} | ${gens.join(' ')}\n`)
    sum = { n: sum.n + b.n, snLag: sum.snLag + (sn?.lagMaxMs ?? 0), seconds: sum.seconds + 1 }
  }
  // Each supernode's probe lines of the counted window.
  const end = t0 + 1 + (r.parentsBySecond.at(-1)?.s ?? 0)
  const windows = supernodes.map((p) => p.lines.filter((x) => x.t > t0 && x.t <= end))
  // How bunched the polls reached the supernode, whatever the machine's load: the busiest
  // 100 ms of each second of the window, summed, against a tenth of the polls (1: even).
  for (const lines of windows) {
    for (const l of lines) {
      burst.polls += l.polls ?? 0
      burst.peaks += l.pollsMax100ms ?? 0
    }
  }
  if (burst.polls > 0) process.stdout.write(`polls reaching the supernode in the window: ${burst.polls}; busiest 100 ms of each second against an even spread: ${(burst.peaks / (burst.polls / 10)).toFixed(2)}×\n`)
  for (const lines of windows) heapLine(lines, r.pieceReportsPerS)
  const counts = r.parentsBySecond.map((b) => b.n)
  const mean = sum.n / Math.max(1, counts.length)
  const sd = Math.sqrt(counts.reduce((a, c) => a + (c - mean) ** 2, 0) / Math.max(1, counts.length))
  process.stdout.write(`timed calls per second: mean ${mean.toFixed(0)}, spread (sd / mean) ${(sd / Math.max(1, mean)).toFixed(2)}; seconds with none: ${r.parentsBySecond.length === 0 ? '-' : r.parentsBySecond.at(-1)!.s + 1 - counts.length}\n\n`)
}

/**
 * The supernode's old space over the window: how fast it grew between major collections (what
 * outlived the young generation, per second and per 1,000 reports acknowledged), its major
 * collections, and those in whose second the committed heap fell by COMPACTION_MIB or more:
 * V8's memory reducer compacting the heap a burst left large (bench/README.md).
 */
function heapLine(lines: ProbeLine[], reportsPerS: number | undefined): void {
  if (lines.length < 2 || lines.some((l) => l.oldUsedMiB === undefined || l.heapTotalMiB === undefined)) return
  let grew = 0
  let seconds = 0
  let majors = 0
  let longest = 0
  const compactions: string[] = []
  for (let i = 1; i < lines.length; i++) {
    const l = lines[i]
    if (l.gcKinds.major === undefined) {
      grew += l.oldUsedMiB! - lines[i - 1].oldUsedMiB!
      seconds += l.t - lines[i - 1].t
      continue
    }
    majors++
    longest = Math.max(longest, l.gcMaxMs)
    const fell = lines[i - 1].heapTotalMiB! - l.heapTotalMiB!
    if (fell >= COMPACTION_MIB) compactions.push(`${l.gcKinds.major} ms, committed ${lines[i - 1].heapTotalMiB} → ${l.heapTotalMiB} MiB, the loop ${l.lagMaxMs} ms late`)
  }
  const perS = grew / Math.max(1, seconds)
  const perReports = reportsPerS === undefined || reportsPerS <= 0 ? '' : ` (${((perS * 1024) / (reportsPerS / 1000)).toFixed(1)} KiB per 1,000 reports)`
  process.stdout.write(`supernode old space: grew ${perS.toFixed(2)} MiB/s between major collections${perReports}; ${majors} major collections, longest pause ${longest} ms; compactions: ${compactions.length === 0 ? 'none' : compactions.join('; ')}\n`)
}
