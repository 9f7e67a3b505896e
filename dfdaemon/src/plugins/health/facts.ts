// What a daemon knows about its own health: piece and upload outcomes over a sliding window
// (fed from diagnostics_channel events), free disk under the data dir, FUSE availability,
// and the clock offset the last report to the supernode measured.

import { statfs } from 'node:fs/promises'

import { findOnPath, fuseDeviceError } from '@naiad/node-tools'
import type { HealthFacts } from '@naiad/proto'

interface Sample {
  at: number
  ok: boolean
  costMs: number
}

/** Outcomes in the last `windowMs`, bounded in count so a busy daemon stays cheap. */
export class SlidingWindow {
  private readonly samples: Sample[] = []
  private readonly windowMs: number
  private readonly maxSamples: number

  constructor(windowMs: number, maxSamples = 10_000) {
    this.windowMs = windowMs
    this.maxSamples = maxSamples
  }

  add(ok: boolean, costMs = 0, at = Date.now()): void {
    this.samples.push({ at, ok, costMs })
    if (this.samples.length > this.maxSamples) this.samples.splice(0, this.samples.length - this.maxSamples)
  }

  /** Forgets every sample: after a heal, what came before describes a cache that is gone. */
  clear(): void {
    this.samples.length = 0
  }

  /** Count, failure rate and mean cost of the successes, over the window ending now. */
  summary(now = Date.now()): { samples: number; failureRate: number; meanCostMs: number } {
    let drop = 0
    while (drop < this.samples.length && now - this.samples[drop].at > this.windowMs) drop++
    if (drop > 0) this.samples.splice(0, drop)
    let failed = 0
    let ok = 0
    let cost = 0
    for (const s of this.samples) {
      if (s.ok) {
        ok++
        cost += s.costMs
      } else {
        failed++
      }
    }
    const n = this.samples.length
    return { samples: n, failureRate: n === 0 ? 0 : failed / n, meanCostMs: ok === 0 ? 0 : cost / ok }
  }
}

/** Free bytes and the free fraction of the file system holding `dir`, as an unprivileged user sees it. */
export async function diskFree(dir: string): Promise<{ bytes: number; ratio: number }> {
  const s = await statfs(dir)
  return { bytes: s.bavail * s.bsize, ratio: s.blocks === 0 ? 0 : s.bavail / s.blocks }
}

/**
 * The clock offset from one report's round trip, as NTP computes it: the daemon sent at t0,
 * the supernode received at t1 and answered at t2, the daemon got the answer at t3. The
 * offset (daemon minus supernode) is exact when both directions took equally long.
 */
export function clockOffset(t0: number, t1: number, t2: number, t3: number): { offsetMs: number; rttMs: number } {
  return { offsetMs: ((t0 - t1) + (t3 - t2)) / 2, rttMs: Math.max(0, (t3 - t0) - (t2 - t1)) }
}

export interface MeasureInputs {
  dataDir: string
  fuseDevice: string
  windowMs: number
  pieces: SlidingWindow
  uploads: SlidingWindow
  clock: { offsetMs: number; rttMs: number }
}

export async function measure(m: MeasureInputs): Promise<HealthFacts> {
  const [disk, device, fusermount] = await Promise.all([
    diskFree(m.dataDir).catch(() => ({ bytes: 0, ratio: 0 })),
    fuseDeviceError(m.fuseDevice).then((err) => err === null),
    findOnPath(['fusermount3', 'fusermount']).then((found) => found !== null)
  ])
  const pieces = m.pieces.summary()
  const uploads = m.uploads.summary()
  return {
    diskFreeBytes: disk.bytes,
    diskFreeRatio: disk.ratio,
    samples: pieces.samples,
    pieceFailureRate: pieces.failureRate,
    uploadSamples: uploads.samples,
    uploadErrorRate: uploads.failureRate,
    meanPieceCostMs: pieces.meanCostMs,
    clockOffsetMs: m.clock.offsetMs,
    clockRttMs: m.clock.rttMs,
    fuseDevice: device,
    fusermount,
    windowMs: m.windowMs
  }
}
