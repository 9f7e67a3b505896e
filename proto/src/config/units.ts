import { NaiadError } from '../errors.ts'

const SIZE_UNITS: Record<string, number> = {
  b: 1,
  kb: 1e3, mb: 1e6, gb: 1e9, tb: 1e12,
  kib: 2 ** 10, mib: 2 ** 20, gib: 2 ** 30, tib: 2 ** 40,
  k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40
}

/** `512MiB`, `10GiB`, `4M`, `1000` (bytes) → bytes. */
export function parseSize(raw: string, what = 'size'): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(raw)
  const mul = m === null ? undefined : SIZE_UNITS[(m[2] === '' ? 'b' : m[2]).toLowerCase()]
  if (m === null || mul === undefined) {
    throw new NaiadError('PROTO_ERR_USAGE', `bad ${what} "${raw}": expected a number with a unit such as 512MiB or 10GiB`)
  }
  return Math.round(Number(m[1]) * mul)
}

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }

/** `30s`, `5m`, `250ms`, `1h`, `1m30s` → milliseconds. A unit is required. */
export function parseDuration(raw: string, what = 'duration'): number {
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h)/gy
  let total = 0
  let matched = 0
  const s = raw.trim()
  for (let m = re.exec(s); m !== null; m = re.exec(s)) {
    total += Number(m[1]) * DURATION_UNITS[m[2]]
    matched = re.lastIndex
  }
  if (s === '' || matched !== s.length) {
    throw new NaiadError('PROTO_ERR_USAGE', `bad ${what} "${raw}": expected a number with a unit such as 30s, 5m or 250ms`)
  }
  return total
}

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB']
  let i = 0
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++ }
  return `${n.toFixed(i === 0 ? 0 : 1)} ${units[i]}`
}
