// long-stretches.ts on a made-up profile: which runs of busy samples it reports, their span,
// the share of a core (fewer samples than the span allows: the process was held off the CPU),
// and the call paths in them.

import { describe, expect, it } from 'vitest'

import { longStretches, type CpuProfile } from '../load/long-stretches.ts'

/** A frame of this checkout's source (named from the checkout's root, as cpuprofile-summary's label does) unless given a URL. */
const ROOT = new URL('../../', import.meta.url).href
const frame = (functionName: string, url = `${ROOT}supernode/src/a.ts`) => ({ functionName, url, lineNumber: 9 })

/** (root) → (idle), (program), onRead → decode; (root) → flush. */
const nodes: CpuProfile['nodes'] = [
  { id: 1, callFrame: frame('(root)', ''), children: [2, 3, 4, 6] },
  { id: 2, callFrame: frame('(idle)', '') },
  { id: 3, callFrame: frame('(program)', '') },
  { id: 4, callFrame: frame('onRead', 'file:///x/node_modules/@libp2p/tcp/dist/src/socket-to-conn.js'), children: [5] },
  { id: 5, callFrame: frame('decode', `${ROOT}proto/src/codec/wire.ts`) },
  { id: 6, callFrame: frame('flush') }
]

/** A profile of runs of samples, each run one node every `everyUs`. */
function profile(runs: Array<{ id: number | number[]; n: number; everyUs?: number }>): CpuProfile {
  const samples: number[] = []
  const timeDeltas: number[] = []
  for (const r of runs) {
    for (let k = 0; k < r.n; k++) {
      samples.push(Array.isArray(r.id) ? r.id[k % r.id.length] : r.id)
      timeDeltas.push(r.everyUs ?? 1000)
    }
  }
  return { nodes, startTime: 5_000_000, endTime: 5_000_000 + timeDeltas.reduce((a, b) => a + b, 0), samples, timeDeltas }
}

describe('longStretches', () => {
  it('reports a run of one call path as one stretch at a full core', () => {
    const found = longStretches(profile([{ id: 2, n: 100 }, { id: 5, n: 60 }, { id: 3, n: 100 }]), 50)
    expect(found.usualMs).toBe(1)
    expect(found.stretches).toHaveLength(1)
    const [s] = found.stretches
    expect(s.atS).toBeCloseTo(0.101, 6)
    expect(s.spanMs).toBe(60)
    expect(s.samples).toBe(60)
    expect(s.share).toBe(1)
    expect(s.paths).toEqual([{ path: 'onRead @libp2p/tcp/dist/src/socket-to-conn.js:10 > decode proto/src/codec/wire.ts:10', share: 1 }])
  })

  it('tells a process held off the CPU by its sparse samples, and shares the paths out', () => {
    // 30 samples 2 ms apart: 60 ms busy, half a core; two paths in turn.
    const found = longStretches(profile([{ id: 2, n: 200 }, { id: [5, 6], n: 30, everyUs: 2000 }, { id: 2, n: 100 }]), 50)
    expect(found.stretches).toHaveLength(1)
    const [s] = found.stretches
    expect(s.spanMs).toBe(59)
    expect(s.share).toBeCloseTo(30 / 59, 6)
    expect(s.paths.map((p) => p.share)).toEqual([0.5, 0.5])
    expect(s.paths.map((p) => p.path).sort()).toEqual(['flush supernode/src/a.ts:10', 'onRead @libp2p/tcp/dist/src/socket-to-conn.js:10 > decode proto/src/codec/wire.ts:10'])
  })

  it('leaves out stretches shorter than the minimum and splits at every idle sample', () => {
    const found = longStretches(profile([{ id: 6, n: 40 }, { id: 2, n: 1 }, { id: 6, n: 40 }, { id: 3, n: 1 }, { id: 5, n: 55 }]), 50)
    expect(found.stretches.map((s) => s.samples)).toEqual([55])
    expect(longStretches(profile([{ id: 6, n: 40 }, { id: 2, n: 1 }, { id: 6, n: 40 }]), 30).stretches.map((s) => s.samples)).toEqual([40, 40])
  })
})
