// The scheduler service on the fabric. The caller's identity is the authenticated peer
// of the Noise session, never a field of the message; what it claims is checked by the
// gate (admission/scheduler-gate.ts) before the scheduler believes it. Every answer carries
// the supernode's pace (pressure.ts), the signal daemons slow down on.

import { channel } from 'node:diagnostics_channel'

import type { Connection } from '@libp2p/interface'
import {
  NaiadError, PROTOCOLS, SCHEDULER_FEATURES, SchedulerRequest, SchedulerResponse, serve, serveSession, toNaiadError,
  type FabricNode, type RpcError
} from '@naiad/proto'

import { multiaddrIp, type SchedulerGate } from '../admission/scheduler-gate.ts'
import type { Pressure } from './pressure.ts'
import type { Scheduler } from './scheduler.ts'

/**
 * diagnostics_channel of every call from a daemon: { hostId, call, reports, busy, paceMs },
 * `call` the request's field (announce_host, report_pieces, report_batch, …), `reports` the
 * reports it carried, `busy` when it was put off, `paceMs` the gauge's pace at that moment
 * (before each daemon's stretch of it).
 */
export const SCHEDULER_CALL_EVENT = 'naiad:scheduler:call'
const calls = channel(SCHEDULER_CALL_EVENT)

/** The least retry time a busy answer names. */
const BUSY_RETRY_MS = 500

/**
 * How far past the gauge's pace an answer's pace may reach. Daemons wait the pace they last
 * heard; when the pace jumps, every daemon answered in that second hears the same figure, and
 * without a spread all of them come back in the same instant a pace later, and again a pace
 * after that: at 10,000 peers the supernode got hundreds of polls in one burst and answered
 * the last of them 0.5–1 s late, idle between bursts (bench/README.md, scheduler-scale).
 * Each daemon gets a fixed share of the spread, from its ID: a daemon's report beat runs on a
 * grid of multiples of its pace (ReportBatcher), which a pace drawn anew for every answer
 * would move at every call. Stretching only upwards keeps the pace what it says, the least
 * time between calls; the gauge corrects for the mean.
 */
export const PACE_SPREAD = 0.5

/** A host's fixed place in [0, 1) (FNV-1a of its ID): the same daemon always hears the same stretch. */
export function paceShare(hostId: string): number {
  let h = 0x811c9dc5
  for (let i = 0; i < hostId.length; i++) h = Math.imul(h ^ hostId.charCodeAt(i), 0x01000193)
  return (h >>> 0) / 2 ** 32
}

/** The pace one daemon is told: the gauge's, stretched by its share (0..1) of PACE_SPREAD. */
export function spreadPace(paceMs: number, share: number): number {
  return paceMs <= 0 ? 0 : Math.round(paceMs * (1 + share * PACE_SPREAD))
}

/** A report's success in a report_batch answer: one object for all of them (the answer is encoded at once). */
const REPORT_OK: RpcError = Object.freeze({ code: '', message: '' })

/** Reports one report_batch may carry (a daemon has a few tasks running at once). */
export const MAX_BATCH_REPORTS = 256

/** Which supernode owns a task (supernode/src/cluster): registrations of tasks owned elsewhere are refused. */
export interface TaskOwnership {
  owns(taskId: string): boolean
  ownerOf(taskId: string): { id: string; apiUrl: string }
}

/**
 * Serves 1.1.0 (a session per daemon: one stream, many pipelined calls) and, for daemons
 * that predate it, 1.0.0 (a stream per call). Both reach the same scheduler.
 */
export async function serveScheduler(node: FabricNode, scheduler: Scheduler, gate?: SchedulerGate, pressure?: Pressure & { deferred?: number }, ownership?: TaskOwnership): Promise<void> {
  const handle = (req: SchedulerRequest, hostId: string, connection: Connection, signal: AbortSignal): Partial<SchedulerResponse> | Promise<Partial<SchedulerResponse>> => {
    // get_parents can wait (the daemon keeps the parents it has), and so can the registration
    // of a daemon that says it waits out a busy answer: in a start of thousands at once, the
    // registrations queued past the daemons' timeouts were served anyway, their retries queued
    // behind them, and every daemon went to the origin (bench/sim, the 10,000-node rollout).
    const busy = (req.getParents !== undefined || (req.registerTask !== undefined && (req.features & SCHEDULER_FEATURES.busyRegister) !== 0)) && pressure?.busy() === true
    if (calls.hasSubscribers) calls.publish({ hostId, call: callOf(req), reports: req.reportBatch?.reports.length ?? (req.reportPieces === undefined ? 0 : 1), busy, paceMs: pressure?.paceMs ?? 0 })
    if (req.registerTask !== undefined && ownership !== undefined) {
      try {
        checkOwner(scheduler, ownership, req.registerTask.taskId)
      } catch (err) {
        return { error: rpcError(err), paceMs: spreadPace(pressure?.paceMs ?? 0, paceShare(hostId)), features: FEATURES }
      }
    }
    if (pressure === undefined) return handleRemoteRequest(scheduler, gate, hostId, connection, req, signal)
    if (busy) {
      if (pressure.deferred !== undefined) pressure.deferred++
      // Answered at once, without the scheduler's work: the daemon keeps the parents it has,
      // or registers again after the pace.
      return { error: { code: 'SN_ERR_BUSY', message: 'the scheduler is saturated; ask again after pace_ms' }, paceMs: spreadPace(Math.max(BUSY_RETRY_MS, pressure.paceMs), paceShare(hostId)), features: FEATURES }
    }
    const share = paceShare(hostId)
    const paced = (res: Partial<SchedulerResponse>): Partial<SchedulerResponse> => ({ ...res, paceMs: spreadPace(pressure.paceMs, share), features: FEATURES })
    let res: Partial<SchedulerResponse> | Promise<Partial<SchedulerResponse>>
    try {
      res = handleRemoteRequest(scheduler, gate, hostId, connection, req, signal)
    } catch (err) {
      return paced({ error: rpcError(err) })
    }
    return res instanceof Promise ? res.then(paced, (err: unknown) => paced({ error: rpcError(err) })) : paced(res)
  }
  await serveSession(node, PROTOCOLS.schedulerSession, SchedulerRequest, SchedulerResponse, (req, ctx) => {
    return handle(req, ctx.remotePeer.toString(), ctx.connection, ctx.signal)
  })
  await serve(node, PROTOCOLS.scheduler, SchedulerRequest, SchedulerResponse, async (req, ctx) => {
    return handle(req, ctx.remotePeer.toString(), ctx.connection, ctx.signal)
  }, { maxInboundStreams: 1024 })
}

const FEATURES = SCHEDULER_FEATURES.reportBatch

function callOf(req: SchedulerRequest): string {
  if (req.announceHost !== undefined) return 'announce_host'
  if (req.registerTask !== undefined) return 'register_task'
  if (req.reportPieces !== undefined) return 'report_pieces'
  if (req.getParents !== undefined) return 'get_parents'
  if (req.leaveTask !== undefined) return 'leave_task'
  if (req.leaveHost) return 'leave_host'
  if (req.reportBatch !== undefined) return 'report_batch'
  return 'none'
}

/**
 * A new task is registered only with its owner. One this scheduler already holds stays
 * welcome (its daemons moved here while its owner was gone and finish here), so that an
 * owner coming back breaks no download in flight.
 */
export function checkOwner(scheduler: Scheduler, ownership: TaskOwnership, taskId: string): void {
  if (ownership.owns(taskId) || scheduler.tasks.has(taskId)) return
  const owner = ownership.ownerOf(taskId)
  throw new NaiadError('SN_ERR_NOT_OWNER', `task ${taskId.slice(0, 12)} belongs to supernode ${owner.id} (${owner.apiUrl})`)
}

function rpcError(err: unknown): RpcError {
  const e = toNaiadError(err, 'PROTO_ERR_REMOTE')
  return { code: e.code, message: e.message }
}

/** A call from a daemon: the gate checks it first (registrations wait for its access check). */
function handleRemoteRequest(scheduler: Scheduler, gate: SchedulerGate | undefined, hostId: string, connection: Connection, req: SchedulerRequest, signal: AbortSignal): Partial<SchedulerResponse> | Promise<Partial<SchedulerResponse>> {
  if (gate === undefined) return handleSchedulerRequest(scheduler, hostId, req)
  const grant = (taskId: string): Uint8Array => gate.grant(hostId, taskId)
  const member = (taskId: string): void => gate.member(hostId, taskId)
  if (req.announceHost !== undefined) {
    return handleSchedulerRequest(scheduler, hostId, { ...req, announceHost: gate.announce(req.announceHost, multiaddrIp(connection.remoteAddr.toString())) }, grant)
  }
  if (req.registerTask !== undefined) {
    return gate.register(hostId, req.registerTask, signal).then(() => handleSchedulerRequest(scheduler, hostId, req, grant))
  }
  if (req.getParents !== undefined) member(req.getParents.taskId)
  if (req.reportPieces !== undefined) member(req.reportPieces.taskId)
  return handleSchedulerRequest(scheduler, hostId, req, grant, member)
}

/**
 * One scheduler call. `grant` answers the grant a host gets for a task (none without
 * admission: the embedded seed, a cluster without it); `member` throws unless the host may
 * take part in a task (each report of a batch is checked on its own).
 */
export function handleSchedulerRequest(scheduler: Scheduler, hostId: string, req: SchedulerRequest, grant?: (taskId: string) => Uint8Array, member?: (taskId: string) => void): Partial<SchedulerResponse> {
  if (req.announceHost !== undefined) {
    scheduler.announceHost(hostId, req.announceHost)
    return {}
  }
  if (req.registerTask !== undefined) {
    const task = scheduler.registerTask(hostId, req.registerTask)
    return { task: grant === undefined ? task : { ...task, grant: grant(task.id) } }
  }
  if (req.reportPieces !== undefined) {
    scheduler.reportPieces(hostId, req.reportPieces)
    return {}
  }
  if (req.getParents !== undefined) {
    const { taskId, limit, digestEpoch, digests } = req.getParents
    const parents = scheduler.getParents(hostId, taskId, limit, digestEpoch === 0 ? undefined : { epoch: digestEpoch, count: digests })
    if (grant === undefined) return { parents }
    const g = grant(taskId)
    return { parents: { ...parents, grant: g, task: parents.task === undefined ? undefined : { ...parents.task, grant: g } } }
  }
  if (req.leaveTask !== undefined) {
    scheduler.leaveTask(hostId, req.leaveTask.taskId)
    return {}
  }
  if (req.leaveHost) {
    scheduler.leaveHost(hostId)
    return {}
  }
  if (req.reportBatch !== undefined) {
    const reports = req.reportBatch.reports
    if (reports.length > MAX_BATCH_REPORTS) throw new NaiadError('SN_ERR_BAD_REQUEST', `a report batch of ${reports.length} reports (at most ${MAX_BATCH_REPORTS})`)
    // Each report succeeds or fails on its own, as if it had been a call of its own.
    const results = reports.map((r): RpcError => {
      try {
        member?.(r.taskId)
        scheduler.reportPieces(hostId, r)
        return REPORT_OK
      } catch (err) {
        return rpcError(err)
      }
    })
    return { results }
  }
  throw new NaiadError('SN_ERR_BAD_REQUEST', 'scheduler request names no call')
}
