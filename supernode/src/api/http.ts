// The supernode's HTTP API (default 0.0.0.0:8002). Every route needs an API token
// (`Authorization: Bearer`, `supernode token create --scope api`) except the probes, the
// metrics, the fabric address daemons dial, the join endpoint (which checks a join token's
// proof itself) and the console's static files (they hold no data: the console sends the
// token with every API call it makes); `api.public-read` opens the GET routes too. Routes
// plugins add (preheat jobs, SLO, health) are behind the same check.

import Fastify, { type FastifyInstance, type FastifyReply } from 'fastify'
import { NaiadError, toNaiadError, type FabricNode } from '@naiad/proto'

import type { Admission } from '../admission/admission.ts'
import type { SupernodeMember } from '../cluster/membership.ts'
import { serveConsole } from '../console/serve.ts'
import { labelsOf } from '../control/control-client.ts'
import type { Scheduler, TaskState } from '../scheduler/scheduler.ts'

/** Reachable without a token: probes, metrics, what a daemon needs before it has joined, the console's page. */
const OPEN = new Set(['/healthz', '/readyz', '/healthy', '/metrics', '/api/v1/info', '/api/v1/supernodes', '/api/v1/join', '/'])
/** The console's scripts and styles. */
const OPEN_PREFIX = '/console/'
/** Bodies larger than this are refused with 413 (job requests are a few KiB). */
const BODY_LIMIT = 1024 * 1024

/** 401 in the shape registries and Harbor use (`errors: [{code, message}]`), with our code beside it. */
function unauthorized(reply: FastifyReply, err: NaiadError): FastifyReply {
  return reply.code(401).header('www-authenticate', 'Bearer realm="naiad"').send({
    code: 'SN_ERR_UNAUTHORIZED',
    message: err.message,
    errors: [{ code: 'UNAUTHORIZED', message: err.message, detail: { naiad: err.code } }]
  })
}

function record(n: { id: string; hostname: string; tokenId: string; joinedAt: number; lastJoinAt: number; revokedAt: number | null }): Record<string, unknown> {
  return {
    id: n.id, hostname: n.hostname, token: n.tokenId, joinedAt: new Date(n.joinedAt).toISOString(), lastJoinAt: new Date(n.lastJoinAt).toISOString(),
    revokedAt: n.revokedAt === null ? null : new Date(n.revokedAt).toISOString()
  }
}

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

export interface HttpApiComponents {
  scheduler: Scheduler
  node: FabricNode
  ready: () => boolean
  seed: boolean
  admission: Admission
  /** GET routes need no token (`api.public-read`). */
  publicRead: boolean
  /** The live supernodes of the cluster (this one alone without others). */
  members?: () => readonly SupernodeMember[]
  /** The live supernode that owns a task (the cluster's). */
  ownerOf?: (taskId: string) => SupernodeMember
}

export function buildHttpApi(components: HttpApiComponents): FastifyInstance {
  const { scheduler, node, admission } = components
  const app = Fastify({ logger: false, bodyLimit: BODY_LIMIT })

  app.setErrorHandler((err, _req, reply) => {
    const status = (err as { statusCode?: number }).statusCode
    const e = err instanceof NaiadError
      ? err
      : status === 413 ? new NaiadError('SN_ERR_BODY_TOO_LARGE', `the request body exceeds ${BODY_LIMIT} bytes`, { cause: err }) : toNaiadError(err, 'SN_ERR_BAD_REQUEST')
    if (e.code === 'PROTO_ERR_BAD_TOKEN' && reply.request.url !== '/api/v1/join') return unauthorized(reply, e)
    return reply.code(e.status).send({ code: e.code, message: e.message })
  })

  // Before routing and body parsing: a request without a token costs nothing more.
  app.addHook('onRequest', async (req, reply) => {
    const path = req.url.split('?', 1)[0]
    if (OPEN.has(path) || path.startsWith(OPEN_PREFIX)) return
    if (components.publicRead && (req.method === 'GET' || req.method === 'HEAD')) return
    try {
      admission.checkApiToken(req.headers.authorization)
    } catch (err) {
      return unauthorized(reply, toNaiadError(err, 'PROTO_ERR_BAD_TOKEN'))
    }
  })

  app.get('/healthz', async () => ({ status: 'ok' }))
  app.get('/readyz', async (_req, reply) => {
    if (!components.ready()) return reply.code(503).send({ status: 'starting' })
    return { status: 'ready' }
  })

  app.get('/api/v1/info', async () => ({
    peerId: node.peerId.toString(),
    multiaddrs: node.getMultiaddrs().map(String),
    seed: components.seed,
    // Lets a daemon check, against the cluster key of its join token, that this is its supernode.
    credential: Buffer.from(admission.credential()).toString('base64')
  }))

  // Open like /api/v1/info: daemons learn the live set here (and check each member's
  // credential at its own /api/v1/info before they trust it).
  app.get('/api/v1/supernodes', async () => ({
    members: (components.members?.() ?? []).map((m) => ({ id: m.id, apiUrl: m.apiUrl, multiaddrs: m.multiaddrs }))
  }))

  app.post('/api/v1/join', async (req) => admission.join(req.body))

  app.get('/api/v1/nodes', async () => (await admission.nodes.list()).map(record))
  app.post<{ Params: { id: string } }>('/api/v1/nodes/:id/revoke', async (req) => record(await admission.revoke(req.params.id)))

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
    if (t === undefined) {
      // With several supernodes a task lives on its owner: say which, so the caller can ask there.
      const owner = components.ownerOf?.(req.params.id)
      const elsewhere = owner !== undefined && owner.id !== node.peerId.toString() ? `; its owner is supernode ${owner.id} at ${owner.apiUrl}` : ''
      throw new NaiadError('SN_ERR_TASK_NOT_FOUND', `no task ${req.params.id} here${elsewhere}`)
    }
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
