const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB']

export function bytes(n: number | null | undefined): string {
  if (n === null || n === undefined || n < 0 || !Number.isFinite(n)) return '–'
  let i = 0
  let v = n
  while (v >= 1024 && i < UNITS.length - 1) { v /= 1024; i++ }
  return `${i === 0 ? v : v.toFixed(v >= 100 ? 0 : 1)} ${UNITS[i]}`
}

export function rate(bytesPerSecond: number | null | undefined): string {
  if (bytesPerSecond === null || bytesPerSecond === undefined || bytesPerSecond <= 0) return '–'
  return `${bytes(bytesPerSecond)}/s`
}

export function percent(x: number | null | undefined, digits = 1): string {
  return x === null || x === undefined || !Number.isFinite(x) ? '–' : `${(x * 100).toFixed(digits)} %`
}

export function ago(at: string | number | null | undefined, now = Date.now()): string {
  if (at === null || at === undefined) return '–'
  const ms = now - (typeof at === 'number' ? at : Date.parse(at))
  if (!Number.isFinite(ms)) return '–'
  const s = Math.max(0, Math.round(ms / 1000))
  if (s < 60) return `${s}s ago`
  if (s < 3600) return `${Math.floor(s / 60)}m ago`
  if (s < 86400) return `${Math.floor(s / 3600)}h ago`
  return `${Math.floor(s / 86400)}d ago`
}

export function shortId(id: string): string {
  return id.length > 16 ? `${id.slice(0, 8)}…${id.slice(-6)}` : id
}
