// What a process did when its event loop ran late: the long busy stretches of a V8
// .cpuprofile (scheduler-scale --profile keeps the supernode's as OUT-LABEL.cpuprofile).
//
//   node bench/load/long-stretches.ts FILE.cpuprofile [--min 50] [--top 3]
//
// A busy stretch is a run of consecutive samples none of which is idle: the loop went from
// one callback to the next without waiting. For each stretch of at least --min ms it prints
// its span, its samples, how much of a core the process had in it (samples × the profile's
// usual interval over the span: the sampler runs only while the process does, so a process
// held off the CPU by others takes fewer samples than its span allows), and the call paths
// most of its samples were in. One long task shows as one path in nearly every sample; a
// backlog of many small calls as the usual paths of the work, shared out.

import { readFileSync } from 'node:fs'
import { parseArgs } from 'node:util'

interface CallFrame { functionName: string; url: string; lineNumber: number }
interface ProfileNode { id: number; callFrame: CallFrame; children?: number[] }
interface CpuProfile { nodes: ProfileNode[]; startTime: number; samples: number[]; timeDeltas: number[] }

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { min: { type: 'string', default: '50' }, top: { type: 'string', default: '3' } }
})
const file = positionals[0]
if (file === undefined) {
  process.stderr.write('usage: node bench/load/long-stretches.ts FILE.cpuprofile [--min MS] [--top N]\n')
  process.exit(2)
}
const minUs = Number(values.min) * 1000
const top = Number(values.top)
const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile

const byId = new Map<number, ProfileNode>()
const parentOf = new Map<number, number>()
for (const n of profile.nodes) {
  byId.set(n.id, n)
  for (const c of n.children ?? []) parentOf.set(c, n.id)
}
const frameName = (id: number): string => {
  const f = byId.get(id)!.callFrame
  const where = f.url.replace(/^.*node_modules\//, '').replace(/^file:\/\/.*?\/(bench|proto|peer|supernode|dfdaemon)\//, '$1/')
  return `${f.functionName === '' ? '(anonymous)' : f.functionName} ${where}:${f.lineNumber + 1}`
}
/** The sample's path from the root, the root's own frame left out. */
const path = (id: number): string[] => {
  const out: string[] = []
  for (let x: number | undefined = id; x !== undefined && parentOf.has(x); x = parentOf.get(x)) out.push(frameName(x))
  return out.reverse()
}
const idle = (id: number): boolean => ['(idle)', '(program)'].includes(byId.get(id)!.callFrame.functionName)

const times: number[] = []
let t = profile.startTime
for (const d of profile.timeDeltas) times.push((t += d))
const sortedDeltas = profile.timeDeltas.slice(1).sort((a, b) => a - b)
const usualUs = sortedDeltas[Math.floor(sortedDeltas.length / 2)] ?? 1000

let stretches = 0
let oneTask = 0
for (let i = 0; i < times.length;) {
  if (idle(profile.samples[i])) {
    i++
    continue
  }
  let j = i
  while (j + 1 < times.length && !idle(profile.samples[j + 1])) j++
  const spanUs = times[j] - times[i] + usualUs
  if (spanUs >= minUs) {
    stretches++
    const counts = new Map<string, number>()
    for (let k = i; k <= j; k++) {
      // The first frames of the path: which callback of the loop, and what it was doing.
      const key = path(profile.samples[k]).slice(0, 6).join(' > ')
      counts.set(key, (counts.get(key) ?? 0) + 1)
    }
    const n = j - i + 1
    const ranked = [...counts].sort((a, b) => b[1] - a[1])
    if (ranked[0][1] >= 0.8 * n) oneTask++
    const share = Math.min(1, (n * usualUs) / spanUs)
    console.log(`${((times[i] - profile.startTime) / 1e6).toFixed(2)} s: busy ${(spanUs / 1000).toFixed(0)} ms, ${n} samples, ${(share * 100).toFixed(0)} % of a core`)
    for (const [key, c] of ranked.slice(0, top)) console.log(`  ${String(Math.round((100 * c) / n)).padStart(3)} %  ${key}`)
  }
  i = j + 1
}
console.log(`${stretches} stretches of ${values.min} ms or more in ${((t - profile.startTime) / 1e6).toFixed(1)} s (sampling every ${(usualUs / 1000).toFixed(2)} ms); ${oneTask} spent 80 % or more of their samples on one path`)
