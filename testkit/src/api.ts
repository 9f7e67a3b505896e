// Small clients for the daemon's local API and the supernode's HTTP API, for tests.

import { apiHeaders } from './processes.ts'

export interface DoneEvent { event: 'done'; taskId: string; contentLength: number; sha256: string; fromPeers: number; fromOrigin: number; cached: boolean }
export interface ErrorEvent { event: 'error'; code: string; message: string }
export interface ProgressEvent { event: 'progress'; taskId: string; completedBytes: number; totalBytes: number; fromPeers: number; fromOrigin: number }

/** POSTs a download to a daemon and reads its NDJSON events to the end. */
export async function downloadVia(
  apiUrl: string,
  body: { url: string; headers?: Record<string, string>; digest?: string; range?: string; filter?: string[]; timeoutMs?: number },
  onProgress?: (e: ProgressEvent) => void
): Promise<DoneEvent | ErrorEvent> {
  const res = await fetch(`${apiUrl}/api/v1/downloads`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
  if (res.status !== 200) {
    const e = await res.json() as { code: string; message: string }
    return { event: 'error', code: e.code, message: e.message }
  }
  const decoder = new TextDecoder()
  let buf = ''
  let last: DoneEvent | ErrorEvent | undefined
  for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
    buf += decoder.decode(chunk, { stream: true })
    let i: number
    while ((i = buf.indexOf('\n')) >= 0) {
      const e = JSON.parse(buf.slice(0, i)) as DoneEvent | ErrorEvent | ProgressEvent | { event: 'started' }
      buf = buf.slice(i + 1)
      if (e.event === 'progress') onProgress?.(e)
      if (e.event === 'done' || e.event === 'error') last = e
    }
  }
  if (last === undefined) throw new Error('download stream ended without a result')
  return last
}

/** Reads the content of a complete task from a daemon. */
export async function contentOf(apiUrl: string, taskId: string): Promise<Buffer> {
  const res = await fetch(`${apiUrl}/api/v1/tasks/${taskId}/content`)
  if (!res.ok) throw new Error(`content of ${taskId}: HTTP ${res.status}`)
  return Buffer.from(await res.arrayBuffer())
}

/** Sums the samples of a Prometheus metric whose labels include `labels`. */
export async function metric(url: string, name: string, labels: Record<string, string> = {}): Promise<number> {
  return metricIn(await (await fetch(`${url}/metrics`)).text(), name, labels)
}

/** The same sum over a /metrics text fetched elsewhere (from inside a network namespace, say). */
export function metricIn(text: string, name: string, labels: Record<string, string> = {}): number {
  let total = 0
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue
    const m = /^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)$/.exec(line)
    if (m === null || m[1] !== name) continue
    const ok = Object.entries(labels).every(([k, v]) => (m[2] ?? '').includes(`${k}="${v}"`))
    if (ok) total += Number(m[3])
  }
  return total
}

/** GETs JSON; a supernode started by startSupernode gets its API token. */
export async function getJson<T>(url: string): Promise<T> {
  const res = await fetch(url, { headers: apiHeaders(url) })
  if (!res.ok) throw new Error(`${url}: HTTP ${res.status}`)
  return await res.json() as T
}

/** Polls until `check` returns true or the timeout passes. */
export async function waitFor(check: () => Promise<boolean> | boolean, timeoutMs: number, what: string): Promise<void> {
  const until = Date.now() + timeoutMs
  while (Date.now() < until) {
    if (await Promise.resolve().then(check).catch(() => false)) return
    await new Promise((r) => setTimeout(r, 100))
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
}
