// Mount metrics: bytes and chunks fetched (by source), cache hits, read latency, fetch
// errors, prefetch progress. Exposed two ways:
//   - live: HTTP on the unix socket named in the mount's state file, GET /stats (JSON, the
//     MountStats shape below) and GET /metrics (Prometheus text);
//   - on disk: the same JSON in `<cache-dir>/stats/<mount id>.json`, rewritten every few
//     seconds and once more on unmount, so the last numbers outlive the mount.

import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises'
import { createServer, request, type Server } from 'node:http'
import { dirname } from 'node:path'

import { NaiadError } from '@naiad/proto/contracts'

import type { ChunkCacheStats } from '../cache/chunk-cache.ts'
import type { FetchStats } from '../fetch/chunk-fetcher.ts'
import type { DaemonSourceStats } from '../fetch/daemon-source.ts'

/** Upper bounds of the read latency buckets, in milliseconds. */
const BUCKETS_MS = [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000]

export class LatencyHistogram {
  readonly counts = new Array<number>(BUCKETS_MS.length + 1).fill(0)
  count = 0
  sum = 0
  max = 0

  observe(ms: number): void {
    let i = BUCKETS_MS.findIndex((b) => ms <= b)
    if (i < 0) i = BUCKETS_MS.length
    this.counts[i]++
    this.count++
    this.sum += ms
    if (ms > this.max) this.max = ms
  }

  /** The bucket bound below which a fraction q of the reads fell (an upper estimate). */
  quantile(q: number): number {
    if (this.count === 0) return 0
    const rank = q * this.count
    let seen = 0
    for (let i = 0; i < this.counts.length; i++) {
      seen += this.counts[i]
      if (seen >= rank) return i < BUCKETS_MS.length ? Math.min(BUCKETS_MS[i], this.max) : this.max
    }
    return this.max
  }
}

export interface ReadStats {
  count: number
  bytes: number
  errors: number
  latencyMs: { count: number; sum: number; max: number; p50: number; p90: number; p99: number }
}

export interface PrefetchStats {
  enabled: boolean
  /** Files queued: the prefetch table, then the recorded access order. */
  files: number
  filesDone: number
  errors: number
  done: boolean
  /** Where the access order came from: recorded now (first start), or replayed from a record. */
  accessLog: 'recording' | 'replayed' | 'off'
}

export interface MountStats {
  ref: string
  imageDigest: string
  mountpoint: string
  pid: number
  startedAt: string
  uptimeSec: number
  image: { dataBytes: number; bootstrapBytes: number; blobs: number; chunks: number; inodes: number; files: number }
  /** Bytes of the bootstrap fetched at mount time. */
  bootstrapFetchedBytes: number
  fetch: FetchStats & { daemon?: DaemonSourceStats }
  cache: ChunkCacheStats
  reads: ReadStats
  prefetch: PrefetchStats
  /** (bootstrap + data fetched) / (bootstrap + data blobs). */
  fetchedFraction: number
}

/** Prometheus text for a stats snapshot. */
export function prometheusText(s: MountStats): string {
  const lines: string[] = []
  const metric = (name: string, type: string, help: string, samples: Array<[string, number]>): void => {
    lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`)
    for (const [labels, v] of samples) lines.push(`${name}${labels} ${v}`)
  }
  metric('naiad_nydus_fetch_bytes_total', 'counter', 'Stored chunk bytes received, by source',
    Object.entries(s.fetch.bytesBySource).map(([k, v]) => [`{source="${k}"}`, v]))
  metric('naiad_nydus_fetch_chunks_total', 'counter', 'Chunks fetched and verified', [['', s.fetch.chunks]])
  metric('naiad_nydus_fetch_requests_total', 'counter', 'Range requests that succeeded', [['', s.fetch.requests]])
  metric('naiad_nydus_fetch_errors_total', 'counter', 'Range requests that failed', [['', s.fetch.errors]])
  metric('naiad_nydus_chunk_digest_errors_total', 'counter', 'Chunks whose bytes did not match their digest', [['', s.fetch.digestErrors]])
  metric('naiad_nydus_prefetch_bytes_total', 'counter', 'Stored bytes fetched by prefetch', [['', s.fetch.prefetchBytes]])
  metric('naiad_nydus_cache_hits_total', 'counter', 'Chunk cache hits, by tier', [['{tier="memory"}', s.cache.memoryHits], ['{tier="disk"}', s.cache.diskHits]])
  metric('naiad_nydus_cache_misses_total', 'counter', 'Chunk cache misses', [['', s.cache.misses]])
  metric('naiad_nydus_reads_total', 'counter', 'FUSE reads served', [['', s.reads.count]])
  metric('naiad_nydus_read_bytes_total', 'counter', 'Bytes returned to FUSE reads', [['', s.reads.bytes]])
  metric('naiad_nydus_read_errors_total', 'counter', 'FUSE reads answered with EIO', [['', s.reads.errors]])
  metric('naiad_nydus_image_bytes', 'gauge', 'Data blob bytes of the mounted image', [['', s.image.dataBytes]])
  return `${lines.join('\n')}\n`
}

export class StatsServer {
  private readonly server: Server
  private readonly socket: string

  constructor(socket: string, snapshot: () => MountStats) {
    this.socket = socket
    this.server = createServer((req, res) => {
      const path = (req.url ?? '/').split('?')[0]
      if (req.method !== 'GET') { res.writeHead(405).end(); return }
      if (path === '/stats') {
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(snapshot()))
      } else if (path === '/metrics') {
        res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' }).end(prometheusText(snapshot()))
      } else if (path === '/healthz') {
        res.writeHead(200, { 'content-type': 'application/json' }).end('{"status":"ok"}')
      } else {
        res.writeHead(404).end()
      }
    })
  }

  async listen(): Promise<void> {
    await mkdir(dirname(this.socket), { recursive: true, mode: 0o700 })
    await rm(this.socket, { force: true })
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject)
      this.server.listen(this.socket, () => { this.server.off('error', reject); resolve() })
    })
  }

  async close(): Promise<void> {
    this.server.closeAllConnections()
    await new Promise<void>((resolve) => this.server.close(() => resolve()))
    await rm(this.socket, { force: true })
  }
}

export async function writeStatsFile(file: string, stats: MountStats): Promise<void> {
  await mkdir(dirname(file), { recursive: true })
  const tmp = `${file}.tmp-${process.pid}`
  await writeFile(tmp, JSON.stringify(stats, null, 2))
  await rename(tmp, file)
}

/** GET a path of a mount's stats socket. */
export function querySocket(socket: string, path: string, timeoutMs = 5_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath: socket, path, method: 'GET', timeout: timeoutMs }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (d: string) => { body += d })
      res.on('end', () => res.statusCode === 200 ? resolve(body) : reject(new NaiadError('NFS_ERR_MOUNT', `stats socket answered HTTP ${res.statusCode}`)))
      res.on('error', reject)
    })
    req.on('timeout', () => req.destroy(new NaiadError('NFS_ERR_MOUNT', `stats socket ${socket} did not answer within ${timeoutMs} ms`)))
    req.on('error', (err) => reject(err instanceof NaiadError ? err : new NaiadError('NFS_ERR_MOUNT', `cannot reach stats socket ${socket}: ${err.message}`, { cause: err })))
    req.end()
  })
}

export async function readStatsFile(file: string): Promise<MountStats | undefined> {
  try {
    return JSON.parse(await readFile(file, 'utf8')) as MountStats
  } catch {
    return undefined
  }
}
