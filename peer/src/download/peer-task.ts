// One download on one node, the coordinator of its parts: register with the scheduler
// (registration.ts), fetch pieces from parents over the data channel — planner.ts decides
// which from whom, piece-fetcher.ts fetches each, poll-policy.ts paces the polls of the
// scheduler and says when the swarm cannot help — or read the origin when this node is the
// task's source or the swarm cannot help (back-to-source.ts), then settle the whole
// content's digest (verifier.ts) and tell the scheduler. What the scheduler said of the
// task is in task-view.ts, how far the download got in task-progress.ts. Piece results go
// out in batches (report-batcher.ts). Every promise it starts is awaited or caught: a
// failing piece fails the piece (or the task), never the process.

import { channel } from 'node:diagnostics_channel'

import type { Logger } from 'pino'
import {
  EVENTS, higherPriority, NaiadError, toNaiadError,
  type Priority, type TaskInfo
} from '@naiad/proto'

import type { DataClient } from '../channel/data-client.ts'
import type { QosHooks, Traffic } from '../qos/hooks.ts'
import { PollNotDue, type SchedulerClient } from '../scheduler/client.ts'
import type { OriginClient } from '../source/origin.ts'
import type { LivePieces } from '../storage/live-pieces.ts'
import type { PieceStore } from '../storage/piece-store.ts'
import { readFromOrigin } from './back-to-source.ts'
import { ParentSet } from './parent-set.ts'
import { PieceFetcher, type FetchTask } from './piece-fetcher.ts'
import { PiecePlanner, planTurn } from './planner.ts'
import { giveUpReason, PollPolicy, schedulerMayReturn, stallAfterMs, type Turn } from './poll-policy.ts'
import { Registration, registrationRequest } from './registration.ts'
import { ReportBatcher } from './report-batcher.ts'
import type { StagingPool } from './staging.ts'
import { TaskProgress } from './task-progress.ts'
import { TaskView } from './task-view.ts'
import type { DownloadProgress, DownloadRequest, DownloadResult, PeerTaskOptions } from './types.ts'
import { checkContent, checkUserDigest, wholeDigest } from './verifier.ts'

export interface PeerTaskComponents {
  store: PieceStore
  scheduler: SchedulerClient
  origin: OriginClient
  data: DataClient
  /** Pieces this node's source reads are writing (offered live to peers). */
  live: LivePieces
  /** Tasks this node is the trusted source of right now (the data server offers their live pieces). */
  sources: Set<string>
  logger: Logger
  /** Peers that sent a bad piece, for every task of this node. */
  badPeers: Set<string>
  /** Bandwidth, slot and tenant limits (a no-op unless a QoS plugin installed one). */
  qos?: QosHooks
  /** Staging buffers for bytes on their way to the store. */
  staging: StagingPool
}

const backToSourceEvents = channel(EVENTS.backToSource)
const succeeded = channel(EVENTS.taskSucceeded)
const taskFailed = channel(EVENTS.taskFailed)
const taskStarted = channel(EVENTS.taskStarted)
const taskRegistered = channel(EVENTS.taskRegistered)

const REPORT_DELAY_MS = 100
/** Longest wait at the end for the source's whole-content digest before reading the content back. */
const SOURCE_DIGEST_WAIT_MS = 2_000

export class PeerTask {
  readonly id: string
  private readonly tally: TaskProgress
  private readonly view = new TaskView()
  private readonly parents: ParentSet
  private readonly fetcher: PieceFetcher
  private readonly reports: ReportBatcher
  private readonly registration: Registration
  /** Which piece from whom: its ranking of the missing pieces is kept between polls. */
  private readonly planner = new PiecePlanner()
  /** SHA-256 of the whole content when it was hashed while streaming from the origin. */
  private originSha256: Buffer | undefined
  /** The task's pieces were deleted (its content failed its digest): the scheduler must forget them too. */
  private dropped = false
  /** How finish() found the whole content's digest, for the log. */
  private wholeDigestBy = ''
  private wake: (() => void) | undefined
  /** This node is the task's trusted source: its digests are the reference. */
  private trusted = false
  /** A failure that ends the task (the cache cannot take it), raised by the loop. */
  private fatal: NaiadError | undefined
  /** Ask the scheduler again at the next turn (a refused grant, an empty plan). */
  private refreshNow = true
  /** Calls to getParents (in the completion line: what the download cost the scheduler). */
  private polls = 0
  private readonly log: Logger
  private priority: Priority
  private readonly req: DownloadRequest
  private readonly c: PeerTaskComponents
  private readonly options: PeerTaskOptions

  constructor(id: string, req: DownloadRequest, components: PeerTaskComponents, options: PeerTaskOptions) {
    this.req = req
    this.c = components
    this.options = options
    this.id = id
    this.log = components.logger.child({ task: id.slice(0, 12) })
    this.priority = req.priority ?? 'on-demand'
    this.parents = new ParentSet(components.badPeers)
    this.reports = new ReportBatcher(components.scheduler, { taskId: id, delayMs: REPORT_DELAY_MS, timeoutMs: options.schedulerTimeoutMs, trusted: () => this.trusted })
    this.tally = new TaskProgress(id, this.view, () => components.store.bitmap(id))
    this.registration = new Registration(registrationRequest(id, req), { ...components, log: this.log }, options)
    this.fetcher = new PieceFetcher(this.fetchTask(), { ...components, parents: this.parents, reports: this.reports, log: this.log }, {
      pieceTimeoutMs: options.pieceTimeoutMs,
      reserveWaitMs: options.reserveWaitMs ?? options.stallTimeoutMs,
      slowPieceMinMs: options.slowPieceMinMs
    })
  }

  /** What the piece fetcher reads of this download, and how its results land here. */
  private fetchTask(): FetchTask {
    return {
      id: this.id,
      piece: (num) => ({ offset: num * this.view.pieceSize, length: this.view.pieceLength(num) }),
      digest: (num) => this.view.digests.get(num),
      isSource: (peerId) => peerId === this.view.sourcePeer,
      grant: () => this.view.grant,
      traffic: () => this.traffic(),
      stored: ({ num, length, sha256, contentSha256 }) => {
        if (!this.view.digests.has(num) && sha256 !== undefined) this.view.digests.set(num, sha256)
        if (this.view.sourceSha256 === undefined && contentSha256 !== undefined) this.view.sourceSha256 = contentSha256
        this.tally.add('peer', length)
        this.tally.advance()
      },
      progressed: () => this.tally.emit(),
      failed: (verdict, e) => {
        if (verdict.fatal) this.fatal ??= e
        if (verdict.refresh) this.refreshNow = true
      },
      settled: () => this.wake?.()
    }
  }

  /** A caller of a more urgent class joined: the rest of the download runs in that class. */
  raisePriority(priority: Priority): void {
    this.priority = higherPriority(this.priority, priority)
  }

  private traffic(): Traffic {
    return { priority: this.priority, tenantKey: this.req.url, direction: 'download' }
  }

  onProgress(listener: (p: DownloadProgress) => void): () => void {
    return this.tally.listen(listener)
  }

  progress(): DownloadProgress {
    return this.tally.snapshot()
  }

  /** Bytes from the start that are verified and may be served now (see TaskView.servable). */
  servable(): number {
    return this.tally.servable()
  }

  /** Resolves at the next change of progress (a piece, the end), or when `signal` fires. */
  changed(signal?: AbortSignal): Promise<void> {
    return this.tally.changed(signal)
  }

  async run(signal: AbortSignal): Promise<DownloadResult> {
    const { store } = this.c
    const unpin = store.pin(this.id)
    const started = Date.now()
    const onTaskAbort = (): void => {
      this.fetcher.abortAll(signal.reason)
      this.wake?.()
    }
    signal.addEventListener('abort', onTaskAbort, { once: true })
    try {
      const existing = store.getTask(this.id)
      // A file changed since it completed (a hard-linked output written to) is dropped, and
      // fetched again. The check is synchronous: a cached task is finished before run() first
      // yields, as the mirror's first wait for servable bytes expects.
      const changed = existing?.complete === true && store.fileChanged(this.id)
      if (changed) await store.checkFile(this.id)
      if (!changed && existing?.complete === true && existing.sha256 !== null) {
        checkUserDigest(existing.sha256, this.req.digest)
        this.view.contentLength = existing.contentLength
        this.view.pieceSize = existing.pieceSize
        this.view.pieceCount = existing.pieceCount
        this.tally.finished = true
        // Not awaited: the cached content is served now, while a busy supernode may put the
        // announce off for up to a minute; the task's signal, which shutdown aborts, ends that wait.
        void this.registration.announceComplete({ contentLength: existing.contentLength, pieceSize: existing.pieceSize, pieceCount: existing.pieceCount, sha256: existing.sha256 }, signal)
        return { taskId: this.id, contentLength: existing.contentLength, sha256: existing.sha256.toString('hex'), fromPeers: 0, fromOrigin: 0, cached: true }
      }
      taskStarted.publish({ taskId: this.id, url: this.req.url })
      const info = await this.registration.register(signal)
      taskRegistered.publish({ taskId: this.id, scheduled: info !== undefined, backToSource: info?.backToSource ?? false })
      if (info === undefined) {
        await this.backToSource('scheduler unavailable', signal)
      } else {
        this.applyInfo(info)
        if (info.backToSource) {
          this.trusted = true
          this.c.sources.add(this.id)
          await this.backToSource('scheduler chose this peer to fetch from the origin', signal)
        } else {
          await this.swarm(signal)
        }
      }
      const sha = await this.finish(signal)
      this.log.info({ ms: Date.now() - started, fromPeers: this.tally.fromPeers, fromOrigin: this.tally.fromOrigin, wholeDigest: this.wholeDigestBy, polls: this.polls }, 'download complete')
      succeeded.publish({ taskId: this.id, contentLength: this.view.contentLength, durationMs: Date.now() - started, fromPeers: this.tally.fromPeers, fromOrigin: this.tally.fromOrigin })
      return { taskId: this.id, contentLength: this.view.contentLength, sha256: sha.toString('hex'), fromPeers: this.tally.fromPeers, fromOrigin: this.tally.fromOrigin, cached: false }
    } catch (err) {
      const e = toNaiadError(err, 'DFD_ERR_TASK_FAILED')
      taskFailed.publish({ taskId: this.id, code: e.code, message: e.message, durationMs: Date.now() - started })
      await this.fetcher.stopAll(e)
      await this.reports.flush({ state: 'failed', error: { code: e.code, message: e.message } }).catch(() => {})
      if (this.dropped) {
        // Left standing, the scheduler would keep this peer's bitmap of pieces it no longer
        // holds, and on the next registration offer it no parent for them: the retry waited
        // out the stall timeout and went to the origin.
        await this.c.scheduler.leaveTask(this.id, AbortSignal.timeout(this.options.schedulerTimeoutMs))
          .catch((err: unknown) => this.log.debug({ err: (err as Error).message }, 'could not tell the scheduler the pieces are gone'))
      }
      throw e
    } finally {
      signal.removeEventListener('abort', onTaskAbort)
      this.c.sources.delete(this.id)
      this.reports.close()
      unpin()
      this.tally.emit()
    }
  }

  /** A content larger than the whole cache can never be stored: fail now, not after hoarding room. */
  private checkFits(contentLength: number): void {
    const capacity = this.c.store.capacity()
    if (contentLength > capacity) {
      this.fatal ??= new NaiadError('DFD_ERR_CACHE_FULL', `the content has ${contentLength} bytes, more than the whole cache quota of ${capacity} bytes`)
    }
  }

  private applyInfo(info: TaskInfo): void {
    if (info.contentLength >= 0) this.checkFits(info.contentLength)
    // The store learns the layout once (this runs on every poll of the scheduler).
    if (this.view.apply(info) && this.view.pieceSize > 0) {
      this.c.store.ensureTask(this.id, this.req.url, this.view.pieceSize)
      if (this.view.contentLength >= 0) this.c.store.setTaskLength(this.id, this.view.contentLength, this.view.pieceCount)
    }
  }

  private schedulerMayReturn(): boolean {
    return schedulerMayReturn(this.c.scheduler.unavailableSince, Date.now(), this.options.stallTimeoutMs)
  }

  private complete(): boolean {
    return this.view.pieceCount >= 0 && this.view.pieceSize > 0 && this.c.store.bitmap(this.id).count() >= this.view.pieceCount
  }

  /** Pieces from parents until every piece is here; the origin when the swarm cannot help. */
  private async swarm(signal: AbortSignal): Promise<void> {
    const policy = new PollPolicy(this.options, Date.now(), this.tally.completedBytes, this.view.digests.size)
    while (!this.complete()) {
      signal.throwIfAborted()
      if (this.fatal !== undefined) throw this.fatal
      const refreshed = policy.refreshDue(Date.now(), this.fetcher.size, this.refreshNow)
      if (refreshed) {
        this.refreshNow = false
        if (await this.refreshParents(signal)) policy.putOff(Date.now())
      }
      policy.progress(Date.now(), this.tally.completedBytes, this.view.digests.size)
      this.fetcher.abortSlow()
      const turn = this.schedule(signal)
      policy.planned(turn, refreshed)
      if (this.fetcher.size === 0 && turn.started === 0) {
        const now = Date.now()
        const paceMs = this.c.scheduler.paceMs ?? 0
        const reason = giveUpReason({
          taskState: this.view.state,
          taskError: this.view.error,
          schedulerLost: !this.c.scheduler.available && !this.schedulerMayReturn(),
          usableParents: this.parents.usable(now).length,
          unreachable: this.parents.unreachableSinceAsked(),
          stalled: policy.stalled(now, paceMs),
          stallTimeoutMs: stallAfterMs(this.options.stallTimeoutMs, paceMs)
        })
        if (reason !== undefined) return this.backToSource(reason, signal)
      }
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, policy.pollMs(this.fetcher.size))
        this.wake = () => { clearTimeout(t); resolve() }
      })
      this.wake = undefined
    }
  }

  /** Asks the scheduler for parents; true when the supernode put the poll off (SN_ERR_BUSY). */
  private async refreshParents(signal: AbortSignal): Promise<boolean> {
    const { scheduler } = this.c
    if (!scheduler.available) return false
    // Pieces stored since the last report go first (the session keeps the order): the
    // scheduler hands out the next seed pieces once it knows these arrived, and other peers
    // schedule from our bitmap. Not while the supernode asks for a pace: the batcher's beat
    // follows the pace, and a flush on every poll attempt would undo it.
    if (this.reports.size > 0 && !((scheduler.paceMs ?? 0) > 0)) this.reports.flush({}).catch(() => {})
    try {
      // A timeout alone (not tied to the task's signal): polls are frequent, and a signal
      // derived from the long-lived task signal per call was garbage the collector traced.
      signal.throwIfAborted()
      this.polls++
      const res = await scheduler.getParents(this.id, 8, AbortSignal.timeout(this.options.schedulerTimeoutMs))
      if (res.task !== undefined) this.applyInfo(res.task)
      if (res.grant.length > 0) this.view.grant = res.grant
      this.parents.update(res.parents)
      if (this.log.isLevelEnabled('debug')) {
        const source = this.parents.get(this.view.sourcePeer)
        this.log.debug({ parents: res.parents.length, sourceOffers: source?.bitmap.count() ?? -1, inflight: this.fetcher.size, have: this.c.store.bitmap(this.id).count() }, 'parents')
      }
    } catch (err) {
      this.log.debug({ err: (err as Error).message }, 'getParents failed; keeping the parents we have')
      return (err as Partial<NaiadError>).code === 'SN_ERR_BUSY' && !(err instanceof PollNotDue)
    }
    return false
  }

  /** Starts the fetches the planner chooses for this turn. */
  private schedule(signal: AbortSignal): Turn {
    const have = this.c.store.bitmap(this.id)
    const { plan, room, peersServe } = planTurn({
      pieceCount: this.view.pieceCount,
      pieceSize: this.view.pieceSize,
      parents: this.parents.usable(Date.now()),
      sourcePeer: this.view.sourcePeer,
      have: (n) => have.has(n),
      inflight: (n) => this.fetcher.has(n),
      published: (n) => this.view.digests.has(n),
      inflightCount: this.fetcher.size,
      concurrency: this.options.concurrency,
      perParent: this.options.perParent,
      sourceWindow: this.options.sourceWindow,
      planner: this.planner,
      // Grows when the source publishes (and when a live piece from it lands: a rare new ranking).
      publishedCount: this.view.digests.size
    })
    for (const a of plan) this.fetcher.start(a.num, this.parents.get(a.parent)!, a.live, signal)
    return { started: plan.length, room, peersServe }
  }

  /** Reads the whole content from the origin, storing the pieces not yet here. */
  private async backToSource(reason: string, signal: AbortSignal): Promise<void> {
    backToSourceEvents.publish({ taskId: this.id, reason })
    this.log.info({ reason, trusted: this.trusted }, 'back to source')
    // Pieces still in flight from parents would race the origin for the same room.
    await this.fetcher.stopAll(new NaiadError('PROTO_ERR_ABORTED', 'the download went to the origin'))
    this.originSha256 = await readFromOrigin({
      id: this.id,
      req: this.req,
      view: this.view,
      tally: this.tally,
      reports: this.reports,
      trusted: this.trusted,
      traffic: () => this.traffic(),
      checkLayout: (contentLength) => {
        this.checkFits(contentLength)
        if (this.fatal !== undefined) throw this.fatal
      }
    }, { ...this.c, log: this.log }, { reserveWaitMs: this.options.reserveWaitMs ?? this.options.stallTimeoutMs }, signal)
  }

  /** Settles the whole content's digest, marks the task complete and tells the scheduler. */
  private async finish(signal: AbortSignal): Promise<Buffer> {
    const { store } = this.c
    await this.awaitSourceDigest(signal)
    const { sha256: sha, by } = await wholeDigest({
      store,
      taskId: this.id,
      contentLength: this.view.contentLength,
      pieceCount: this.view.pieceCount,
      originSha256: this.originSha256,
      source: this.view.sourceSha256 === undefined ? undefined : { sha256: this.view.sourceSha256, digest: (n) => this.view.digests.get(n), isSeed: this.sourceIsSeed() },
      userDigest: this.req.digest
    })
    this.wholeDigestBy = by
    try {
      checkContent(sha, { source: this.trusted ? undefined : this.view.sourceSha256, user: this.req.digest })
    } catch (err) {
      await store.deleteTask(this.id)
      this.dropped = true
      throw err
    }
    store.complete(this.id, sha)
    this.tally.finished = true
    this.tally.emit()
    await this.reports.flush({
      state: 'succeeded',
      ...(this.trusted ? { contentLength: this.view.contentLength, pieceSize: this.view.pieceSize, pieceCount: this.view.pieceCount, sha256: sha } : {})
    }).catch((err: unknown) => this.log.debug({ err: (err as Error).message }, 'final report failed'))
    return sha
  }

  /**
   * The last pieces can land before the source's whole-content digest reaches the scheduler
   * (it finishes at the same moment): when that digest would spare reading the content back,
   * ask for it a few more times before doing so.
   */
  private async awaitSourceDigest(signal: AbortSignal): Promise<void> {
    if (this.originSha256 !== undefined || this.view.sourceSha256 !== undefined || this.view.sourcePeer === '' || this.trusted) return
    if (this.req.digest !== undefined && this.req.digest !== '' && !this.sourceIsSeed()) return
    const until = Date.now() + SOURCE_DIGEST_WAIT_MS
    while (this.view.sourceSha256 === undefined && this.view.state !== 'failed' && this.c.scheduler.available && Date.now() < until) {
      await new Promise((r) => setTimeout(r, 50))
      await this.refreshParents(signal)
    }
  }

  /** The source is the supernode's seed (it shares the supernode's peer ID). */
  private sourceIsSeed(): boolean {
    if (this.view.sourcePeer === '') return false
    return this.c.scheduler.isSupernode?.(this.view.sourcePeer) ?? this.view.sourcePeer === this.c.scheduler.supernodeId
  }
}

