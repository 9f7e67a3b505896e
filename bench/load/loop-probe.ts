// Where a latency tail lives: loaded into any process with
// `NODE_OPTIONS="--import ./bench/load/loop-probe.ts" NAIAD_LOOP_PROBE_DIR=DIR`, it writes one
// JSON line a second to DIR/<pid>-<script>.jsonl: the wall-clock second, how late the event
// loop ran (max and p99 of perf_hooks' delay histogram), its utilisation, and the GC pauses of
// that second (count, total, longest, and the kinds), and in a supernode the scheduler calls
// that arrived (from its diagnostics channel): get_parents in the second and in its busiest
// 100 ms, the burstiness that machine load does not change. Nothing else in the process changes; a
// client's latency and the server's loop lag, second by second, side by side, say on which side
// of the wire a slow answer waited.

import { subscribe } from 'node:diagnostics_channel'
import { appendFileSync, mkdirSync } from 'node:fs'
import { basename, join } from 'node:path'
import { constants, monitorEventLoopDelay, performance, PerformanceObserver, type PerformanceEntry } from 'node:perf_hooks'

const dir = process.env.NAIAD_LOOP_PROBE_DIR
if (dir !== undefined && dir !== '') {
  mkdirSync(dir, { recursive: true })
  const file = join(dir, `${process.pid}-${basename(process.argv[1] ?? 'node')}.jsonl`)
  const delay = monitorEventLoopDelay({ resolution: 5 })
  delay.enable()
  const kinds: Record<number, string> = {
    [constants.NODE_PERFORMANCE_GC_MAJOR]: 'major', [constants.NODE_PERFORMANCE_GC_MINOR]: 'minor',
    [constants.NODE_PERFORMANCE_GC_INCREMENTAL]: 'incremental', [constants.NODE_PERFORMANCE_GC_WEAKCB]: 'weakcb'
  }
  let gc = { n: 0, ms: 0, maxMs: 0, kinds: {} as Record<string, number> }
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      const kind = kinds[((e as PerformanceEntry & { detail?: { kind?: number } }).detail)?.kind ?? -1] ?? 'other'
      gc.n++
      gc.ms += e.duration
      gc.maxMs = Math.max(gc.maxMs, e.duration)
      gc.kinds[kind] = (gc.kinds[kind] ?? 0) + Math.round(e.duration)
    }
  }).observe({ entryTypes: ['gc'] })
  // The supernode's SCHEDULER_CALL_EVENT (supernode/src/scheduler/service.ts), by name: a
  // channel is global, so the probe needs nothing from the process it is loaded into.
  const slots = new Uint32Array(10)
  let polls = 0
  let calls = 0
  subscribe('naiad:scheduler:call', (m) => {
    calls++
    if ((m as { call?: string }).call !== 'get_parents') return
    polls++
    slots[Math.floor((Date.now() % 1000) / 100)]++
  })
  let elu = performance.eventLoopUtilization()
  const timer = setInterval(() => {
    const now = performance.eventLoopUtilization()
    const u = performance.eventLoopUtilization(now, elu).utilization
    elu = now
    const line = {
      t: Math.floor(Date.now() / 1000),
      lagMaxMs: Math.round(delay.max / 1e5) / 10,
      lagP99Ms: Math.round(delay.percentile(99) / 1e5) / 10,
      elu: Math.round(u * 100) / 100,
      gcN: gc.n, gcMs: Math.round(gc.ms), gcMaxMs: Math.round(gc.maxMs), gcKinds: gc.kinds,
      rssMiB: Math.round(process.memoryUsage.rss() / 2 ** 20),
      calls, polls, pollsMax100ms: Math.max(...slots)
    }
    slots.fill(0)
    polls = 0
    calls = 0
    delay.reset()
    gc = { n: 0, ms: 0, maxMs: 0, kinds: {} }
    try {
      appendFileSync(file, `${JSON.stringify(line)}\n`)
    } catch { /* the directory went away: the run is over */ }
  }, 1000)
  timer.unref()
}
