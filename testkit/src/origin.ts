// An HTTP origin for tests: serves files from disk or memory with Range support, counts
// the bytes it sends per path, and can be told to misbehave (status codes, cut bodies, stalls).

import { createReadStream } from 'node:fs'
import { stat } from 'node:fs/promises'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'

import { contentRange, parseRangeHeader } from '@naiad/proto/contracts'

export type Fault = { status: number } | { truncateAt: number } | { stallMs: number } | { bytesPerSec: number }

/** Slice a throttled body is sent in. */
const THROTTLE_SLICE = 16 * 1024

export interface OriginFile {
  /** A file on disk, or bytes in memory. */
  path?: string
  data?: Buffer
}

export class TestOrigin {
  readonly files = new Map<string, OriginFile>()
  readonly faults = new Map<string, Fault>()
  /** Body bytes sent per URL path. */
  readonly served = new Map<string, number>()
  readonly requests: Array<{ method: string; path: string; range: string | undefined; headers: Record<string, string | string[] | undefined> }> = []
  private server: Server | undefined
  url = ''

  /** `host`: 127.0.0.1, or 0.0.0.0 inside a network namespace a test made (its containers' origin). */
  async start(port = 0, host = '127.0.0.1'): Promise<this> {
    this.server = createServer((req, res) => { this.handle(req, res).catch(() => res.destroy()) })
    this.server.listen(port, host)
    await new Promise<void>((resolve) => this.server!.once('listening', resolve))
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`
    return this
  }

  bytesServed(path: string): number {
    return this.served.get(path) ?? 0
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = new URL(req.url ?? '/', 'http://x').pathname
    this.requests.push({ method: req.method ?? 'GET', path, range: req.headers.range, headers: req.headers })
    const fault = this.faults.get(path)
    if (fault !== undefined && 'status' in fault) {
      res.writeHead(fault.status, { 'content-type': 'text/plain' }).end(`injected ${fault.status}`)
      return
    }
    if (fault !== undefined && 'stallMs' in fault) await new Promise((r) => setTimeout(r, fault.stallMs))
    const file = this.files.get(path)
    if (file === undefined) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found')
      return
    }
    const size = file.data?.length ?? (await stat(file.path!)).size
    // Range answered the way Naiad's own servers answer it (proto's one parser).
    const range = parseRangeHeader(req.headers.range, size)
    if (range.kind === 'unsatisfiable') {
      res.writeHead(416, { 'content-range': contentRange(range, size) }).end()
      return
    }
    const [start, end] = range.kind === 'partial' ? [range.start, range.end] : [0, size - 1]
    if (range.kind === 'partial') {
      res.writeHead(206, { 'content-length': end - start + 1, 'content-range': contentRange(range, size), 'accept-ranges': 'bytes' })
    } else {
      res.writeHead(200, { 'content-length': size, 'accept-ranges': 'bytes' })
    }
    if (req.method === 'HEAD') {
      res.end()
      return
    }
    let limit = end
    if (fault !== undefined && 'truncateAt' in fault) limit = Math.min(end, start + fault.truncateAt - 1)
    const body = file.data !== undefined ? [file.data.subarray(start, limit + 1)] : createReadStream(file.path!, { start, end: limit })
    for await (const chunk of body) {
      for (let at = 0; at < (chunk as Buffer).length && !res.destroyed; at += THROTTLE_SLICE) {
        // Looked up per slice: a test may lift (or set) a throttle while a body is under way.
        const now = this.faults.get(path)
        const rate = now !== undefined && 'bytesPerSec' in now ? now.bytesPerSec : 0
        const slice = rate > 0 ? (chunk as Buffer).subarray(at, at + THROTTLE_SLICE) : (chunk as Buffer).subarray(at)
        this.served.set(path, this.bytesServed(path) + slice.length)
        if (!res.write(slice)) {
          // Both listeners go once either fires: a long body waits for drain thousands of times.
          await new Promise<void>((resolve) => {
            const done = (): void => { res.off('drain', done); res.off('close', done); resolve() }
            res.once('drain', done)
            res.once('close', done)
          })
        }
        if (rate > 0) await new Promise((r) => setTimeout(r, (slice.length / rate) * 1000))
        else break
      }
    }
    if (limit < end) res.destroy()
    else res.end()
  }

  async stop(): Promise<void> {
    this.server?.closeAllConnections()
    await new Promise<void>((resolve) => this.server?.close(() => resolve()) ?? resolve())
  }
}
