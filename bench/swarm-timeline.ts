// Where a swarm-pull trial's time goes, from the logs `swarm-pull.ts --dir DIR --log-level
// debug` keeps: per host, each millisecond of its download as start-up (the task began, no
// fetch yet), nothing in flight, waiting (fetches in flight, none answered yet: queued behind
// other pieces at the parent, or a live piece the seed has not read yet), receiving, and
// after its last piece; how long answers took, by kind of parent; the seed's origin read;
// and per 500 ms the bytes the hosts stored, the pieces the seed held, and how busy the
// machine's cores were (LABEL-cores.jsonl, written by the same run).
//
//   node bench/swarm-timeline.ts DIR [LABEL]     (LABEL: naiad-16-0 unless given)

import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'

import { jsonLines } from './report/helpers.ts'

interface Line {
  msg?: string
  time: number
  module?: string
  peerId?: string
  piece?: number
  parent?: string
  live?: boolean
  ms?: number
  headerMs?: number
}

const lines = (path: string): Line[] => jsonLines<Line>(path)

const [dir, label = 'naiad-16-0'] = process.argv.slice(2)
if (dir === undefined) {
  process.stderr.write('usage: node bench/swarm-timeline.ts DIR [LABEL]\n')
  process.exit(2)
}
const hosts = readdirSync(dir).filter((f) => f.startsWith(`${label}-h`) && f.endsWith('.log'))
  .map((f) => f.slice(label.length + 1, -4)).sort((a, b) => Number(a.slice(1)) - Number(b.slice(1)))
const sn = lines(join(dir, `${label}-supernode.log`))
const logs = new Map(hosts.map((h) => [h, lines(join(dir, `${label}-${h}.log`))]))
const nameOf = new Map<string, string>([[sn.find((e) => e.msg === 'supernode ready')?.peerId ?? '', 'seed']])
for (const [h, ls] of logs) nameOf.set(ls.find((e) => e.msg === 'dfdaemon ready')?.peerId ?? '', h)
const completeOf = (ls: Line[]): Line => {
  const d = ls.find((e) => e.msg === 'download complete' && e.module !== 'seed')
  if (d === undefined) throw new Error('a daemon log without "download complete": was the run at --log-level debug, and did it finish?')
  return d
}
/** 0: the first daemon's download began. */
const t0 = Math.min(...hosts.map((h) => { const d = completeOf(logs.get(h)!); return d.time - d.ms! }))
const at = (t: number): number => t - t0

const origin = sn.filter((e) => e.msg === 'origin piece stored').map((e) => at(e.time)).sort((a, b) => a - b)
const seedRead = sn.find((e) => e.msg === 'download complete' && e.module === 'seed')
const q = (p: number): number => origin[Math.min(origin.length - 1, Math.floor(p * origin.length))]
if (origin.length > 0) console.log(`seed: first origin piece at ${origin[0]} ms, half at ${q(0.5)}, last at ${origin[origin.length - 1]} (its read took ${seedRead?.ms ?? '?'} ms)`)

interface Fetch { parent: string; live: boolean; from: number; answered: number; to: number; headerMs: number }
const kinds = { seed: [] as Fetch[], 'seed, asked live': [] as Fetch[], peer: [] as Fetch[] }
const totals = { span: 0, startup: 0, idle: 0, waiting: 0, receiving: 0, after: 0 }
const stored: number[] = []
console.log('\nper host, ms from the first download\'s start:')
for (const h of hosts) {
  const ls = logs.get(h)!
  const done = completeOf(ls)
  const start = at(done.time - done.ms!)
  const end = at(done.time)
  const fetches: Fetch[] = ls.filter((e) => e.msg === 'piece stored').map((e) => ({
    parent: nameOf.get(e.parent!) ?? '?',
    live: e.live === true,
    from: at(e.time - e.ms!),
    answered: at(e.time - e.ms! + Math.max(0, e.headerMs ?? 0)),
    to: at(e.time),
    headerMs: e.headerMs ?? -1
  }))
  if (fetches.length === 0) continue
  for (const f of fetches) {
    kinds[f.parent === 'seed' ? (f.live ? 'seed, asked live' : 'seed') : 'peer'].push(f)
    stored.push(f.to)
  }
  const first = Math.min(...fetches.map((f) => f.from))
  const last = Math.max(...fetches.map((f) => f.to))
  // A sweep over the fetches' edges: in flight, and answered (bytes may flow).
  const edges: Array<[number, number, number]> = []
  for (const f of fetches) edges.push([f.from, 1, 0], [f.answered, 0, 1], [f.to, -1, -1])
  edges.sort((a, b) => a[0] - b[0])
  const c = { startup: first - start, idle: 0, waiting: 0, receiving: 0, after: end - last }
  let inflight = 0
  let answered = 0
  let prev = first
  for (const [t, di, da] of edges) {
    const span = t - prev
    if (span > 0) {
      if (inflight === 0) c.idle += span
      else if (answered === 0) c.waiting += span
      else c.receiving += span
    }
    inflight += di
    answered += da
    prev = t
  }
  totals.span += end - start
  for (const k of ['startup', 'idle', 'waiting', 'receiving', 'after'] as const) totals[k] += c[k]
  console.log(`${h.padEnd(4)} ${start}..${end} (${end - start}): start-up ${c.startup}, nothing in flight ${c.idle}, waiting ${c.waiting}, receiving ${c.receiving}, after the last piece ${c.after}`)
}
const pct = (x: number): string => `${x} (${(100 * x / totals.span).toFixed(1)} %)`
console.log(`all hosts, ${totals.span} host-ms: start-up ${pct(totals.startup)}, nothing in flight ${pct(totals.idle)}, waiting ${pct(totals.waiting)}, receiving ${pct(totals.receiving)}, after the last piece ${pct(totals.after)}`)

const stats = (xs: number[]): string => {
  if (xs.length === 0) return '-'
  const s = [...xs].sort((a, b) => a - b)
  return `median ${s[Math.floor(s.length / 2)]}, p90 ${s[Math.floor(s.length * 0.9)]}, max ${s[s.length - 1]}`
}
console.log('\nfetches by parent: request to answer (the piece header), answer to stored, ms')
for (const [k, fs] of Object.entries(kinds)) console.log(`${k}: ${fs.length} pieces; to answer ${stats(fs.map((f) => f.headerMs))}; to stored ${stats(fs.map((f) => f.to - f.answered))}`)

// The machine's cores, per 500 ms, beside what the swarm stored.
const coresPath = join(dir, `${label}-cores.jsonl`)
const cores = existsSync(coresPath)
  ? readFileSync(coresPath, 'utf8').split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as { at: number; idleS: number; busyS: number })
  : []
// Without debug lines (no pieces), up to the last daemon's completion.
const end = stored.length > 0 ? Math.max(...stored) : Math.max(...hosts.map((h) => at(completeOf(logs.get(h)!).time)))
console.log(`\nper 500 ms: pieces the hosts stored (Mbit/s with 1 MiB pieces), pieces the seed held${cores.length > 0 ? ', cores busy (of the machine\'s)' : ' (no cores file: a run before it was written)'}`)
let idleS = 0
let coreS = 0
for (let t = 0; t < end + 500; t += 500) {
  const n = stored.filter((s) => s >= t && s < t + 500).length
  const held = origin.filter((o) => o < t + 500).length
  let busy = ''
  const a = cores.find((c) => at(c.at) >= t)
  const b = cores.find((c) => at(c.at) >= t + 500)
  if (a !== undefined && b !== undefined && b.at > a.at) {
    const idle = b.idleS - a.idleS
    const total = idle + b.busyS - a.busyS
    idleS += idle
    coreS += total
    busy = `  cores busy ${((b.busyS - a.busyS) / ((b.at - a.at) / 1000)).toFixed(2)}`
  }
  console.log(`${String(t).padStart(6)}  stored ${String(n).padStart(3)} (${String(Math.round(n * 8 * 1.048576 * 2)).padStart(4)} Mbit/s)  seed held ${String(held).padStart(3)}${busy}`)
}
if (coreS > 0) console.log(`cores idle ${idleS.toFixed(1)} of ${coreS.toFixed(1)} core-s (${(100 * idleS / coreS).toFixed(0)} %) from the first download's start to the last piece stored`)
