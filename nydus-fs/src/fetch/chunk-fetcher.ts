// The read path below the file system: chunk indexes in, verified chunk contents out.
//
//   memory cache → disk cache → network: missing chunks of one blob that lie next to each
//   other are fetched as one range, through the first available source (the dfdaemon, else
//   the registry), every chunk decompressed and checked against its SHA-256.
//
// Concurrent readers of a chunk share one fetch. A failed range is retried with backoff
// (rotating sources) a bounded number of times inside a deadline, then the chunks fail with
// NFS_ERR_FETCH; nothing is remembered about the failure, so the next read tries afresh.

import { channel } from 'node:diagnostics_channel'

import { NaiadError, type Bootstrap, type Chunk } from '@naiad/proto/contracts'

import type { ChunkCache } from '../cache/chunk-cache.ts'
import type { BlobSource, SourceName } from './blob-source.ts'
import { FetchQueue, type FetchPriority, type Ticket } from './fetch-queue.ts'
import { NYDUS_EVENTS } from './events.ts'
import { verifyChunk } from './verify-chunk.ts'

export interface ChunkFetcherOptions {
  /** Longest a read waits for its chunks, retries included. */
  timeoutMs: number
  /** One request to a source. */
  attemptTimeoutMs: number
  /** Further attempts after the first fails. */
  retries: number
  /** First backoff; doubles per attempt up to maxBackoffMs. */
  backoffMs: number
  maxBackoffMs: number
  /** Missing chunks this close together in a blob are fetched as one range. */
  mergeGapBytes: number
  /** Largest merged range. */
  maxMergeBytes: number
  /**
   * A fetch for less than this many stored bytes takes the chunks that follow in the blob
   * along (whole, verified, cached), up to this size: the files of one directory sit side by
   * side, and one request for many small files costs little more than for one. 0: off.
   */
  amplifyBytes: number
  /**
   * A chunk that just failed fails again at once for this long. The kernel retries a failed
   * readahead page by page right away; without this, one failed read would cost the
   * application a timeout per page.
   */
  failureMemoryMs: number
  concurrency: number
  prefetchConcurrency: number
}

export interface ChunkFetcherComponents {
  bootstrap: Bootstrap
  cache: ChunkCache
  /** In order of preference. */
  sources: BlobSource[]
  /** Aborted on unmount: every fetch and every waiting read ends. */
  signal: AbortSignal
  onEvent?: (e: FetchEvent) => void
}

export type FetchEvent =
  | { type: 'fetched'; source: SourceName; bytes: number; chunks: number; priority: FetchPriority; ms: number }
  | { type: 'failed'; source: SourceName; code: string; message: string }
  | { type: 'digest'; source: SourceName; chunk: string }

export interface FetchStats {
  /** Stored bytes received, all sources. */
  bytes: number
  bytesBySource: Record<SourceName, number>
  /** Range requests that succeeded. */
  requests: number
  /** Chunks fetched and verified. */
  chunks: number
  prefetchChunks: number
  prefetchBytes: number
  /** Failed requests (each retry counts). */
  errors: number
  retries: number
  /** Chunks whose bytes did not match their digest. */
  digestErrors: number
  /** Chunks given up on (the reads that needed them got EIO). */
  failedChunks: number
}

interface Pending {
  index: number
  chunk: Chunk
  hex: string
  resolve: (data: Buffer) => void
  reject: (err: unknown) => void
  promise: Promise<Buffer>
}

export const FETCH_DEFAULTS: ChunkFetcherOptions = {
  timeoutMs: 30_000,
  attemptTimeoutMs: 10_000,
  retries: 3,
  backoffMs: 250,
  maxBackoffMs: 2_000,
  mergeGapBytes: 64 * 1024,
  maxMergeBytes: 8 * 1024 * 1024,
  amplifyBytes: 128 * 1024,
  failureMemoryMs: 1_000,
  concurrency: 8,
  prefetchConcurrency: 2
}

const CHANNELS = {
  fetched: channel(NYDUS_EVENTS.fetched),
  failed: channel(NYDUS_EVENTS.failed),
  digest: channel(NYDUS_EVENTS.digest)
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) { reject(signal.reason); return }
    const t = setTimeout(() => { signal.removeEventListener('abort', onAbort); resolve() }, ms)
    const onAbort = (): void => { clearTimeout(t); reject(signal.reason) }
    signal.addEventListener('abort', onAbort, { once: true })
  })
}

function errText(err: unknown): { code: string; message: string } {
  if (err instanceof NaiadError) return { code: err.code, message: err.message }
  const e = err as { name?: string; message?: string }
  return { code: e.name ?? 'Error', message: e.message ?? String(err) }
}

export class ChunkFetcher {
  readonly stats: FetchStats = {
    bytes: 0, bytesBySource: { daemon: 0, registry: 0 }, requests: 0, chunks: 0, prefetchChunks: 0, prefetchBytes: 0,
    errors: 0, retries: 0, digestErrors: 0, failedChunks: 0
  }
  private readonly bootstrap: Bootstrap
  private readonly compressor: 'zstd' | 'none'
  private readonly cache: ChunkCache
  private readonly sources: BlobSource[]
  private readonly signal: AbortSignal
  private readonly options: ChunkFetcherOptions
  private readonly queue: FetchQueue
  private readonly onEvent: ((e: FetchEvent) => void) | undefined
  private readonly inflight = new Map<string, { promise: Promise<Buffer>; ticket: Ticket }>()
  private readonly hexes: string[]
  private readonly recentFailures = new Map<string, { err: unknown; until: number }>()
  /** Chunk indexes of each blob in offset order, and each chunk's place there; built on first use. */
  private blobOrder: { byBlob: number[][]; pos: Int32Array } | undefined

  constructor(components: ChunkFetcherComponents, options: Partial<ChunkFetcherOptions> = {}) {
    this.bootstrap = components.bootstrap
    this.compressor = components.bootstrap.superblock!.compressor === 'none' ? 'none' : 'zstd'
    this.cache = components.cache
    this.sources = components.sources
    if (this.sources.length === 0) throw new NaiadError('NFS_ERR_FETCH', 'a chunk fetcher needs at least one source')
    this.signal = components.signal
    this.onEvent = components.onEvent
    this.options = { ...FETCH_DEFAULTS, ...options }
    this.queue = new FetchQueue(this.options)
    this.hexes = new Array<string>(this.bootstrap.chunks.length)
  }

  private emit(e: FetchEvent): void {
    const ch = CHANNELS[e.type]
    if (ch.hasSubscribers) ch.publish(e)
    this.onEvent?.(e)
  }

  hexOf(index: number): string {
    return this.hexes[index] ??= Buffer.from(this.bootstrap.chunks[index].digest).toString('hex')
  }

  /** Whether the chunk is in memory, verified on disk or already being fetched (prefetch and readahead skip those). */
  isCachedOrPending(index: number): boolean {
    const hex = this.hexOf(index)
    return this.cache.has(hex) || this.inflight.has(hex) || this.cache.isVerifiedOnDisk(hex)
  }

  /**
   * Copies bytes [from, to) of a chunk into `buf` at `off` when it is at hand: true at once
   * from memory, a promise from a disk chunk verified earlier (a read of just that range),
   * false when it is neither; then getChunks() has it verified or fetched. Nothing is copied
   * that is not verified.
   */
  readLocal(index: number, buf: Uint8Array, off: number, from: number, to: number): boolean | Promise<boolean> {
    const hex = this.hexOf(index)
    const hit = this.cache.peek(hex)
    if (hit !== undefined) {
      hit.copy(buf, off, from, to)
      return true
    }
    if (!this.cache.isVerifiedOnDisk(hex)) return false
    return this.cache.readFromDisk(hex, buf, off, from, to)
  }

  /** No fetch in flight or waiting. */
  get idle(): boolean {
    return this.queue.idle && this.inflight.size === 0
  }

  /**
   * The verified contents of the given chunks, in order. Rejects with NFS_ERR_FETCH when they
   * cannot be had within the timeout (or `signal` ends the wait), NFS_ERR_DIGEST when the
   * only bytes to be had are wrong.
   */
  async getChunks(indexes: number[], options: { priority?: FetchPriority; signal?: AbortSignal; timeoutMs?: number } = {}): Promise<Buffer[]> {
    const priority = options.priority ?? 'on-demand'
    const out: Array<Buffer | Promise<Buffer>> = new Array(indexes.length)
    const missing: Pending[] = []
    const ticket: Ticket = { priority }
    for (let i = 0; i < indexes.length; i++) {
      const index = indexes[i]
      const hex = this.hexOf(index)
      const hit = this.cache.peek(hex)
      if (hit !== undefined) { out[i] = hit; continue }
      const failed = this.recentFailure(hex)
      if (failed !== undefined) {
        const p = Promise.reject(failed)
        p.catch(() => {})
        out[i] = p
        continue
      }
      const pending = this.inflight.get(hex)
      if (pending !== undefined) {
        if (priority === 'on-demand' && pending.ticket.priority === 'prefetch') {
          pending.ticket.priority = 'on-demand'
          this.queue.pump()
        }
        out[i] = pending.promise
        continue
      }
      const p = this.pending(index, hex, ticket)
      missing.push(p)
      out[i] = p.promise
    }
    if (missing.length > 0) void this.load(missing, ticket)
    if (missing.length === 0 && out.every((x) => x instanceof Buffer)) return out as Buffer[]
    const timeoutMs = options.timeoutMs ?? this.options.timeoutMs
    const waitSignal = AbortSignal.any([this.signal, AbortSignal.timeout(timeoutMs), ...(options.signal === undefined ? [] : [options.signal])])
    return await new Promise<Buffer[]>((resolve, reject) => {
      const onAbort = (): void => {
        const why = this.signal.aborted ? 'the mount is closing' : options.signal?.aborted === true ? 'the read was cancelled' : `no data within ${timeoutMs} ms`
        reject(new NaiadError('NFS_ERR_FETCH', `chunks not available: ${why}`, { cause: waitSignal.reason }))
      }
      if (waitSignal.aborted) { onAbort(); return }
      waitSignal.addEventListener('abort', onAbort, { once: true })
      Promise.all(out).then(resolve, reject).finally(() => waitSignal.removeEventListener('abort', onAbort))
    })
  }

  private recentFailure(hex: string): unknown {
    if (this.recentFailures.size === 0) return undefined
    const f = this.recentFailures.get(hex)
    if (f === undefined) return undefined
    if (f.until > Date.now()) return f.err
    this.recentFailures.delete(hex)
    return undefined
  }

  private fail(p: Pending, err: unknown): void {
    this.stats.failedChunks++
    if (!this.signal.aborted && this.options.failureMemoryMs > 0) {
      const now = Date.now()
      if (this.recentFailures.size > 10_000) for (const [k, v] of this.recentFailures) if (v.until <= now) this.recentFailures.delete(k)
      this.recentFailures.set(p.hex, { err, until: now + this.options.failureMemoryMs })
    }
    p.reject(err)
  }

  /** A chunk about to be fetched, registered so that other readers join its fetch. */
  private pending(index: number, hex: string, ticket: Ticket): Pending {
    let resolve!: (data: Buffer) => void
    let reject!: (err: unknown) => void
    const promise = new Promise<Buffer>((res, rej) => { resolve = res; reject = rej })
    // Every waiter may give up before the fetch ends; the fetch's result must not go unhandled.
    promise.catch(() => {})
    this.inflight.set(hex, { promise, ticket })
    void promise.finally(() => { if (this.inflight.get(hex)?.promise === promise) this.inflight.delete(hex) }).catch(() => {})
    return { index, chunk: this.bootstrap.chunks[index], hex, resolve, reject, promise }
  }

  private order(): { byBlob: number[][]; pos: Int32Array } {
    if (this.blobOrder === undefined) {
      const chunks = this.bootstrap.chunks
      const byBlob: number[][] = this.bootstrap.blobs.map(() => [])
      for (let i = 0; i < chunks.length; i++) byBlob[chunks[i].blob].push(i)
      const pos = new Int32Array(chunks.length)
      for (const list of byBlob) {
        list.sort((a, b) => chunks[a].offset - chunks[b].offset)
        list.forEach((c, i) => { pos[c] = i })
      }
      this.blobOrder = { byBlob, pos }
    }
    return this.blobOrder
  }

  /** The chunks that follow small fetches in their blob, not cached anywhere, registered as pending. */
  private async amplify(toFetch: Pending[], ticket: Ticket): Promise<Pending[]> {
    const limit = this.options.amplifyBytes
    if (limit <= 0 || toFetch.length === 0) return []
    const { byBlob, pos } = this.order()
    const chunks = this.bootstrap.chunks
    const candidates: number[] = []
    const taken = new Set(toFetch.map((p) => p.index))
    for (const p of toFetch) {
      const start = p.chunk.offset
      let end = start + p.chunk.storedSize
      const list = byBlob[p.chunk.blob]
      for (let i = pos[p.index] + 1; i < list.length; i++) {
        const c = chunks[list[i]]
        if (c.offset + c.storedSize - start > limit || c.offset - end > this.options.mergeGapBytes) break
        end = Math.max(end, c.offset + c.storedSize)
        if (taken.has(list[i])) continue
        taken.add(list[i])
        const hex = this.hexOf(list[i])
        if (!this.cache.has(hex) && !this.inflight.has(hex)) candidates.push(list[i])
      }
    }
    const onDisk = await Promise.all(candidates.map((c) => this.cache.hasOnDisk(this.hexOf(c))))
    const extra: Pending[] = []
    for (let i = 0; i < candidates.length; i++) {
      const hex = this.hexOf(candidates[i])
      // Checked again: another read may have started it while the disk was asked.
      if (!onDisk[i] && !this.cache.has(hex) && !this.inflight.has(hex)) extra.push(this.pending(candidates[i], hex, ticket))
    }
    return extra
  }

  private async load(missing: Pending[], ticket: Ticket): Promise<void> {
    // The fetch is shared: it ends by its own deadline or the unmount, not a reader's. A
    // prefetch may wait behind reads for long; a reader that joins it still waits only its own timeout.
    const deadline = ticket.priority === 'prefetch' ? 10 * this.options.timeoutMs : this.options.timeoutMs
    const signal = AbortSignal.any([this.signal, AbortSignal.timeout(deadline)])
    const toFetch: Pending[] = []
    await Promise.all(missing.map(async (m) => {
      try {
        const hit = await this.cache.get(m.hex)
        if (hit !== undefined) { m.resolve(hit.data); return }
      } catch { /* a disk error is a miss */ }
      toFetch.push(m)
    }))
    let extra: Pending[] = []
    try {
      extra = await this.amplify(toFetch, ticket)
      await Promise.all(this.group([...toFetch, ...extra]).map((g) => this.fetchGroup(g, ticket, signal, this.sources)))
    } finally {
      // Whatever happened, no chunk stays pending (settling twice is a no-op), or it would
      // stay in flight and every later read of it would wait for nothing.
      for (const m of [...missing, ...extra]) m.reject(new NaiadError('NFS_ERR_FETCH', `chunk ${m.hex} fetch ended without a result`))
    }
  }

  /** Missing chunks, by blob and offset, cut into ranges worth one request each. */
  private group(pending: Pending[]): Pending[][] {
    const sorted = [...pending].sort((a, b) => a.chunk.blob - b.chunk.blob || a.chunk.offset - b.chunk.offset)
    const groups: Pending[][] = []
    let cur: Pending[] = []
    let curStart = 0
    let curEnd = 0
    for (const p of sorted) {
      const start = p.chunk.offset
      const end = start + p.chunk.storedSize
      const fits = cur.length > 0 && p.chunk.blob === cur[0].chunk.blob &&
        start - curEnd <= this.options.mergeGapBytes && end - curStart <= this.options.maxMergeBytes
      if (!fits) {
        if (cur.length > 0) groups.push(cur)
        cur = []
        curStart = start
        curEnd = end
      }
      cur.push(p)
      curEnd = Math.max(curEnd, end)
    }
    if (cur.length > 0) groups.push(cur)
    return groups
  }

  private pickSource(sources: BlobSource[], turn: number): BlobSource {
    for (let i = 0; i < sources.length; i++) {
      const s = sources[(turn + i) % sources.length]
      if (s.available()) return s
    }
    // All resting: ask the last resort anyway (the registry is always available).
    return sources[sources.length - 1]
  }

  private async fetchGroup(group: Pending[], ticket: Ticket, signal: AbortSignal, sources: BlobSource[]): Promise<void> {
    const blob = this.bootstrap.blobs[group[0].chunk.blob]
    const start = group[0].chunk.offset
    const end = Math.max(...group.map((p) => p.chunk.offset + p.chunk.storedSize)) - 1
    let lastErr: unknown
    let attempt = 0
    let turn = 0
    while (true) {
      if (signal.aborted) { lastErr ??= signal.reason; break }
      const source = this.pickSource(sources, turn)
      const t0 = performance.now()
      let stored: Buffer
      try {
        // The attempt's clock starts once it leaves the queue; the wait there counts against the deadline only.
        stored = await this.queue.run(ticket, signal, () => source.read(blob, start, end, AbortSignal.any([signal, AbortSignal.timeout(this.options.attemptTimeoutMs)]), ticket.priority))
        if (stored.length !== end - start + 1) throw new NaiadError('NFS_ERR_FETCH', `${source.name} returned ${stored.length} bytes for ${end - start + 1}`)
      } catch (err) {
        lastErr = err
        if (signal.aborted) break
        this.stats.errors++
        this.emit({ type: 'failed', source: source.name, ...errText(err) })
        // A source that just went to rest (a daemon refusing connections) is not a failed
        // attempt: the next source is asked at once.
        if (!source.available() && sources.some((s) => s.available())) { turn++; continue }
        attempt++
        if (attempt > this.options.retries) break
        this.stats.retries++
        turn++
        try {
          await sleep(Math.min(this.options.maxBackoffMs, this.options.backoffMs * 2 ** (attempt - 1)), signal)
        } catch {
          break
        }
        continue
      }
      const priority = ticket.priority
      this.stats.requests++
      this.stats.bytes += stored.length
      this.stats.bytesBySource[source.name] += stored.length
      if (priority === 'prefetch') this.stats.prefetchBytes += stored.length
      this.emit({ type: 'fetched', source: source.name, bytes: stored.length, chunks: group.length, priority, ms: performance.now() - t0 })
      const bad: Array<{ p: Pending; err: unknown }> = []
      await Promise.all(group.map(async (p) => {
        const slice = stored.subarray(p.chunk.offset - start, p.chunk.offset - start + p.chunk.storedSize)
        try {
          const data = await verifyChunk(slice, p.chunk, this.compressor)
          this.stats.chunks++
          if (priority === 'prefetch') this.stats.prefetchChunks++
          this.cache.put(p.hex, data)
          p.resolve(data)
        } catch (err) {
          this.stats.digestErrors++
          this.emit({ type: 'digest', source: source.name, chunk: p.hex })
          bad.push({ p, err })
        }
      }))
      if (bad.length === 0) return
      // Wrong bytes from one source: the others may still have the right ones (a daemon
      // that stored a bad window, a mirror); each chunk is tried alone from them.
      const rest = sources.filter((s) => s !== source)
      if (rest.length > 0) {
        await Promise.all(bad.map(({ p }) => this.fetchGroup([p], ticket, signal, rest)))
        return
      }
      for (const { p, err } of bad) this.fail(p, err)
      return
    }
    const { message } = errText(lastErr)
    for (const p of group) {
      this.fail(p, new NaiadError('NFS_ERR_FETCH', `chunk ${p.hex} (blob ${blob.digest} ${start}-${end}): ${attempt} attempt(s) failed, last: ${message}`, { cause: lastErr }))
    }
  }
}
