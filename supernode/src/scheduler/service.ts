// The scheduler service on the fabric. The caller's identity is the authenticated peer
// of the Noise session, never a field of the message.

import { NaiadError, PROTOCOLS, SchedulerRequest, SchedulerResponse, serve, serveSession, type FabricNode } from '@naiad/proto'

import type { Scheduler } from './scheduler.ts'

/**
 * Serves 1.1.0 (a session per daemon: one stream, many pipelined calls) and, for daemons
 * that predate it, 1.0.0 (a stream per call). Both reach the same scheduler.
 */
export async function serveScheduler(node: FabricNode, scheduler: Scheduler): Promise<void> {
  await serveSession(node, PROTOCOLS.schedulerSession, SchedulerRequest, SchedulerResponse, (req, ctx) => {
    return handleSchedulerRequest(scheduler, ctx.remotePeer.toString(), req)
  })
  await serve(node, PROTOCOLS.scheduler, SchedulerRequest, SchedulerResponse, async (req, ctx) => {
    return handleSchedulerRequest(scheduler, ctx.remotePeer.toString(), req)
  }, { maxInboundStreams: 1024 })
}

export function handleSchedulerRequest(scheduler: Scheduler, hostId: string, req: SchedulerRequest): Partial<SchedulerResponse> {
  if (req.announceHost !== undefined) {
    scheduler.announceHost(hostId, req.announceHost)
    return {}
  }
  if (req.registerTask !== undefined) return { task: scheduler.registerTask(hostId, req.registerTask) }
  if (req.reportPieces !== undefined) {
    scheduler.reportPieces(hostId, req.reportPieces)
    return {}
  }
  if (req.getParents !== undefined) return { parents: scheduler.getParents(hostId, req.getParents.taskId, req.getParents.limit) }
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
