// The scheduler service on the fabric. The caller's identity is the authenticated peer
// of the Noise session, never a field of the message; what it claims is checked by the
// gate (admission/scheduler-gate.ts) before the scheduler believes it.

import type { Connection } from '@libp2p/interface'
import { NaiadError, PROTOCOLS, SchedulerRequest, SchedulerResponse, serve, serveSession, type FabricNode } from '@naiad/proto'

import { multiaddrIp, type SchedulerGate } from '../admission/scheduler-gate.ts'
import type { Scheduler } from './scheduler.ts'

/**
 * Serves 1.1.0 (a session per daemon: one stream, many pipelined calls) and, for daemons
 * that predate it, 1.0.0 (a stream per call). Both reach the same scheduler.
 */
export async function serveScheduler(node: FabricNode, scheduler: Scheduler, gate?: SchedulerGate): Promise<void> {
  await serveSession(node, PROTOCOLS.schedulerSession, SchedulerRequest, SchedulerResponse, (req, ctx) => {
    return handleRemoteRequest(scheduler, gate, ctx.remotePeer.toString(), ctx.connection, req, ctx.signal)
  })
  await serve(node, PROTOCOLS.scheduler, SchedulerRequest, SchedulerResponse, async (req, ctx) => {
    return handleRemoteRequest(scheduler, gate, ctx.remotePeer.toString(), ctx.connection, req, ctx.signal)
  }, { maxInboundStreams: 1024 })
}

/** A call from a daemon: the gate checks it first (registrations wait for its access check). */
function handleRemoteRequest(scheduler: Scheduler, gate: SchedulerGate | undefined, hostId: string, connection: Connection, req: SchedulerRequest, signal: AbortSignal): Partial<SchedulerResponse> | Promise<Partial<SchedulerResponse>> {
  if (gate === undefined) return handleSchedulerRequest(scheduler, hostId, req)
  const grant = (taskId: string): Uint8Array => gate.grant(hostId, taskId)
  if (req.announceHost !== undefined) {
    return handleSchedulerRequest(scheduler, hostId, { ...req, announceHost: gate.announce(req.announceHost, multiaddrIp(connection.remoteAddr.toString())) }, grant)
  }
  if (req.registerTask !== undefined) {
    return gate.register(hostId, req.registerTask, signal).then(() => handleSchedulerRequest(scheduler, hostId, req, grant))
  }
  if (req.getParents !== undefined) gate.member(hostId, req.getParents.taskId)
  if (req.reportPieces !== undefined) gate.member(hostId, req.reportPieces.taskId)
  return handleSchedulerRequest(scheduler, hostId, req, grant)
}

/**
 * One scheduler call. `grant` answers the grant a host gets for a task (none without
 * admission: the embedded seed, a cluster without it).
 */
export function handleSchedulerRequest(scheduler: Scheduler, hostId: string, req: SchedulerRequest, grant?: (taskId: string) => Uint8Array): Partial<SchedulerResponse> {
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
    const parents = scheduler.getParents(hostId, req.getParents.taskId, req.getParents.limit, req.getParents.digestsFrom)
    if (grant === undefined) return { parents }
    const g = grant(req.getParents.taskId)
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
  throw new NaiadError('SN_ERR_BAD_REQUEST', 'scheduler request names no call')
}
