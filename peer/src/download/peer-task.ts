// One download on one daemon: register with the scheduler, fetch pieces from several
// parents at once (rarest first), verify each against the seed's digest, and fall back to
// the origin when no parent can serve or the scheduler is gone.

import { createHash, type Hash } from 'node:crypto'
import { channel } from 'node:diagnostics_channel'

import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import type { PeerId } from '@libp2p/interface'
import type { Logger } from 'pino'
import {
  Bitmap, EVENTS, NaiadError, parseDigest, parseRange, pieceSizeFor, toNaiadError,
  type FabricNode, type PieceResult, type RegisterTaskRequest, type ReportPiecesRequest, type TaskInfo
} from '@naiad/proto'

import { higherPriority, type Priority, type QosHooks, type Traffic } from '../qos/hooks.ts'
import type { SchedulerClient } from '../scheduler/client.ts'
import type { OriginClient } from '../source/origin.ts'
import type { PieceStore } from '../storage/piece-store.ts'
import { fetchPiece } from './piece-fetcher.ts'

export interface DownloadRequest {
  url: string
  headers: Record<string, string>
  /** `sha256:<hex>`: the whole content must match. */
  digest?: string
  /** Inclusive byte range `START-END`. */
  range?: string
  filter?: string[]
  /** Traffic class for QoS; on-demand when absent. */
  priority?: 'on-demand' | 'preheat' | 'prefetch'
}

export interface DownloadProgress {
  taskId: string
  completedBytes: number
  totalBytes: number // -1 while unknown
  fromPeers: number
  fromOrigin: number
}

export interface DownloadResult {
  taskId: string
  contentLength: number
  sha256: string
  fromPeers: number
  fromOrigin: number
  cached: boolean
}

export interface PeerTaskComponents {
  node: FabricNode
  store: PieceStore
  scheduler: SchedulerClient
  origin: OriginClient
  logger: Logger
  /** Peers that sent a bad piece, for every task of this daemon. */
  badPeers: Set<string>
  /** Bandwidth, slot and tenant limits (a no-op unless a QoS plugin installed one). */
  qos?: QosHooks
}

export interface PeerTaskOptions {
  /** Pieces in flight at once, over all parents. */
  concurrency: number
  /** Pieces in flight at once from one parent. */
  perParent: number
  pieceTimeoutMs: number
  schedulerTimeoutMs: number
  /** With nothing to fetch and no progress for this long, go to the origin. */
  stallTimeoutMs: number
  /** How often to ask the scheduler for fresh parents while waiting. */
  refreshMs: number
  /** A piece is abandoned as slow only after this long (and 4× the recent median). */
  slowPieceMinMs: number
  /** Ask parents for piece bytes on their plain-TCP data channel (see UploadServerOptions). */
  dataChannel?: boolean
}

interface ParentState {
  id: string
  peerId: PeerId
  bitmap: Bitmap
  score: number
  isSeed: boolean
  inflight: number
  failures: number
  coolUntil: number
}

const stored = channel(EVENTS.pieceStored)
const failed = channel(EVENTS.pieceFailed)
const backToSourceEvents = channel(EVENTS.backToSource)
const succeeded = channel(EVENTS.taskSucceeded)
const taskFailed = channel(EVENTS.taskFailed)
const taskStarted = channel(EVENTS.taskStarted)
const taskRegistered = channel(EVENTS.taskRegistered)

export class PeerTask {
  readonly id: string
  private readonly listeners = new Set<(p: DownloadProgress) => void>()
  private readonly digests = new Map<number, { length: number; sha256: Uint8Array }>()
  private readonly parents = new Map<string, ParentState>()
  private readonly blocked = new Set<string>()
  private readonly inflight = new Map<number, { parent: ParentState; started: number; abort: AbortController }>()
  /** Durations of the last pieces fetched from parents, to tell a slow parent from a slow network. */
  private readonly recentCosts: number[] = []
  private readonly pendingReports: PieceResult[] = []
  private contentLength = -1
  private pieceSize = 0
  private pieceCount = -1
  private seedSha256: Uint8Array | undefined
  /** SHA-256 of the whole content when it was hashed while streaming from the origin. */
  private contentSha256: Buffer | undefined
  /**
   * SHA-256 of the content's stored prefix, fed piece by piece in order as pieces land (from
   * memory when the next piece is the one that just arrived, else read back), so that a
   * whole-content check at the end need not read everything back after the last piece.
   */
  /** How finish() got the whole-content digest, for the log. */
  private wholeDigestBy = ''
  private readonly prefix: { hash: Hash; next: number; broken: boolean; running: Promise<void> | undefined; scratch?: Buffer } = { hash: createHash('sha256'), next: 0, broken: false, running: undefined }
  private taskState = 'pending'
  private taskError: { code: string; message: string } | undefined
  private fromPeers = 0
  private fromOrigin = 0
  private completedBytes = 0
  private wake: (() => void) | undefined
  private reportTimer: NodeJS.Timeout | undefined
  private trusted = false
  /** Fetches that failed because a parent could not be dialled or timed out. */
  private unreachableParents = 0
  private readonly log: Logger
  private priority: Priority

  private readonly req: DownloadRequest
  private readonly components: PeerTaskComponents
  private readonly options: PeerTaskOptions

  constructor(
    id: string,
    req: DownloadRequest,
    components: PeerTaskComponents,
    options: PeerTaskOptions
  ) {
    this.req = req
    this.components = components
    this.options = options
    this.id = id
    this.log = components.logger.child({ task: id.slice(0, 12) })
    this.priority = req.priority ?? 'on-demand'
  }

  /** A caller of a more urgent class joined: the rest of the download runs in that class. */
  raisePriority(priority: Priority): void {
    this.priority = higherPriority(this.priority, priority)
  }

  private traffic(): Traffic {
    return { priority: this.priority, tenantKey: this.req.url, direction: 'download' }
  }

  /**
   * `bytes` of bandwidth, then a transfer slot, from QoS; resolves to the slot's release.
   * The slot is taken last so that a piece never sits on one while it waits for bandwidth.
   */
  private async throttle(bytes: number, signal: AbortSignal): Promise<() => void> {
    const qos = this.components.qos!
    await qos.acquire(bytes, this.traffic(), signal)
    return await qos.slot(this.traffic(), signal)
  }

  onProgress(listener: (p: DownloadProgress) => void): () => void {
    this.listeners.add(listener)
    return () => this.listeners.delete(listener)
  }

  progress(): DownloadProgress {
    return {
      taskId: this.id,
      completedBytes: this.completedBytes,
      totalBytes: this.contentLength,
      fromPeers: this.fromPeers,
      fromOrigin: this.fromOrigin
    }
  }

  private emit(): void {
    const p = this.progress()
    for (const l of this.listeners) l(p)
  }

  async run(signal: AbortSignal): Promise<DownloadResult> {
    const { store, scheduler } = this.components
    const unpin = store.pin(this.id)
    const started = Date.now()
    try {
      const existing = store.getTask(this.id)
      if (existing?.complete === true && existing.sha256 !== null) {
        this.checkUserDigest(existing.sha256)
        this.announceCached(existing.pieceSize, existing.contentLength, existing.pieceCount, existing.sha256).catch(() => {})
        return { taskId: this.id, contentLength: existing.contentLength, sha256: existing.sha256.toString('hex'), fromPeers: 0, fromOrigin: 0, cached: true }
      }
      taskStarted.publish({ taskId: this.id, url: this.req.url })
      let info: TaskInfo | undefined
      if (scheduler.available) {
        try {
          info = await scheduler.registerTask(this.registration(), AbortSignal.any([signal, AbortSignal.timeout(this.options.schedulerTimeoutMs)]))
        } catch (err) {
          this.log.warn({ err: (err as Error).message }, 'scheduler unavailable, going to the origin')
        }
      }
      taskRegistered.publish({ taskId: this.id, scheduled: info !== undefined, backToSource: info?.backToSource ?? false })
      if (info === undefined) {
        await this.backToSource('scheduler unavailable', signal)
      } else {
        this.applyInfo(info)
        if (info.backToSource) {
          this.trusted = true
          await this.backToSource('scheduler chose this peer to fetch from the origin', signal)
        } else {
          await this.swarm(signal)
        }
      }
      const sha = await this.finish()
      this.log.info({ ms: Date.now() - started, fromPeers: this.fromPeers, fromOrigin: this.fromOrigin, wholeDigest: this.wholeDigestBy }, 'download complete')
      succeeded.publish({ taskId: this.id, contentLength: this.contentLength, durationMs: Date.now() - started, fromPeers: this.fromPeers, fromOrigin: this.fromOrigin })
      return { taskId: this.id, contentLength: this.contentLength, sha256: sha.toString('hex'), fromPeers: this.fromPeers, fromOrigin: this.fromOrigin, cached: false }
    } catch (err) {
      const e = toNaiadError(err, 'DFD_ERR_TASK_FAILED')
      taskFailed.publish({ taskId: this.id, code: e.code, message: e.message, durationMs: Date.now() - started })
      await this.flushReports({ state: 'failed', error: { code: e.code, message: e.message } }).catch(() => {})
      throw e
    } finally {
      if (this.reportTimer !== undefined) clearTimeout(this.reportTimer)
      unpin()
    }
  }

  /**
   * Tells the scheduler that this daemon holds a complete task (after a restart of either
   * side the scheduler may not know), so that it can serve as a parent.
   */
  private async announceCached(pieceSize: number, contentLength: number, pieceCount: number, sha256: Buffer): Promise<void> {
    const { scheduler, store } = this.components
    if (!scheduler.available) return
    const info = await scheduler.registerTask(this.registration(), AbortSignal.timeout(this.options.schedulerTimeoutMs))
    this.trusted = info.backToSource
    const results: PieceResult[] = []
    for (const num of store.bitmap(this.id).pieces()) {
      const p = store.getPiece(this.id, num)
      if (p !== undefined) results.push({ num, parentId: '', length: p.length, costMs: 0, sha256: this.trusted ? p.sha256 : new Uint8Array(0), errorCode: '' })
    }
    await scheduler.reportPieces({
      taskId: this.id,
      results,
      state: 'succeeded',
      ...(this.trusted ? { contentLength, pieceSize, pieceCount, sha256 } : {})
    }, AbortSignal.timeout(this.options.schedulerTimeoutMs))
  }

  private registration(): RegisterTaskRequest {
    return {
      taskId: this.id,
      url: this.req.url,
      headers: Object.entries(this.req.headers).map(([name, value]) => ({ name, value })),
      digest: this.req.digest ?? '',
      range: this.req.range ?? '',
      filter: this.req.filter ?? []
    }
  }

  private applyInfo(info: TaskInfo): void {
    if (info.contentLength >= 0) this.contentLength = info.contentLength
    if (info.pieceSize > 0) this.pieceSize = info.pieceSize
    if (info.pieceCount >= 0) this.pieceCount = info.pieceCount
    if (info.sha256.length === 32) this.seedSha256 = info.sha256
    for (const p of info.pieces) this.digests.set(p.num, { length: p.length, sha256: p.sha256 })
    this.taskState = info.state
    this.taskError = info.error
    if (this.pieceSize > 0) {
      this.components.store.ensureTask(this.id, this.req.url, this.pieceSize)
      if (this.contentLength >= 0) this.components.store.setTaskLength(this.id, this.contentLength, this.pieceCount)
    }
  }

  private complete(): boolean {
    return this.pieceCount >= 0 && this.pieceSize > 0 && this.components.store.bitmap(this.id).count() >= this.pieceCount
  }

  /** Pieces from parents until every piece is here; the origin when the swarm cannot help. */
  private async swarm(signal: AbortSignal): Promise<void> {
    let lastProgress = Date.now()
    let lastRefresh = 0
    let done = this.completedBytes
    let published = this.digests.size
    while (!this.complete()) {
      signal.throwIfAborted()
      const now = Date.now()
      if (now - lastRefresh >= this.options.refreshMs || (this.inflight.size === 0 && now - lastRefresh >= 50)) {
        lastRefresh = now
        await this.refreshParents(signal)
        // Reports held back while the scheduler was unreachable go out once it is back,
        // not only when the next piece lands: other peers schedule from our bitmap.
        if (this.pendingReports.length > 0 && this.reportTimer === undefined) this.flushReports({}).catch(() => {})
      }
      // Progress is ours or the seed's: a slow origin is not a stalled swarm.
      if (this.completedBytes !== done || this.digests.size !== published) {
        done = this.completedBytes
        published = this.digests.size
        lastProgress = Date.now()
      }
      this.abortSlowFetches()
      const started = this.scheduleMore(signal)
      if (this.inflight.size === 0 && started === 0) {
        if (this.taskState === 'failed') {
          return this.backToSource(`seed failed: ${this.taskError?.code ?? 'unknown'} ${this.taskError?.message ?? ''}`.trim(), signal)
        }
        if (!this.components.scheduler.available && this.usableParents() === 0) {
          return this.backToSource('scheduler lost and no parent can serve', signal)
        }
        if (this.unreachableParents > 0 && this.reachableParents() === 0) {
          return this.backToSource('no parent is reachable', signal)
        }
        if (Date.now() - lastProgress > this.options.stallTimeoutMs) {
          return this.backToSource(`no parent could serve for ${this.options.stallTimeoutMs} ms`, signal)
        }
      }
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, this.inflight.size === 0 ? 100 : this.options.refreshMs)
        this.wake = () => { clearTimeout(t); resolve() }
      })
      this.wake = undefined
    }
  }

  /** Parents not blocked and not cooling down after failing to connect or answer. */
  private reachableParents(): number {
    const now = Date.now()
    let n = 0
    for (const p of this.parents.values()) if (!this.blocked.has(p.id) && p.coolUntil <= now) n++
    return n
  }

  private usableParents(): number {
    let n = 0
    for (const p of this.parents.values()) if (!this.blocked.has(p.id)) n++
    return n
  }

  private async refreshParents(signal: AbortSignal): Promise<void> {
    const { scheduler } = this.components
    if (!scheduler.available) return
    try {
      const res = await scheduler.getParents(this.id, 8, AbortSignal.any([signal, AbortSignal.timeout(this.options.schedulerTimeoutMs)]))
      if (res.task !== undefined) this.applyInfo(res.task)
      const seen = new Set<string>()
      for (const p of res.parents) {
        if (this.blocked.has(p.id) || this.components.badPeers.has(p.id)) continue
        seen.add(p.id)
        let st = this.parents.get(p.id)
        if (st === undefined) {
          const peerId = peerIdFromString(p.id)
          await this.components.node.peerStore.merge(peerId, { multiaddrs: p.multiaddrs.map((a) => multiaddr(a)) }).catch(() => {})
          st = { id: p.id, peerId, bitmap: Bitmap.from(p.bitmap), score: p.score, isSeed: p.isSeed, inflight: 0, failures: 0, coolUntil: 0 }
          this.parents.set(p.id, st)
        } else {
          st.bitmap = Bitmap.from(p.bitmap)
          st.score = p.score
        }
      }
      // Parents the scheduler dropped (gone, unhealthy) are dropped here once idle.
      for (const [id, st] of this.parents) if (!seen.has(id) && st.inflight === 0) this.parents.delete(id)
    } catch (err) {
      this.log.debug({ err: (err as Error).message }, 'getParents failed; keeping the parents we have')
    }
  }

  private scheduleMore(signal: AbortSignal): number {
    if (this.inflight.size >= this.options.concurrency || this.pieceSize === 0) return 0
    const store = this.components.store
    const have = store.bitmap(this.id)
    const now = Date.now()
    const usable = [...this.parents.values()].filter((p) => !this.blocked.has(p.id) && p.coolUntil <= now)
    const candidates: Array<{ num: number; holders: ParentState[] }> = []
    for (const [num] of this.digests) {
      if (have.has(num) || this.inflight.has(num)) continue
      const holders = usable.filter((p) => p.bitmap.has(num))
      if (holders.length > 0) candidates.push({ num, holders })
    }
    // Rarest first keeps rare pieces from vanishing with the one peer that holds them;
    // among equally rare pieces a random order spreads children over different pieces.
    candidates.sort((a, b) => a.holders.length - b.holders.length || Math.random() - 0.5)
    // The seed's uplink is shared by every daemon of the task: while other peers hold pieces,
    // take one piece at a time from the seed and the rest from peers, so that the swarm
    // multiplies the seed's bandwidth instead of queueing on it.
    const peersServe = usable.some((p) => !p.isSeed && p.bitmap.count() > 0)
    const limitOf = (p: ParentState): number => (p.isSeed && peersServe ? 1 : this.options.perParent)
    let started = 0
    for (const { num, holders } of candidates) {
      if (this.inflight.size >= this.options.concurrency) break
      const free = holders.filter((p) => p.inflight < limitOf(p))
      if (free.length === 0) continue
      free.sort((a, b) => Number(a.isSeed) - Number(b.isSeed) || a.inflight - b.inflight || b.score - a.score)
      this.startFetch(num, free[0], signal)
      started++
    }
    return started
  }

  /**
   * A piece taking four times as long as the recent median (and at least two seconds)
   * while another parent holds it is abandoned: the slow parent cools down, loses score
   * with the scheduler, and the piece goes elsewhere.
   */
  private abortSlowFetches(): void {
    if (this.recentCosts.length < 2) return
    const sorted = [...this.recentCosts].sort((a, b) => a - b)
    const limit = Math.max(this.options.slowPieceMinMs, 4 * sorted[Math.floor(sorted.length / 2)])
    const now = Date.now()
    for (const [num, f] of this.inflight) {
      if (now - f.started < limit || f.abort.signal.aborted) continue
      const elsewhere = [...this.parents.values()].some((p) => p !== f.parent && !this.blocked.has(p.id) && p.bitmap.has(num))
      if (!elsewhere) continue
      f.abort.abort(new NaiadError('DFD_ERR_PIECE_SLOW', `piece ${num} from ${f.parent.id} took over ${limit} ms (recent median ${sorted[Math.floor(sorted.length / 2)]} ms)`))
    }
  }

  private startFetch(num: number, parent: ParentState, signal: AbortSignal): void {
    const expected = this.digests.get(num)!
    const abort = new AbortController()
    let t0 = Date.now()
    const entry = { parent, started: t0, abort }
    this.inflight.set(num, entry)
    parent.inflight++
    const fetchSignal = AbortSignal.any([signal, abort.signal])
    // While QoS holds the piece back it is not slow: its clock starts once it may move.
    if (this.components.qos?.active === true) entry.started = Number.POSITIVE_INFINITY
    const admitted = this.components.qos?.active === true ? this.throttle(expected.length, fetchSignal) : Promise.resolve(() => {})
    admitted.then((release) => {
      t0 = Date.now()
      entry.started = t0
      return fetchPiece(this.components.node, parent.peerId, { taskId: this.id, num, length: expected.length, sha256: expected.sha256 }, {
        signal: fetchSignal,
        timeoutMs: this.options.pieceTimeoutMs,
        dataChannel: this.options.dataChannel
      }).finally(release)
    }).then(async (data) => {
      await this.components.store.writePiece(this.id, { num, offset: num * this.pieceSize, length: data.length, sha256: Buffer.from(expected.sha256) }, data)
      this.extendPrefixHash(num, data)
      const costMs = Date.now() - t0
      this.recentCosts.push(costMs)
      if (this.recentCosts.length > 16) this.recentCosts.shift()
      parent.failures = 0
      this.fromPeers += data.length
      this.completedBytes += data.length
      stored.publish({ taskId: this.id, num, length: data.length, source: 'peer', parentId: parent.id, costMs, seed: parent.isSeed })
      this.queueReport({ num, parentId: parent.id, length: data.length, costMs, sha256: new Uint8Array(0), errorCode: '' })
      this.emit()
    }, (err: unknown) => {
      const e = abort.signal.aborted && abort.signal.reason instanceof NaiadError ? abort.signal.reason : toNaiadError(err, 'DFD_ERR_PIECE_UNAVAILABLE')
      failed.publish({ taskId: this.id, num, parentId: parent.id, code: e.code })
      if (e.code === 'DFD_ERR_PIECE_DIGEST') {
        // A parent that sends one bad piece is never asked again, by any task of this daemon.
        this.blocked.add(parent.id)
        this.components.badPeers.add(parent.id)
        this.log.warn({ parent: parent.id, piece: num, err: e.message }, 'parent sent a corrupt piece; blocked')
      } else {
        if (e.code === 'PROTO_ERR_DIAL' || e.code === 'PROTO_ERR_TIMEOUT') this.unreachableParents++
        parent.failures++
        parent.coolUntil = Date.now() + Math.min(5000, 250 * 2 ** parent.failures)
        if (parent.failures >= 3) this.parents.delete(parent.id)
        this.log.debug({ parent: parent.id, piece: num, err: e.message }, 'piece fetch failed')
      }
      this.queueReport({ num, parentId: parent.id, length: 0, costMs: Date.now() - t0, sha256: new Uint8Array(0), errorCode: e.code })
    }).finally(() => {
      this.inflight.delete(num)
      parent.inflight--
      this.wake?.()
    })
  }

  private queueReport(result: PieceResult): void {
    this.pendingReports.push(result)
    if (this.reportTimer !== undefined) return
    this.reportTimer = setTimeout(() => {
      this.reportTimer = undefined
      this.flushReports({}).catch(() => {})
    }, 100)
  }

  private async flushReports(extra: Partial<ReportPiecesRequest>): Promise<void> {
    const { scheduler } = this.components
    if (!scheduler.available) return
    const results = this.pendingReports.splice(0)
    if (results.length === 0 && Object.keys(extra).length === 0) return
    try {
      await scheduler.reportPieces({ taskId: this.id, results, ...extra }, AbortSignal.timeout(this.options.schedulerTimeoutMs))
    } catch (err) {
      // Keep piece results for the next flush; scheduler bitmaps are only hints anyway.
      if (this.pendingReports.length < 4096) this.pendingReports.unshift(...results)
      throw err
    }
  }

  /** Reads the whole content from the origin, storing the pieces not yet here. */
  private async backToSource(reason: string, signal: AbortSignal): Promise<void> {
    backToSourceEvents.publish({ taskId: this.id, reason })
    this.log.info({ reason, trusted: this.trusted }, 'back to source')
    let lastErr: unknown
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        await this.readOrigin(signal)
        return
      } catch (err) {
        lastErr = err
        const code = (err as NaiadError).code
        // Only a body cut off mid-way is worth another full attempt; the origin client
        // already retried connection failures and 5xx answers.
        if (signal.aborted || (code !== 'DFD_ERR_ORIGIN_TRUNCATED' && code !== undefined)) throw err
      }
    }
    throw lastErr
  }

  private async readOrigin(signal: AbortSignal): Promise<void> {
    const { origin, store } = this.components
    // Origin bytes are shaped as they are read; an origin stream takes no slot, since
    // pausing its body for long would break the connection.
    const qos = this.components.qos?.active === true ? this.components.qos : undefined
    const range = this.req.range === undefined ? undefined : parseRange(this.req.range)
    const res = await origin.open({ url: this.req.url, headers: this.req.headers, range, signal })
    const length = res.contentLength
    if (this.contentLength >= 0 && length >= 0 && length !== this.contentLength) {
      res.cancel()
      throw new NaiadError('DFD_ERR_ORIGIN_CHANGED', `origin now announces ${length} bytes, the task has ${this.contentLength}`)
    }
    if (this.pieceSize === 0) this.pieceSize = pieceSizeFor(length)
    if (length >= 0) {
      this.contentLength = length
      this.pieceCount = Math.ceil(length / this.pieceSize)
    }
    store.ensureTask(this.id, this.req.url, this.pieceSize)
    if (length >= 0) store.setTaskLength(this.id, length, this.pieceCount)
    if (this.trusted) {
      await this.flushReports({ contentLength: this.contentLength, pieceSize: this.pieceSize, pieceCount: this.pieceCount }).catch(() => {})
    }
    const whole = createHash('sha256')
    const pieceSize = this.pieceSize
    const buf = Buffer.allocUnsafe(pieceSize)
    let fill = 0
    let num = 0
    let total = 0
    let t0 = Date.now()
    const flushPiece = async (): Promise<void> => {
      const data = buf.subarray(0, fill)
      const sha = createHash('sha256').update(data).digest()
      const known = this.digests.get(num)
      if (known !== undefined && !sha.equals(known.sha256)) {
        throw new NaiadError('DFD_ERR_ORIGIN_CHANGED', `piece ${num} from the origin differs from the digest the seed published`)
      }
      if (!store.hasPiece(this.id, num)) {
        await store.writePiece(this.id, { num, offset: num * pieceSize, length: data.length, sha256: sha }, data)
        this.fromOrigin += data.length
        this.completedBytes += data.length
        stored.publish({ taskId: this.id, num, length: data.length, source: 'origin', parentId: '', costMs: Date.now() - t0 })
        this.queueReport({ num, parentId: '', length: data.length, costMs: Date.now() - t0, sha256: this.trusted ? sha : new Uint8Array(0), errorCode: '' })
        this.emit()
      }
      this.digests.set(num, { length: data.length, sha256: sha })
      num++
      fill = 0
      t0 = Date.now()
      // The store has written the bytes and nothing else holds them: the buffer is reused,
      // sparing the collector a piece-sized allocation per piece.
    }
    try {
      for await (const chunk of res.body) {
        if (qos !== undefined) await qos.acquire(chunk.length, this.traffic(), signal)
        whole.update(chunk)
        total += chunk.length
        if (length >= 0 && total > length) throw new NaiadError('DFD_ERR_ORIGIN_CHANGED', `origin sent more than its announced ${length} bytes`)
        let pos = 0
        while (pos < chunk.length) {
          const n = Math.min(pieceSize - fill, chunk.length - pos)
          chunk.copy(buf, fill, pos, pos + n)
          fill += n
          pos += n
          if (fill === pieceSize) await flushPiece()
        }
      }
    } catch (err) {
      res.cancel()
      if (err instanceof NaiadError) throw err
      signal.throwIfAborted()
      throw new NaiadError('DFD_ERR_ORIGIN_TRUNCATED', `origin body failed after ${total} bytes: ${(err as Error).message}`, { cause: err })
    }
    if (fill > 0) await flushPiece()
    if (length >= 0 && total !== length) {
      throw new NaiadError('DFD_ERR_ORIGIN_TRUNCATED', `origin closed the body after ${total} of ${length} bytes`)
    }
    this.contentLength = total
    this.pieceCount = num
    store.setTaskLength(this.id, total, num)
    const sha = whole.digest()
    if (this.seedSha256 !== undefined && !sha.equals(this.seedSha256)) {
      throw new NaiadError('DFD_ERR_ORIGIN_CHANGED', 'origin content differs from what the seed published')
    }
    if (this.trusted) this.seedSha256 = sha
    // Every byte passed through the hash on its way to the store: finish() need not read them back.
    this.contentSha256 = sha
  }

  /**
   * Feeds the prefix hash with every stored piece from its cursor on, in order. One loop at
   * a time: pieces that land while it runs are read back by it, so it never holds more than
   * the one piece it was started with.
   */
  private extendPrefixHash(num: number, data: Buffer): void {
    const p = this.prefix
    if (p.broken || p.running !== undefined) return
    const { store } = this.components
    p.running = (async () => {
      if (num === p.next) {
        p.hash.update(data)
        p.next++
      }
      for (;;) {
        const piece = store.getPiece(this.id, p.next)
        if (piece === undefined) return
        if (piece.offset !== p.next * this.pieceSize) throw new Error(`piece ${p.next} is stored at ${piece.offset}`)
        p.scratch ??= Buffer.allocUnsafe(this.pieceSize)
        const bytes = p.scratch.subarray(0, piece.length)
        await store.readInto(this.id, piece.offset, bytes)
        p.hash.update(bytes)
        p.next++
      }
    })().catch((err: unknown) => {
      // Only a shortcut is lost: finish() then reads the content back.
      p.broken = true
      this.log.debug({ err: (err as Error).message }, 'prefix hash stopped')
    }).finally(() => { p.running = undefined })
  }

  /** The prefix hash when it covers the whole content, else undefined. */
  private async prefixDigest(): Promise<Buffer | undefined> {
    const p = this.prefix
    await p.running
    if (p.broken || this.pieceCount < 0 || p.next !== this.pieceCount || this.pieceSize <= 0) return undefined
    if (this.components.store.bitmap(this.id).count() !== this.pieceCount) return undefined
    p.broken = true // a digest can be taken once
    return p.hash.digest()
  }

  /** Verifies the whole content, marks it complete and tells the scheduler. */
  private async finish(): Promise<Buffer> {
    const { store } = this.components
    // Every piece matching the digest the seed published makes the content the seed's, whose
    // SHA-256 the seed published too: no need to read it all back. A digest the user gave
    // still gets a full hash, as the one check that does not trust the seed's digests.
    let sha: Buffer | undefined
    if (this.contentSha256 !== undefined) {
      sha = this.contentSha256
      this.wholeDigestBy = 'origin-stream'
    } else if (this.matchesSeedDigests()) {
      sha = Buffer.from(this.seedSha256!)
      this.wholeDigestBy = 'seed-digests'
    } else {
      sha = await this.prefixDigest()
      this.wholeDigestBy = sha === undefined ? 'read-back' : 'in-order'
    }
    if (sha === undefined) {
      const whole = createHash('sha256')
      const step = 8 * 1024 * 1024
      for (let pos = 0; pos < this.contentLength; pos += step) {
        whole.update(await store.read(this.id, pos, Math.min(step, this.contentLength - pos)))
      }
      sha = whole.digest()
    }
    if (this.seedSha256 !== undefined && !sha.equals(this.seedSha256)) {
      await store.deleteTask(this.id)
      throw new NaiadError('DFD_ERR_DIGEST_MISMATCH', `content SHA-256 ${sha.toString('hex')} differs from the seed's ${Buffer.from(this.seedSha256).toString('hex')}`)
    }
    try {
      this.checkUserDigest(sha)
    } catch (err) {
      await store.deleteTask(this.id)
      throw err
    }
    store.complete(this.id, sha)
    if (this.reportTimer !== undefined) {
      clearTimeout(this.reportTimer)
      this.reportTimer = undefined
    }
    await this.flushReports({
      state: 'succeeded',
      ...(this.trusted ? { contentLength: this.contentLength, pieceSize: this.pieceSize, pieceCount: this.pieceCount, sha256: sha } : {})
    }).catch((err: unknown) => this.log.debug({ err: (err as Error).message }, 'final report failed'))
    return sha
  }

  /** The seed published a content digest, no user digest was given, and every stored piece has the seed's piece digest. */
  private matchesSeedDigests(): boolean {
    if (this.seedSha256?.length !== 32 || (this.req.digest !== undefined && this.req.digest !== '') || this.pieceCount < 0) return false
    const { store } = this.components
    for (let num = 0; num < this.pieceCount; num++) {
      const want = this.digests.get(num)
      const have = store.getPiece(this.id, num)
      if (want === undefined || have === undefined || !have.sha256.equals(want.sha256)) return false
    }
    return true
  }

  private checkUserDigest(sha: Buffer): void {
    if (this.req.digest === undefined || this.req.digest === '') return
    const want = parseDigest(this.req.digest)
    if (sha.toString('hex') !== want.hex) {
      throw new NaiadError('DFD_ERR_DIGEST_MISMATCH', `content has sha256:${sha.toString('hex')}, expected ${this.req.digest}`)
    }
  }
}
