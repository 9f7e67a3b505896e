// The supernode's HTTP API (default 0.0.0.0:8002).

import Fastify, { type FastifyInstance } from 'fastify'
import { NaiadError, toNaiadError, type FabricNode } from '@naiad/proto'

import { serveConsole } from '../console/serve.ts'
import { labelsOf } from '../control/control-client.ts'
import type { Scheduler, TaskState } from '../scheduler/scheduler.ts'

function taskSummary(t: TaskState): Record<string, unknown> {
  return {
    id: t.id,
    url: t.url,
    state: t.state,
    contentLength: t.contentLength,
    pieceSize: t.pieceSize,
    pieceCount: t.pieceCount,
    piecesKnown: t.pieces.size,
    sha256: t.sha256.length === 0 ? null : Buffer.from(t.sha256).toString('hex'),
    error: t.error ?? null,
    peers: t.peers.size,
    createdAt: new Date(t.createdAt).toISOString(),
    updatedAt: new Date(t.updatedAt).toISOString()
  }
}

export function buildHttpApi(components: { scheduler: Scheduler; node: FabricNode; ready: () => boolean; seed: boolean }): FastifyInstance {
  const { scheduler, node } = components
  const app = Fastify({ logger: false })

  app.setErrorHandler((err, _req, reply) => {
    const e = toNaiadError(err, 'SN_ERR_BAD_REQUEST')
    return reply.code(e.status).send({ code: e.code, message: e.message })
  })

  app.get('/healthz', async () => ({ status: 'ok' }))
  app.get('/readyz', async (_req, reply) => {
    if (!components.ready()) return reply.code(503).send({ status: 'starting' })
    return { status: 'ready' }
  })

  app.get('/api/v1/info', async () => ({
    peerId: node.peerId.toString(),
    multiaddrs: node.getMultiaddrs().map(String),
    seed: components.seed
  }))

  app.get('/api/v1/peers', async () => [...scheduler.hosts.values()].map((h) => ({
    id: h.info.id,
    hostname: h.info.hostname,
    idc: h.info.idc,
    location: h.info.location,
    labels: labelsOf(h.info),
    multiaddrs: h.info.multiaddrs,
    isSeed: h.info.isSeed,
    uploadSlots: h.info.uploadSlots,
    lastSeen: new Date(h.lastSeen).toISOString(),
    gone: h.gone,
    bandwidth: Math.round(h.bandwidth),
    goodPieces: h.goodPieces,
    badPieces: h.badPieces,
    failedPieces: h.failedPieces
  })))

  app.get('/api/v1/tasks', async () => [...scheduler.tasks.values()].map(taskSummary))

  app.get<{ Params: { id: string } }>('/api/v1/tasks/:id', async (req) => {
    const t = scheduler.tasks.get(req.params.id)
    if (t === undefined) throw new NaiadError('SN_ERR_TASK_NOT_FOUND', `no task ${req.params.id}`)
    return {
      ...taskSummary(t),
      peers: [...t.peers.values()].map((p) => ({
        hostId: p.hostId,
        state: p.state,
        pieces: p.bitmap.count(),
        // Which pieces this peer holds (bit n: byte n >> 3, value 1 << (n & 7)), for the console's swarm view.
        bitmap: Buffer.from(p.bitmap.toBytes()).toString('hex'),
        parents: [...p.parents.keys()],
        blocked: [...p.blocked],
        updatedAt: new Date(p.updatedAt).toISOString()
      }))
    }
  })

  serveConsole(app)

  return app
}
