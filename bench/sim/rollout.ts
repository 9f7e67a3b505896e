// Discrete-event simulation of a rollout: N nodes pull an image through K supernodes, with
// the per-call costs of the scheduler and the per-byte costs of the data path measured on the
// real code (costs.ts). Predicts the time to full rollout and the registry's egress.
//
//   node bench/sim/rollout.ts                                   # 10,000 nodes, 2 GiB in 4 layers, 1 supernode
//   node bench/sim/rollout.ts --supernodes 1,3 --old            # also the scheduler before issue 15
//   node bench/sim/rollout.ts --nodes 8 --size 64MiB --layers 1 --host-bandwidth 100 --shared-cores 2
//
// bench/sim/check.ts puts its predictions beside the real netns swarm (scenarios/swarm-pull.ts).

import { readFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import { join } from 'node:path'
import { parseArgs } from 'node:util'

import { formatBytes, parseDuration, parseSize } from '@naiad/proto'

import { parseCommandLine, usageFailer } from '../report/cli.ts'
import { writeResults } from '../report/helpers.ts'
import { MEASURED, type Costs } from './costs.ts'
import { simulate, type RolloutOptions, type RolloutResult } from './world.ts'

const RESULTS = fileURLToPath(new URL('../results/', import.meta.url))

const USAGE = `usage: node bench/sim/rollout.ts [options]
  --nodes N                    daemons pulling the image (default 10000)
  --size SIZE                  image size (default 2GiB)
  --layers N                   tasks the image is cut into, equal sizes (default 4)
  --supernodes LIST            numbers of supernodes to simulate, comma-separated (default 1)
  --host-bandwidth MBIT        each node's link, each direction (default 1000)
  --registry-bandwidth MBIT    the registry's uplink (default 10000)
  --supernode-bandwidth MBIT   each supernode's link (default 10000)
  --host-cores N               cores a daemon spends on transfers (default 1: one Node event loop)
  --shared-cores N             every process shares N cores (the test machine); 0: each its own (default 0)
  --ramp DURATION              daemons start spread over this long (default 0s: all at once)
  --stall DURATION             the daemons' download.stall-timeout (default 10s)
  --max-pace DURATION          the supernodes' pace ceiling (PressureGauge maxPaceMs; default the supernode's, 15s)
  --progress DURATION          print a line of the simulated state to stderr every DURATION of simulated time
  --old                        also simulate the scheduler before issue 15 (no pace, getParents reading every peer)
  --costs FILE                 JSON overriding measured costs (keys of bench/sim/costs.ts)
  --limit DURATION             simulated time after which a run stops (default 2h)
  --seed N                     random seed (default 1)
  --out PREFIX                 results: PREFIX.json, PREFIX.md (default bench/results/rollout-sim)`

const usageError = usageFailer('rollout-sim', USAGE)

const args = parseCommandLine(USAGE, usageError, () => parseArgs({
  options: {
    nodes: { type: 'string', default: '10000' },
    size: { type: 'string', default: '2GiB' },
    layers: { type: 'string', default: '4' },
    supernodes: { type: 'string', default: '1' },
    'host-bandwidth': { type: 'string', default: '1000' },
    'registry-bandwidth': { type: 'string', default: '10000' },
    'supernode-bandwidth': { type: 'string', default: '10000' },
    'host-cores': { type: 'string', default: '1' },
    'shared-cores': { type: 'string', default: '0' },
    ramp: { type: 'string', default: '0s' },
    'max-pace': { type: 'string' },
    progress: { type: 'string' },
    stall: { type: 'string' },
    old: { type: 'boolean', default: false },
    costs: { type: 'string' },
    limit: { type: 'string', default: '2h' },
    seed: { type: 'string', default: '1' },
    out: { type: 'string', default: join(RESULTS, 'rollout-sim') },
    help: { type: 'boolean', short: 'h', default: false }
  }
}).values)

const num = (v: string, flag: string, min = 0): number => {
  const n = Number(v)
  if (!Number.isFinite(n) || n < min) usageError(`${flag} must be a number ≥ ${min}, not ${v}`)
  return n
}
const mbit = (v: string, flag: string): number => num(v, flag, 0.001) * 1e6 / 8

let size = 0
let rampS = 0
let limitS = 0
let maxPaceMs: number | undefined
let stallS: number | undefined
let progressS: number | undefined
try {
  size = parseSize(args.size, '--size')
  rampS = parseDuration(args.ramp, '--ramp') / 1000
  limitS = parseDuration(args.limit, '--limit') / 1000
  if (args['max-pace'] !== undefined) maxPaceMs = parseDuration(args['max-pace'], '--max-pace')
  if (args.stall !== undefined) stallS = parseDuration(args.stall, '--stall') / 1000
  if (args.progress !== undefined) progressS = parseDuration(args.progress, '--progress') / 1000
} catch (err) {
  usageError((err as Error).message)
}
const layers = num(args.layers, '--layers', 1)
const costs: Costs = { ...MEASURED, ...(args.costs === undefined ? {} : JSON.parse(await readFile(args.costs, 'utf8')) as Partial<Costs>) }
const base: Omit<RolloutOptions, 'supernodes' | 'old'> = {
  nodes: num(args.nodes, '--nodes', 1),
  layers: Array.from({ length: layers }, (_, k) => Math.floor(size / layers) + (k < size % layers ? 1 : 0)),
  hostBandwidth: mbit(args['host-bandwidth'], '--host-bandwidth'),
  registryBandwidth: mbit(args['registry-bandwidth'], '--registry-bandwidth'),
  supernodeBandwidth: mbit(args['supernode-bandwidth'], '--supernode-bandwidth'),
  hostCores: num(args['host-cores'], '--host-cores', 0.01),
  supernodeCores: 1,
  sharedCores: num(args['shared-cores'], '--shared-cores'),
  rampS,
  seed: num(args.seed, '--seed'),
  costs,
  limitS,
  ...(maxPaceMs === undefined ? {} : { maxPaceMs }),
  ...(stallS === undefined ? {} : { daemon: { stallS } }),
  ...(progressS === undefined ? {} : { progressS })
}

const runs: Array<{ label: string; r: RolloutResult }> = []
for (const k of args.supernodes.split(',').map((s) => num(s, '--supernodes', 1))) {
  for (const old of args.old ? [true, false] : [false]) {
    const label = `${k} supernode${k === 1 ? '' : 's'}${old ? ', scheduler before issue 15' : ''}`
    process.stderr.write(`simulating ${base.nodes} nodes, ${label}…\n`)
    const r = simulate({ ...base, supernodes: k, old })
    process.stderr.write(`  ${r.events.toLocaleString('en-US')} events in ${r.wallS} s\n`)
    runs.push({ label, r })
  }
}

const md = markdown()
process.stdout.write(`${md}\n`)
await writeResults(args.out, 'rollout-sim', { options: { ...base, costs }, runs }, md)
process.stderr.write(`wrote ${args.out}.json, .md\n`)

function markdown(): string {
  const image = base.layers.reduce((a, b) => a + b, 0)
  const limitAll = image / base.hostBandwidth
  const lines = [
    `## Rollout simulation: ${base.nodes.toLocaleString('en-US')} nodes, ${formatBytes(image)} in ${layers} layer${layers === 1 ? '' : 's'}`,
    '',
    `Links: hosts ${args['host-bandwidth']} Mbit/s, registry ${args['registry-bandwidth']} Mbit/s, supernodes ${args['supernode-bandwidth']} Mbit/s; ${base.sharedCores > 0 ? `every process on ${base.sharedCores} shared cores` : `${base.hostCores} core per daemon for transfers`}; daemons start ${rampS > 0 ? `over ${rampS} s` : 'at once'}${maxPaceMs === undefined ? '' : `; pace ceiling ${maxPaceMs} ms`}${stallS === undefined ? '' : `; stall timeout ${stallS} s`}. A host alone needs ${limitAll.toFixed(1)} s at its link rate.`,
    '',
    '| run | full rollout s | completion p50 / p90 s | registry egress | × image | daemons to the origin (tasks: registration / lost / stalled) | client timeouts | marked down | supernode CPU-s (utilisation) | max pace ms | max queue s | get-parents put off |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|'
  ]
  for (const { label, r } of runs) {
    const sn = r.perSupernode
    lines.push(`| ${label} | ${Number.isFinite(r.fullRolloutS) ? r.fullRolloutS.toFixed(1) : `not done (${r.finished} of ${r.nodes})`} | ${r.completionS.p50.toFixed(1)} / ${r.completionS.p90.toFixed(1)} | ${formatBytes(r.registryEgressBytes)} | ${(r.registryEgressBytes / image).toFixed(2)} | ${r.daemonsToOrigin} (${r.originTasks.registration} / ${r.originTasks.lost} / ${r.originTasks.stalled}) | ${r.clientTimeouts} | ${r.supernodeMarkedDown} | ${sn.map((s) => `${s.cpuS.toFixed(0)} (${(s.utilization * 100).toFixed(0)} %)`).join(', ')} | ${Math.max(...sn.map((s) => s.maxPaceMs))} | ${Math.max(...sn.map((s) => s.maxQueueS)).toFixed(2)} | ${sn.reduce((a, s) => a + s.deferred, 0)} |`)
  }
  lines.push('', `Costs (bench/sim/costs.ts${args.costs === undefined ? '' : ` with ${args.costs}`}): ${Object.entries(costs).map(([k, v]) => `${k} ${k.endsWith('ByteS') ? `${(v * 2 ** 30).toFixed(2)} s/GiB` : `${(v * 1000).toFixed(3)} ms`}`).join(', ')}.`, '')
  return lines.join('\n')
}
