// Progress output: a redrawn bar on a terminal, periodic plain lines in a log, nothing
// with --no-progress.

import { describe, expect, it } from 'vitest'

import { createProgressReporter, formatPercent, progressModeFor, type ProgressStream } from '../src/index.ts'

function sink(isTTY: boolean, columns = 80): ProgressStream & { out: string } {
  const s = { out: '', isTTY, columns, write(t: string) { s.out += t; return true } }
  return s
}

function clock(): { now: () => number; advance(ms: number): void } {
  let t = 1_000_000
  return { now: () => t, advance: (ms) => { t += ms } }
}

const MiB = 1 << 20

describe('dfget progress', () => {
  it('chooses the mode from the stream and the flag', () => {
    expect(progressModeFor(sink(true), true)).toBe('bar')
    expect(progressModeFor(sink(false), true)).toBe('lines')
    expect(progressModeFor(sink(true), false)).toBe('none')
  })

  it('draws one line with percent, bytes and rate, never wider than the terminal', () => {
    for (const columns of [40, 80, 200]) {
      const s = sink(true, columns)
      const c = clock()
      const p = createProgressReporter(s, { mode: 'bar', intervalMs: 100, now: c.now })
      p.update({ phase: 'download', completedBytes: 0, totalBytes: 100 * MiB, fromPeers: 0, fromOrigin: 0 })
      c.advance(1000)
      p.update({ phase: 'download', completedBytes: 25 * MiB, totalBytes: 100 * MiB, fromPeers: 20 * MiB, fromOrigin: 5 * MiB })
      const frames = s.out.split('\r').filter((f) => f !== '')
      expect(frames).toHaveLength(2)
      const last = frames[1].replace('\x1b[K', '')
      expect(last).toMatch(/(^| )25%/)
      expect(last).toContain('25.0 MiB / 100.0 MiB')
      expect(last).toContain('25.0 MiB/s')
      expect(last.length).toBeLessThan(columns)
      expect(s.out).not.toContain('\n')
      if (columns >= 80) expect(last).toMatch(/\[=+> +\]/)
    }
  })

  it('redraws at most once per interval, and replaces the bar with the summary', () => {
    const s = sink(true)
    const c = clock()
    const p = createProgressReporter(s, { mode: 'bar', intervalMs: 100, now: c.now })
    for (let i = 0; i < 50; i++) {
      c.advance(10)
      p.update({ phase: 'download', completedBytes: i * MiB, totalBytes: 50 * MiB })
    }
    expect(s.out.split('\r').filter((f) => f !== '').length).toBeLessThanOrEqual(6)
    p.done('saved f')
    expect(s.out.endsWith('\r\x1b[Kdfget: saved f\n')).toBe(true)
  })

  it('clears the bar on failure so the error line stands alone', () => {
    const s = sink(true)
    const p = createProgressReporter(s, { mode: 'bar', intervalMs: 100 })
    p.update({ phase: 'download', completedBytes: 1, totalBytes: 2 })
    p.fail()
    expect(s.out.endsWith('\r\x1b[K')).toBe(true)
  })

  it('writes a plain line per interval to a log, none for a quick download', () => {
    const s = sink(false)
    const c = clock()
    const p = createProgressReporter(s, { mode: 'lines', intervalMs: 5000, now: c.now })
    p.update({ phase: 'download', completedBytes: 0, totalBytes: 10 * MiB, fromPeers: 0, fromOrigin: 0 })
    c.advance(1000)
    p.update({ phase: 'download', completedBytes: MiB, totalBytes: 10 * MiB, fromPeers: MiB, fromOrigin: 0 })
    expect(s.out).toBe('')
    c.advance(4000)
    p.update({ phase: 'download', completedBytes: 5 * MiB, totalBytes: 10 * MiB, fromPeers: 4 * MiB, fromOrigin: MiB })
    expect(s.out).toBe('dfget: downloading 50% (5.0 MiB of 10.0 MiB, 1.0 MiB/s), 80% from peers\n')
    p.fail()
    expect(s.out).not.toContain('\r')
  })

  it('assumes 80 columns when the terminal does not say', () => {
    const s = sink(true, 0)
    const p = createProgressReporter(s, { mode: 'bar', intervalMs: 100 })
    p.update({ phase: 'download', completedBytes: MiB, totalBytes: 2 * MiB })
    expect(s.out).toContain('50%')
    expect(s.out.replace('\r', '').replace('\x1b[K', '').length).toBe(79)
  })

  it('copes with an unknown total', () => {
    const s = sink(true)
    const p = createProgressReporter(s, { mode: 'bar', intervalMs: 100 })
    p.update({ phase: 'download', completedBytes: 3 * MiB, totalBytes: -1 })
    expect(s.out).toContain('?%')
    expect(s.out).toContain('3.0 MiB')
    expect(formatPercent(0, 0)).toBe('100%')
  })

  it('prints nothing with --no-progress', () => {
    const s = sink(true)
    const p = createProgressReporter(s, { mode: 'none', intervalMs: 0 })
    p.update({ phase: 'download', completedBytes: 1, totalBytes: 2 })
    p.done('saved')
    p.fail()
    expect(s.out).toBe('')
  })
})
