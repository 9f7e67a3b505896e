// The goal lines and tables of the single-host scenarios (proxy-overhead, fuse-read,
// convert): each prints its measured figure next to the goal, met / not met, and by how much.

import { cpus, loadavg } from 'node:os'

export interface GoalCheck {
  /** What is compared, e.g. "cold time / direct time". */
  what: string
  measured: number
  /** The bound, and whether the measured value must stay at or below it, or reach it. */
  bound: number
  direction: 'at most' | 'at least'
  met: boolean
  /** "met" or "not met: 41 % over the bound". */
  verdict: string
}

export function checkGoal(what: string, measured: number, direction: GoalCheck['direction'], bound: number): GoalCheck {
  const met = direction === 'at most' ? measured <= bound : measured >= bound
  const by = direction === 'at most' ? `${((measured / bound - 1) * 100).toFixed(0)} % over` : `${((1 - measured / bound) * 100).toFixed(0)} % short of`
  return { what, measured, bound, direction, met, verdict: met ? 'met' : `not met: ${by} the bound` }
}

export function goalLine(g: GoalCheck, digits = 2): string {
  return `Goal: ${g.what} ${g.direction} ${g.bound.toFixed(digits)}. Measured: ${g.measured.toFixed(digits)} → **${g.verdict}**.`
}

/** A Markdown table from a header and rows of cells. */
export function table(header: string[], align: Array<'l' | 'r'>, rows: Array<Array<string | number>>): string {
  return [
    `| ${header.join(' | ')} |`,
    `|${align.map((a) => (a === 'r' ? '---:' : '---')).join('|')}|`,
    ...rows.map((r) => `| ${r.join(' | ')} |`)
  ].join('\n')
}

/** The line every report ends with: how busy the machine was meanwhile. */
export function machineNote(otherCpuS: number, wallS: number): string {
  const share = otherCpuS / Math.max(1e-9, wallS * cpus().length)
  return `${share > 0.1 ? '**Warning:** ' : ''}Other processes (and the hypervisor) took ${otherCpuS.toFixed(1)} CPU-s during the measurements ` +
    `(${(share * 100).toFixed(0)} % of ${cpus().length} cores over ${wallS.toFixed(0)} s)${share > 0.1 ? '; the machine was not idle: compare the ratios, measured side by side, rather than absolute times' : ''}. ` +
    `Load average at the end: ${loadavg().map((l) => l.toFixed(2)).join(', ')}.`
}

export const mbps = (bytes: number, ms: number): number => bytes / 1e6 / (ms / 1000)
