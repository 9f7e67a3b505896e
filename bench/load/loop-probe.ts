// Where a latency tail lives: loaded into any process with
// `NODE_OPTIONS="--import ./bench/load/loop-probe.ts" NAIAD_LOOP_PROBE_DIR=DIR`, it writes one
// JSON line a second to DIR/<pid>-<script>.jsonl: the wall-clock second, how late the event
// loop ran (max and p99 of perf_hooks' delay histogram), its utilisation, and the GC pauses of
// that second (count, total, longest, and the kinds), the RSS and what the JS heap holds of it, and in a supernode the scheduler calls
// that arrived (from its diagnostics channel): get_parents in the second and in its busiest
// 100 ms, the burstiness that machine load does not change, and the least and most pace the
// gauge set in the second. Nothing else in the process changes; a
// client's latency and the server's loop lag, second by second, side by side, say on which side
// of the wire a slow answer waited.

import { subscribe } from 'node:diagnostics_channel'
import { appendFileSync, mkdirSync, writeFileSync } from 'node:fs'
import { Session } from 'node:inspector'
import { basename, join } from 'node:path'
import { getHeapSpaceStatistics } from 'node:v8'
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
  // Two numbers, not an object: the probe runs on every call of the process it measures.
  let paceMinMs = Infinity
  let paceMaxMs = 0
  subscribe('naiad:scheduler:call', (m) => {
    calls++
    const paceMs = (m as { paceMs?: number }).paceMs
    if (paceMs !== undefined) {
      paceMinMs = Math.min(paceMinMs, paceMs)
      paceMaxMs = Math.max(paceMaxMs, paceMs)
    }
    if ((m as { call?: string }).call !== 'get_parents') return
    polls++
    slots[Math.floor((Date.now() % 1000) / 100)]++
  })
  const memory = (): Record<string, number> => {
    const m = process.memoryUsage()
    const mib = (b: number): number => Math.round(b / 2 ** 20)
    const old = getHeapSpaceStatistics().find((s) => s.space_name === 'old_space')
    return { heapTotalMiB: mib(m.heapTotal), heapUsedMiB: mib(m.heapUsed), oldUsedMiB: Math.round((old?.space_used_size ?? 0) / 2 ** 17) / 8, externalMiB: mib(m.external), arrayBuffersMiB: mib(m.arrayBuffers) }
  }
  // NAIAD_LOOP_PROBE_SAMPLE=SECONDS: from the first second with scheduler calls in it (a
  // supernode's load window), sample allocations for that long, keeping only those that
  // survived the young generation's collections (promoted, or still live at the end): what
  // fills the old generation and brings on the major GCs. Written as DIR/<pid>.heapprofile
  // (a V8 sampling heap profile; bench/heap-summary.ts --allocations reads it).
  const sampleS = Number(process.env.NAIAD_LOOP_PROBE_SAMPLE ?? 0)
  let sampling: 'no' | 'on' | 'done' = sampleS > 0 ? 'no' : 'done'
  let session: Session | undefined
  const sample = (calling: boolean): void => {
    if (sampling === 'no' && calling) {
      sampling = 'on'
      session = new Session()
      session.connect()
      session.post('HeapProfiler.startSampling', { samplingInterval: 16384, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: false })
      setTimeout(() => {
        session!.post('HeapProfiler.stopSampling', (err, res) => {
          sampling = 'done'
          if (err === null) writeFileSync(join(dir, `${process.pid}.heapprofile`), JSON.stringify((res as { profile: unknown }).profile))
          session!.disconnect()
        })
      }, sampleS * 1000).unref()
    }
  }
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
      // What the RSS is made of: the JS heap's pages and what is live in them at this moment
      // (garbage included until a collection), and memory outside it (buffers, native).
      ...memory(),
      calls, polls, pollsMax100ms: Math.max(...slots),
      ...(calls > 0 ? { paceMinMs, paceMaxMs } : {})
    }
    sample(polls > 0)
    slots.fill(0)
    polls = 0
    calls = 0
    paceMinMs = Infinity
    paceMaxMs = 0
    delay.reset()
    gc = { n: 0, ms: 0, maxMs: 0, kinds: {} }
    try {
      appendFileSync(file, `${JSON.stringify(line)}\n`)
    } catch { /* the directory went away: the run is over */ }
  }, 1000)
  timer.unref()
}
