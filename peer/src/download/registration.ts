// How a download makes itself known to the scheduler: registering its task (the answer
// says where the pieces come from, or that this node is to read the origin), and, for a
// task this node already holds complete, announcing it so that it can serve as a parent.

import { setTimeout as sleep } from 'node:timers/promises'

import type { Logger } from 'pino'
import type { NaiadError, PieceResult, RegisterTaskRequest, TaskInfo } from '@naiad/proto'

import type { SchedulerClient } from '../scheduler/client.ts'
import type { PieceStore } from '../storage/piece-store.ts'
import { PUT_OFF_MAX_MS, schedulerMayReturn } from './poll-policy.ts'
import type { DownloadRequest } from './types.ts'

/** Registrations tried while the scheduler client still counts the supernode up (a loaded one answers late). */
export const REGISTER_ATTEMPTS = 3
/** The same, counting those after which the supernode was marked down and came back (a flapping one must not hold a download forever). */
export const REGISTER_ATTEMPTS_AFTER_OUTAGES = 10
/** How often a download waiting for an unavailable scheduler looks again, and logs that it waits. */
export const SCHEDULER_WAIT_POLL_MS = 100
const SCHEDULER_WAIT_LOG_MS = 1_000
/**
 * How long a download registers again and again while the supernode answers that it is too
 * busy to register it (SN_ERR_BUSY): each answer shows it is alive, and in a start of
 * thousands of daemons at once the registry is the worse place to go. The same minute as a
 * download's put-off polls are waited out (PUT_OFF_MAX_MS).
 */
export const REGISTER_BUSY_MAX_MS = PUT_OFF_MAX_MS
/** The least wait before registering again after a busy answer, when it named no pace. */
export const REGISTER_BUSY_MIN_MS = 100

export interface RegistrationComponents {
  scheduler: SchedulerClient
  store: Pick<PieceStore, 'bitmap' | 'getPiece'>
  log: Logger
}

export interface RegistrationOptions {
  schedulerTimeoutMs: number
  /** As long as a download waits for a silent swarm: the longest wait for a scheduler that may come back. */
  stallTimeoutMs: number
}

export function registrationRequest(taskId: string, req: DownloadRequest): RegisterTaskRequest {
  return {
    taskId,
    url: req.url,
    headers: Object.entries(req.headers).map(([name, value]) => ({ name, value })),
    digest: req.digest ?? '',
    range: req.range ?? '',
    filter: req.filter ?? []
  }
}

export class Registration {
  private readonly request: RegisterTaskRequest
  private readonly c: RegistrationComponents
  private readonly options: RegistrationOptions
  /** When the supernode first answered this task's registration busy (registerWhileBusy). */
  private busySince: number | undefined
  private busyLogged = 0

  constructor(request: RegisterTaskRequest, components: RegistrationComponents, options: RegistrationOptions) {
    this.request = request
    this.c = components
    this.options = options
  }

  /**
   * Registers the task; undefined when the scheduler cannot be had (the download then goes to
   * the origin). A slow answer from a loaded supernode is not a reason to go there: a call that
   * timed out is tried again while the scheduler client still counts the supernode up — it
   * marks it down after a few timeouts with nothing heard meanwhile — and a scheduler marked
   * down for a reason that may pass (slow, not yet admitting this node) is waited for. A busy
   * answer is waited out inside an attempt (registerWhileBusy).
   */
  async register(signal: AbortSignal): Promise<TaskInfo | undefined> {
    const { scheduler, log } = this.c
    let lastErr: unknown
    for (let attempt = 1; ; attempt++) {
      if (!scheduler.available && !await this.waitForScheduler(signal)) {
        log.warn({ err: (lastErr as Error | undefined)?.message, attempts: attempt - 1 }, 'scheduler unavailable, going to the origin')
        return undefined
      }
      try {
        return await this.registerWhileBusy(signal)
      } catch (err) {
        signal.throwIfAborted()
        lastErr = err
        const code = (err as Partial<NaiadError>).code
        const slow = code === 'PROTO_ERR_TIMEOUT' || code === 'PROTO_ERR_ABORTED'
        // Marked down by this call: the wait at the top of the loop decides.
        if (!scheduler.available && this.mayReturn() && attempt < REGISTER_ATTEMPTS_AFTER_OUTAGES) continue
        if (!slow || attempt >= REGISTER_ATTEMPTS || !scheduler.available) {
          log.warn({ err: (err as Error).message, attempts: attempt }, 'scheduler unavailable, going to the origin')
          return undefined
        }
        log.info({ err: (err as Error).message, attempt }, 'the scheduler answered late; registering again')
      }
    }
  }

  /**
   * Tells the scheduler that this node holds the task complete (after a restart of either
   * side the scheduler may not know), so that it can serve as a parent. Best-effort, it never
   * rejects: a refusal or an outage is logged and dropped (the next request for the task
   * announces it again), but a supernode too busy to register it now is waited out like a
   * download's registration, or the cached task would silently not be offered.
   */
  async announceComplete(task: { contentLength: number; pieceSize: number; pieceCount: number; sha256: Buffer }, signal: AbortSignal): Promise<void> {
    const { scheduler, store, log } = this.c
    if (!scheduler.available) return
    const taskId = this.request.taskId
    try {
      const info = await this.registerWhileBusy(signal)
      const trusted = info.backToSource
      const results: PieceResult[] = []
      for (const num of store.bitmap(taskId).pieces()) {
        const p = store.getPiece(taskId, num)
        if (p !== undefined) results.push({ num, parentId: '', length: p.length, costMs: 0, sha256: trusted ? p.sha256 : new Uint8Array(0), errorCode: '' })
      }
      await scheduler.reportPieces({
        taskId,
        results,
        state: 'succeeded',
        ...(trusted ? task : {})
      }, AbortSignal.any([signal, AbortSignal.timeout(this.options.schedulerTimeoutMs)]))
    } catch (err) {
      log.debug({ err: (err as Error).message }, 'could not announce the task held complete to the scheduler')
    }
  }

  /**
   * One registration call, sent again after the pace the supernode names while it answers
   * that it is too busy to register the task (SN_ERR_BUSY): put off, not refused, so not an
   * attempt. Gives the busy answer up (throws it) REGISTER_BUSY_MAX_MS after this task's
   * first, counted across calls so that attempts do not stretch the bound. Any other error,
   * and an abort (as the signal's reason), is thrown at once.
   */
  private async registerWhileBusy(signal: AbortSignal): Promise<TaskInfo> {
    const { scheduler, log } = this.c
    for (;;) {
      try {
        return await scheduler.registerTask(this.request, AbortSignal.any([signal, AbortSignal.timeout(this.options.schedulerTimeoutMs)]))
      } catch (err) {
        signal.throwIfAborted()
        if ((err as Partial<NaiadError>).code !== 'SN_ERR_BUSY') throw err
        const now = Date.now()
        this.busySince ??= now
        if (now - this.busySince >= REGISTER_BUSY_MAX_MS) throw err
        if (now - this.busyLogged >= SCHEDULER_WAIT_LOG_MS) {
          this.busyLogged = now
          log.info({ paceMs: scheduler.paceMs ?? 0, busyMs: now - this.busySince }, 'the supernode is too busy to register the task now; registering again after its pace')
        }
        // An abort ends the sleep; the next line then throws its reason, not the sleep's AbortError.
        await sleep(Math.max(REGISTER_BUSY_MIN_MS, scheduler.paceMs ?? 0), undefined, { signal }).catch(() => {})
        signal.throwIfAborted()
      }
    }
  }

  private mayReturn(): boolean {
    return schedulerMayReturn(this.c.scheduler.unavailableSince, Date.now(), this.options.stallTimeoutMs)
  }

  /** Waits while the scheduler may come back; true once it is available again. */
  private async waitForScheduler(signal: AbortSignal): Promise<boolean> {
    const { scheduler, log } = this.c
    let logged = 0
    while (!scheduler.available) {
      signal.throwIfAborted()
      if (!this.mayReturn()) return false
      const now = Date.now()
      if (now - logged >= SCHEDULER_WAIT_LOG_MS) {
        logged = now
        log.info({ downMs: now - (scheduler.unavailableSince ?? now), giveUpAfterMs: this.options.stallTimeoutMs }, 'waiting for the scheduler before going to the origin')
      }
      // An abort ends the sleep; the loop's first line then throws it.
      await sleep(SCHEDULER_WAIT_POLL_MS, undefined, { signal }).catch(() => {})
    }
    return true
  }
}
