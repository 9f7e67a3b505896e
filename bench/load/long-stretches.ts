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

import { indexProfile, label, type CpuProfile } from '../cpuprofile-summary.ts'

export type { CpuProfile }

export interface Stretch {
  /** Seconds from the profile's start. */
  atS: number
  spanMs: number
  samples: number
  /** Share of a core the process had in it (0..1): samples × the usual interval over the span. */
  share: number
  /** The call paths its samples were in (first frames of each), the most frequent first, with their share of its samples (0..1). */
  paths: Array<{ path: string; share: number }>
}

export interface Stretches {
  /** The profile's usual sampling interval (the median of its deltas), ms. */
  usualMs: number
  spanS: number
  stretches: Stretch[]
}

/** The busy stretches of `profile` of at least `minMs`, each with its `top` most frequent paths. */
export function longStretches(profile: CpuProfile, minMs: number, top = 3): Stretches {
  const { byId, parent } = indexProfile(profile)
  /** The first frames of the sample's path from the root (the root's own frame left out): which callback of the loop, and what it was doing. */
  const path = (id: number): string => {
    const out: string[] = []
    for (let x: number | undefined = id; x !== undefined && parent.has(x); x = parent.get(x)) {
      const caller = parent.get(x)
      out.push(label(byId.get(x)!.callFrame, caller === undefined ? undefined : byId.get(caller)!.callFrame))
    }
    return out.reverse().slice(0, 6).join(' > ')
  }
  const idle = (id: number): boolean => ['(idle)', '(program)'].includes(byId.get(id)!.callFrame.functionName)

  const times: number[] = []
  let t = profile.startTime
  for (const d of profile.timeDeltas) times.push((t += d))
  const sortedDeltas = profile.timeDeltas.slice(1).sort((a, b) => a - b)
  const usualUs = sortedDeltas[Math.floor(sortedDeltas.length / 2)] ?? 1000

  const stretches: Stretch[] = []
  for (let i = 0; i < times.length;) {
    if (idle(profile.samples[i])) {
      i++
      continue
    }
    let j = i
    while (j + 1 < times.length && !idle(profile.samples[j + 1])) j++
    // Each sample stands for the interval up to it, the first one's included.
    const spanUs = times[j] - times[i] + usualUs
    if (spanUs >= minMs * 1000) {
      const counts = new Map<string, number>()
      for (let k = i; k <= j; k++) {
        const key = path(profile.samples[k])
        counts.set(key, (counts.get(key) ?? 0) + 1)
      }
      const n = j - i + 1
      stretches.push({
        atS: (times[i] - profile.startTime) / 1e6,
        spanMs: spanUs / 1000,
        samples: n,
        share: Math.min(1, (n * usualUs) / spanUs),
        paths: [...counts].sort((a, b) => b[1] - a[1]).slice(0, top).map(([p, c]) => ({ path: p, share: c / n }))
      })
    }
    i = j + 1
  }
  return { usualMs: usualUs / 1000, spanS: (t - profile.startTime) / 1e6, stretches }
}

if (import.meta.main) {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: { min: { type: 'string', default: '50' }, top: { type: 'string', default: '3' } }
  })
  const file = positionals[0]
  if (file === undefined) {
    process.stderr.write('usage: node bench/load/long-stretches.ts FILE.cpuprofile [--min MS] [--top N]\n')
    process.exit(2)
  }
  const found = longStretches(JSON.parse(readFileSync(file, 'utf8')) as CpuProfile, Number(values.min), Number(values.top))
  for (const s of found.stretches) {
    console.log(`${s.atS.toFixed(2)} s: busy ${s.spanMs.toFixed(0)} ms, ${s.samples} samples, ${(s.share * 100).toFixed(0)} % of a core`)
    for (const p of s.paths) console.log(`  ${String(Math.round(p.share * 100)).padStart(3)} %  ${p.path}`)
  }
  const oneTask = found.stretches.filter((s) => s.paths[0].share >= 0.8).length
  console.log(`${found.stretches.length} stretches of ${values.min} ms or more in ${found.spanS.toFixed(1)} s (sampling every ${found.usualMs.toFixed(2)} ms); ${oneTask} spent 80 % or more of their samples on one path`)
}
