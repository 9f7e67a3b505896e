// The per-piece timeline of a cold pull, from the debug logs `proxy-overhead.ts --timeline DIR`
// keeps: when the seed had each piece from the origin, when the daemon asked for it, when the
// seed began and finished sending it, and when the daemon stored it (all in ms from the
// client's GET), with the daemon's get_parents answers and its longest idle gaps.
//
//   node bench/timeline-summary.ts DIR [RUN]     (RUN: 0 unless given)

import { readFileSync } from 'node:fs'
import { join } from 'node:path'

import { jsonLines } from './report/helpers.ts'

interface Line { msg?: string; time: number; piece?: number; ms?: number; receivedAt?: number; have?: number; inflight?: number; sourceOffers?: number; err?: string }

const lines = (path: string): Line[] => jsonLines<Line>(path)

const [dir, run = '0'] = process.argv.slice(2)
if (dir === undefined) {
  process.stderr.write('usage: node bench/timeline-summary.ts DIR [RUN]\n')
  process.exit(2)
}
const cold = JSON.parse(readFileSync(join(dir, `${run}-cold.json`), 'utf8')) as { startMs: number; endMs: number }
const at = (t: number): number => t - cold.startMs
const origin = new Map<number, number>()
const sent = new Map<number, { received: number; sent: number }>()
for (const e of lines(join(dir, `${run}-supernode.log`))) {
  if (e.msg === 'origin piece stored') origin.set(e.piece!, at(e.time))
  if (e.msg === 'piece sent') sent.set(e.piece!, { received: at(e.receivedAt!), sent: at(e.time) })
}
const stored = new Map<number, { requested: number; stored: number }>()
const polls: string[] = []
for (const e of lines(join(dir, `${run}-daemon.log`))) {
  if (e.msg === 'piece stored') stored.set(e.piece!, { requested: at(e.time - e.ms!), stored: at(e.time) })
  if (e.msg === 'parents') polls.push(`${at(e.time)} ms: have ${e.have}, in flight ${e.inflight}, seed offers ${e.sourceOffers}`)
  if (e.msg === 'getParents failed; keeping the parents we have') polls.push(`${at(e.time)} ms: refused (${e.err})`)
}

const pieces = [...origin.keys()].sort((a, b) => a - b)
const out: string[] = [`cold pull ${cold.endMs - cold.startMs} ms; ${pieces.length} pieces from the origin, the first stored at ${origin.get(pieces[0])} ms, the last at ${origin.get(pieces.at(-1)!)} ms`, '']
out.push('| piece | seed: from origin | daemon: asked | seed: began sending | seed: sent | daemon: stored |', '|---:|---:|---:|---:|---:|---:|')
const step = Math.max(1, Math.floor(pieces.length / 16))
for (const n of pieces) {
  if (n % step !== 0 && n !== pieces.at(-1)) continue
  const s = sent.get(n)
  const d = stored.get(n)
  out.push(`| ${n} | ${origin.get(n)} | ${d?.requested ?? '-'} | ${s?.received ?? '-'} | ${s?.sent ?? '-'} | ${d?.stored ?? '-'} |`)
}
// Idle: a gap between one store and the next request while nothing else was asked for.
const byRequest = [...stored.values()].sort((a, b) => a.requested - b.requested)
const gaps: Array<[number, number]> = []
let inflightUntil = 0
for (const p of byRequest) {
  if (p.requested > inflightUntil && inflightUntil > 0) gaps.push([inflightUntil, p.requested])
  inflightUntil = Math.max(inflightUntil, p.stored)
}
const late = pieces.filter((n) => (stored.get(n)?.requested ?? 0) > origin.get(n)!)
const queued = pieces.map((n) => (sent.get(n)?.received ?? 0) - Math.max(origin.get(n)!, stored.get(n)?.requested ?? 0)).filter((ms) => ms > 0)
out.push('', `daemon idle (nothing asked for): ${gaps.map(([a, b]) => `${a}–${b} ms`).join(', ') || 'never'}`)
out.push(`pieces asked for only after the seed had them from the origin: ${late.length}`)
out.push(`pieces that waited in the seed's queue after both the origin and the request: ${queued.length}, longest ${Math.max(0, ...queued)} ms`)
out.push('', 'get_parents:', ...polls.map((p) => `  ${p}`))
process.stdout.write(`${out.join('\n')}\n`)
