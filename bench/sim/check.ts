// The simulation against the real netns swarm: runs scenarios/swarm-pull.ts (or reads its
// results) and simulates each Naiad trial with the same hosts, blob and links, every process
// on the machine's cores, and prints prediction and measurement side by side.
//
//   sudo node bench/sim/check.ts --run                          # swarm-pull --hosts 4,8 --size 64MiB --host-bandwidth 100, then the check
//   node bench/sim/check.ts --swarm bench/results/swarm-pull.json

import { spawn } from 'node:child_process'
import { readFile } from 'node:fs/promises'
import { cpus } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'

import { formatBytes } from '@naiad/proto'

import { parseCommandLine, usageFailer } from '../report/cli.ts'
import type { Trial } from '../scenarios/swarm-pull.ts'
import { median, writeResults } from '../report/helpers.ts'
import { MEASURED, type Costs } from './costs.ts'
import { simulate, type RolloutResult } from './world.ts'

const RESULTS = fileURLToPath(new URL('../results/', import.meta.url))
const SWARM = fileURLToPath(new URL('../scenarios/swarm-pull.ts', import.meta.url))

const USAGE = `usage: node bench/sim/check.ts [options]
  --run                    run scenarios/swarm-pull.ts first (needs root), with:
  --hosts LIST             (default 4,8)
  --size SIZE              (default 64MiB)
  --host-bandwidth MBIT    (default 100)
  --swarm FILE             swarm-pull results to check against (default: the run's, or bench/results/swarm-pull.json)
  --costs FILE             JSON overriding measured costs (bench/sim/costs.ts)
  --out PREFIX             results: PREFIX.json, PREFIX.md (default bench/results/sim-check)`

const usageError = usageFailer('sim-check', USAGE)
const args = parseCommandLine(USAGE, usageError, () => parseArgs({
  options: {
    run: { type: 'boolean', default: false },
    hosts: { type: 'string', default: '4,8' },
    size: { type: 'string', default: '64MiB' },
    'host-bandwidth': { type: 'string', default: '100' },
    swarm: { type: 'string' },
    costs: { type: 'string' },
    out: { type: 'string', default: join(RESULTS, 'sim-check') },
    help: { type: 'boolean', short: 'h', default: false }
  }
}).values)

interface SwarmResults { size: number; hostMbit: number; registryMbit: number; supernodeMbit: number; cpus: number; trials: Trial[] }

let file = args.swarm ?? join(RESULTS, 'swarm-pull.json')
if (args.run) {
  file = join(RESULTS, 'swarm-pull-check.json')
  const out = file.replace(/\.json$/, '')
  const code = await new Promise<number | null>((resolve) => {
    spawn(process.execPath, [SWARM, '--hosts', args.hosts, '--size', args.size, '--host-bandwidth', args['host-bandwidth'], '--out', out], { stdio: 'inherit' }).once('exit', resolve)
  })
  if (code !== 0) usageError(`swarm-pull exited with ${code}`)
}
const swarm = JSON.parse(await readFile(file, 'utf8')) as SwarmResults
const costs: Costs = { ...MEASURED, ...(args.costs === undefined ? {} : JSON.parse(await readFile(args.costs, 'utf8')) as Partial<Costs>) }
const cores = swarm.cpus ?? cpus().length
const mbit = (m: number): number => m * 1e6 / 8

interface Row { hosts: number; measured: Trial; startS: number; idle: RolloutResult; left: RolloutResult; coresLeft: number }
const rows: Row[] = []
for (const t of swarm.trials.filter((x) => x.method === 'naiad')) {
  // The client's own start-up (dfget is a Node process) as the trial measured it.
  const startS = median(t.times.map((x, i) => x - t.clientTimes[i]))
  // Cores the trial had: the machine's, less what other processes took meanwhile.
  const coresLeft = Math.max(0.25, cores - t.otherCpuS / t.maxS)
  const run = (shared: number): RolloutResult => simulate({
    nodes: t.hosts, layers: [swarm.size], supernodes: 1, hostBandwidth: mbit(swarm.hostMbit), registryBandwidth: mbit(swarm.registryMbit),
    supernodeBandwidth: mbit(swarm.supernodeMbit), hostCores: 1, supernodeCores: 1, sharedCores: shared, rampS: 0, old: false, seed: 1,
    costs: { ...costs, startS }, limitS: 3600
  })
  rows.push({ hosts: t.hosts, measured: t, startS, idle: run(cores), left: run(coresLeft), coresLeft })
}

const f = (x: number): string => x.toFixed(2)
const lines = [
  `## The simulation against the netns swarm: ${formatBytes(swarm.size)} blob, hosts at ${swarm.hostMbit} Mbit/s, registry ${swarm.registryMbit} Mbit/s, supernode ${swarm.supernodeMbit} Mbit/s`,
  '',
  `Measured: scenarios/swarm-pull.ts (${file.replace(`${RESULTS}`, 'bench/results/')}), every process on the machine's ${cores} cores. Predicted: bench/sim with the measured costs, each node's client start-up as the trial measured it, on all ${cores} cores (an idle machine) and on the cores other processes left the trial.`,
  '',
  '| hosts | measured median / max s | predicted, idle machine | ratio (max) | predicted, cores left | cores left | ratio (max) | origin egress measured / predicted |',
  '|---:|---:|---:|---:|---:|---:|---:|---:|'
]
for (const r of rows) {
  lines.push(`| ${r.hosts} | ${f(r.measured.medianS)} / ${f(r.measured.maxS)} | ${f(r.idle.completionS.p50)} / ${f(r.idle.completionS.max)} | ${f(r.idle.completionS.max / r.measured.maxS)} | ${f(r.left.completionS.p50)} / ${f(r.left.completionS.max)} | ${f(r.coresLeft)} | ${f(r.left.completionS.max / r.measured.maxS)} | ${formatBytes(r.measured.originEgress)} / ${formatBytes(r.left.registryEgressBytes)} |`)
}
lines.push('', `Client start-up added per node: ${rows.map((r) => `N=${r.hosts} ${f(r.startS)} s`).join(', ')}. Daemon CPU-s in the trials: ${rows.map((r) => `N=${r.hosts} ${r.measured.cpu?.daemons ?? '?'} (supernode ${r.measured.cpu?.supernode ?? '?'})`).join(', ')}.`, '')
const md = lines.join('\n')
process.stdout.write(`${md}\n`)
await writeResults(args.out, 'sim-check', { swarm: file, costs, rows: rows.map((r) => ({ hosts: r.hosts, startS: r.startS, coresLeft: r.coresLeft, measured: { medianS: r.measured.medianS, maxS: r.measured.maxS, originEgress: r.measured.originEgress }, idle: r.idle, left: r.left })) }, md)
