// Small pieces every benchmark uses.

import { readFileSync } from 'node:fs'
import { mkdir, writeFile } from 'node:fs/promises'
import { cpus, loadavg } from 'node:os'
import { dirname } from 'node:path'

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 === 1 ? s[m] : (s[m - 1] + s[m]) / 2
}

/** Waits for `p`, or rejects as soon as `signal` aborts (Ctrl-C, the run's time limit). */
export async function withSignal<T>(p: Promise<T>, signal: AbortSignal, what: string): Promise<T> {
  signal.throwIfAborted()
  let onAbort: (() => void) | undefined
  try {
    return await Promise.race([p, new Promise<never>((_, reject) => {
      onAbort = () => reject(new Error(`${what}: ${(signal.reason as Error)?.message ?? 'aborted'}`))
      signal.addEventListener('abort', onAbort, { once: true })
    })])
  } finally {
    if (onAbort !== undefined) signal.removeEventListener('abort', onAbort)
  }
}

/**
 * Writes a scenario's results: PREFIX.json (the benchmark's name, the date and the machine,
 * then `fields`) and PREFIX.md.
 */
export async function writeResults(prefix: string, benchmark: string, fields: Record<string, unknown>, markdown: string): Promise<void> {
  await mkdir(dirname(prefix), { recursive: true })
  const machine = { date: new Date().toISOString(), node: process.version, cpus: cpus().length, cpuModel: cpus()[0]?.model, loadavg: loadavg() }
  await writeFile(`${prefix}.json`, `${JSON.stringify({ benchmark, ...machine, ...fields }, null, 2)}\n`)
  await writeFile(`${prefix}.md`, markdown)
}

/** The JSON lines of a log file (pino's), skipping any other line and one cut off at shutdown. */
export function jsonLines<T>(path: string): T[] {
  const out: T[] = []
  for (const l of readFileSync(path, 'utf8').split('\n')) {
    if (!l.startsWith('{')) continue
    try { out.push(JSON.parse(l) as T) } catch { /* a line cut off at shutdown */ }
  }
  return out
}
