// Progress on stderr: one redrawn line with a bar when stderr is a terminal, a plain line
// every few seconds when it is a log, nothing with --no-progress. The reporter only
// formats; the caller feeds it the daemon's events and the bytes written.

import { formatBytes } from '@naiad/proto/contracts'

export interface ProgressSample {
  /** `download`: the daemon fetching from peers and origin; `save`: copying into FILE. */
  phase: 'download' | 'save'
  completedBytes: number
  /** -1 while unknown. */
  totalBytes: number
  fromPeers?: number
  fromOrigin?: number
}

export interface ProgressReporter {
  update(sample: ProgressSample): void
  /** The download succeeded; `summary` replaces the bar. */
  done(summary: string): void
  /** The download failed; clears the bar so the error line stands alone. */
  fail(): void
}

/** What the reporter needs of stderr. */
export interface ProgressStream {
  write(text: string): unknown
  isTTY?: boolean
  columns?: number
}

export type ProgressMode = 'bar' | 'lines' | 'none'

export interface ProgressOptions {
  mode: ProgressMode
  /** Least time between two redraws (bar) or two lines (lines). */
  intervalMs: number
  now?: () => number
}

export function progressModeFor(stream: ProgressStream, enabled: boolean): ProgressMode {
  if (!enabled) return 'none'
  return stream.isTTY === true ? 'bar' : 'lines'
}

export function createProgressReporter(stream: ProgressStream, options: ProgressOptions): ProgressReporter {
  if (options.mode === 'none') return { update: () => {}, done: () => {}, fail: () => {} }
  return new StreamProgress(stream, options)
}

/** Bytes per second over the last few seconds, so the figure follows the current speed. */
class RateMeter {
  private readonly samples: Array<{ t: number; bytes: number }> = []
  private readonly windowMs = 5_000

  add(t: number, bytes: number): void {
    const last = this.samples.at(-1)
    if (last !== undefined && bytes < last.bytes) this.samples.length = 0 // a new phase
    this.samples.push({ t, bytes })
    while (this.samples.length > 2 && t - this.samples[1].t >= this.windowMs) this.samples.shift()
  }

  rate(): number {
    const first = this.samples[0]
    const last = this.samples.at(-1)
    if (first === undefined || last === undefined || last.t - first.t < 200) return 0
    return ((last.bytes - first.bytes) * 1000) / (last.t - first.t)
  }
}

export function formatRate(bytesPerSecond: number): string {
  return bytesPerSecond > 0 ? `${formatBytes(bytesPerSecond)}/s` : '-- B/s'
}

export function formatPercent(done: number, total: number): string {
  if (total <= 0) return total === 0 ? '100%' : '  ?%'
  return `${Math.min(100, Math.floor((done * 100) / total))}%`.padStart(4)
}

class StreamProgress implements ProgressReporter {
  private readonly stream: ProgressStream
  private readonly options: ProgressOptions
  private readonly now: () => number
  private readonly rate = new RateMeter()
  private last: ProgressSample | undefined
  private lastDraw = -Infinity
  private drawn = false
  private phase: ProgressSample['phase'] = 'download'

  constructor(stream: ProgressStream, options: ProgressOptions) {
    this.stream = stream
    this.options = options
    this.now = options.now ?? Date.now
  }

  update(sample: ProgressSample): void {
    const t = this.now()
    if (sample.phase !== this.phase) {
      this.phase = sample.phase
      this.lastDraw = -Infinity // show the new phase at once
    }
    this.rate.add(t, sample.completedBytes)
    this.last = sample
    const first = this.lastDraw === -Infinity
    // A log gets its first line only after one interval: short downloads stay quiet.
    if (this.options.mode === 'lines' && first) { this.lastDraw = t; return }
    if (t - this.lastDraw < this.options.intervalMs && !(this.options.mode === 'bar' && first)) return
    this.lastDraw = t
    if (this.options.mode === 'bar') this.drawBar(sample)
    else this.stream.write(`dfget: ${this.describe(sample)}\n`)
  }

  done(summary: string): void {
    this.clear()
    this.stream.write(`dfget: ${summary}\n`)
  }

  fail(): void {
    this.clear()
  }

  private describe(s: ProgressSample): string {
    const verb = s.phase === 'download' ? 'downloading' : 'saving'
    const size = s.totalBytes >= 0 ? `${formatBytes(s.completedBytes)} of ${formatBytes(s.totalBytes)}` : formatBytes(s.completedBytes)
    const pct = s.totalBytes >= 0 ? `${formatPercent(s.completedBytes, s.totalBytes).trim()} ` : ''
    return `${verb} ${pct}(${size}, ${formatRate(this.rate.rate())})${this.sources(s)}`
  }

  private sources(s: ProgressSample): string {
    if (s.phase !== 'download' || s.fromPeers === undefined || s.fromOrigin === undefined) return ''
    const sum = s.fromPeers + s.fromOrigin
    return sum > 0 ? `, ${Math.round((s.fromPeers * 100) / sum)}% from peers` : ''
  }

  private drawBar(s: ProgressSample): void {
    // A pseudo-terminal without a size reports 0 columns.
    const columns = Math.min(this.stream.columns !== undefined && this.stream.columns >= 20 ? this.stream.columns : 80, 200)
    const label = s.phase === 'download' ? 'downloading' : 'saving     '
    const size = s.totalBytes >= 0 ? `${formatBytes(s.completedBytes)} / ${formatBytes(s.totalBytes)}` : formatBytes(s.completedBytes)
    const pct = formatPercent(s.completedBytes, s.totalBytes)
    const rate = formatRate(this.rate.rate())
    // Fixed-width fields keep the bar from jumping as the figures grow.
    const tail = ` ${pct}  ${size.padStart(23)}  ${rate.padStart(12)}`
    // The line must stay shorter than the terminal: a wrapped line cannot be redrawn with \r.
    const width = columns - label.length - tail.length - 4
    // Too narrow for a bar: the figures alone, which matter more than the label.
    let line = `${pct.trim()}  ${size}  ${rate}`.slice(0, Math.max(0, columns - 1))
    if (width >= 10) {
      const filled = s.totalBytes > 0 ? Math.min(width, Math.floor((s.completedBytes * width) / s.totalBytes)) : 0
      const bar = '='.repeat(filled) + (filled < width && s.totalBytes > 0 ? '>' : ' ') + ' '.repeat(Math.max(0, width - filled - 1))
      line = `${label} [${bar.slice(0, width)}]${tail}`
    }
    // \r back to column 0, draw, \x1b[K erase what a longer previous line left behind.
    this.stream.write(`\r${line}\x1b[K`)
    this.drawn = true
  }

  private clear(): void {
    if (this.drawn) this.stream.write('\r\x1b[K')
    this.drawn = false
  }
}
