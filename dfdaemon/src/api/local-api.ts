// The daemon's local API (default 127.0.0.1:65003), used by dfget and nydus-fs:
//   POST /api/v1/downloads          start or join a download; answers NDJSON progress events
//                                   (QoS class: `priority` field, ?priority= or X-Naiad-Priority)
//   GET  /api/v1/tasks              tasks in the piece store
//   GET  /api/v1/tasks/:id          one task, with live progress and its client count while it runs
//   GET  /api/v1/tasks/:id/content  the verified content of a complete task (Range supported)
//   GET  /api/v1/mirror/problems    registries the mirror could not talk to (for dfdaemon doctor)
//   GET  /healthz

import { PassThrough } from 'node:stream'

import Fastify, { type FastifyInstance } from 'fastify'
import type { Logger } from 'pino'
import { contentRange, isPriority, NaiadError, parseRangeHeader, PRIORITIES, toNaiadError, type DownloadEvent, type Priority } from '@naiad/proto'

import { contentStream, TaskManager, type DownloadRequest, type PieceStore, type QosHooks } from '@naiad/peer'
import type { BlobPermission } from '../mirror/blob-permission.ts'
import type { UpstreamProblem } from '../mirror/upstream.ts'

export interface LocalApiComponents {
  tasks: TaskManager
  store: PieceStore
  logger: Logger
  qos?: QosHooks
  /** The registry mirror's failures, when the daemon runs one. */
  mirrorProblems?: () => UpstreamProblem[]
  /** The registry's permission check for blob URLs (a private blob only to a client the registry would give it to). */
  permission?: BlobPermission
}

const downloadSchema = {
  type: 'object',
  required: ['url'],
  additionalProperties: false,
  properties: {
    url: { type: 'string', minLength: 1 },
    headers: { type: 'object', additionalProperties: { type: 'string' } },
    digest: { type: 'string' },
    range: { type: 'string' },
    filter: { type: 'array', items: { type: 'string' } },
    priority: { type: 'string', enum: PRIORITIES },
    timeoutMs: { type: 'integer', minimum: 1 }
  }
} as const

export function errorReply(err: unknown): { status: number; body: { code: string; message: string } } {
  const e = toNaiadError(err, 'DFD_ERR_TASK_FAILED')
  return { status: e.status, body: { code: e.code, message: e.message } }
}

/** The QoS class of a download request: body field, else query, else header; on-demand by default. */
function priorityOf(...candidates: unknown[]): Priority {
  for (const c of candidates) {
    if (c === undefined) continue
    if (!isPriority(c)) throw new NaiadError('DFD_ERR_BAD_REQUEST', `bad priority "${String(c)}": expected one of ${PRIORITIES.join(', ')}`)
    return c
  }
  return 'on-demand'
}

export function buildLocalApi(components: LocalApiComponents): FastifyInstance {
  const app = Fastify({ logger: false, bodyLimit: 1024 * 1024 })
  const { tasks, store } = components

  app.setErrorHandler((err, _req, reply) => {
    const e = err as Error & { validation?: unknown; statusCode?: number }
    if (e.validation !== undefined || e.statusCode === 400) {
      return reply.code(400).send({ code: 'DFD_ERR_BAD_REQUEST', message: e.message })
    }
    if (e.statusCode === 413) {
      return reply.code(413).send(new NaiadError('DFD_ERR_BODY_TOO_LARGE', e.message).toJSON())
    }
    const { status, body } = errorReply(err)
    return reply.code(status).send(body)
  })

  app.get('/healthz', async () => ({ status: 'ok' }))
  app.get('/api/v1/mirror/problems', async () => ({ problems: components.mirrorProblems?.() ?? [] }))

  app.post('/api/v1/downloads', { schema: { body: downloadSchema } }, async (request, reply) => {
    const body = request.body as DownloadRequest & { timeoutMs?: number }
    const priority = priorityOf(body.priority, (request.query as Record<string, unknown>).priority, request.headers['x-naiad-priority'])
    const req: DownloadRequest = { url: body.url, headers: body.headers ?? {}, digest: body.digest, range: body.range, filter: body.filter, priority }
    TaskManager.validate(req)
    // Before the cache or the swarm may answer: would the registry give this blob to this client?
    await components.permission?.check(req.url, req.headers)
    const admission = components.qos?.active === true ? components.qos.admit({ tenantKey: req.url, priority }) : undefined
    if (admission?.admitted === false) {
      return reply.code(429).header('retry-after', String(admission.retryAfterSec))
        .send(new NaiadError('DFD_ERR_TOO_MANY_REQUESTS', admission.reason).toJSON())
    }
    const handle = tasks.open(req)
    const out = new PassThrough()
    const write = (e: DownloadEvent): void => { out.write(`${JSON.stringify(e)}\n`) }
    // The data file, for a client on this host that may read it (dfget copies it in the kernel).
    write({ event: 'started', taskId: handle.id, path: store.dataPath(handle.id) })
    let last = 0
    const off = handle.onProgress((p) => {
      const now = Date.now()
      if (now - last < 200) return
      last = now
      write({ event: 'progress', ...p })
    })
    let settled = false
    // A client that goes away before the end takes its interest with it: the download stops
    // unless another client (or the mirror) still waits for it.
    reply.raw.once('close', () => {
      if (!settled) handle.release({ cancel: true })
    })
    const timeout = body.timeoutMs === undefined ? undefined : setTimeout(() => {
      if (settled) return
      settled = true
      write({ event: 'error', code: 'DFD_ERR_TIMEOUT', message: 'download did not finish within its timeout' })
      handle.release({ cancel: true })
      out.end()
    }, body.timeoutMs)
    handle.done.then((r) => {
      const file = store.fileIdentity(handle.id)
      if (!settled) write({ event: 'done', ...r, ...(file !== undefined ? { file } : {}) })
    }, (err: unknown) => {
      const e = toNaiadError(err, 'DFD_ERR_TASK_FAILED')
      if (!settled) write({ event: 'error', code: e.code, message: e.message })
    }).finally(() => {
      off()
      clearTimeout(timeout)
      if (admission?.admitted === true) admission.release()
      if (settled) return
      settled = true
      handle.release()
      out.end()
    })
    return reply.type('application/x-ndjson').send(out)
  })

  app.get('/api/v1/tasks', async () => store.listTasks().map((t) => ({ ...t, sha256: t.sha256?.toString('hex') ?? null })))

  app.get<{ Params: { id: string } }>('/api/v1/tasks/:id', async (request) => {
    const t = store.getTask(request.params.id)
    const progress = tasks.progressOf(request.params.id)
    if (t === undefined && progress === undefined) throw new NaiadError('DFD_ERR_TASK_NOT_FOUND', `no task ${request.params.id}`)
    return { ...t, sha256: t?.sha256?.toString('hex') ?? null, running: progress !== undefined, progress, clients: tasks.clientsOf(request.params.id) ?? 0 }
  })

  app.get<{ Params: { id: string } }>('/api/v1/tasks/:id/content', async (request, reply) => {
    const id = request.params.id
    const t = store.getTask(id)
    if (t === undefined || !t.complete || t.sha256 === null || !await store.checkFile(id)) throw new NaiadError('DFD_ERR_TASK_NOT_FOUND', `task ${id} is not complete in this daemon`)
    await components.permission?.checkTask(store, id, request.headers)
    const range = parseRangeHeader(request.headers.range, t.contentLength)
    if (range.kind === 'unsatisfiable') return reply.code(416).header('content-range', contentRange(range, t.contentLength)).send()
    const [start, end] = range.kind === 'partial' ? [range.start, range.end] : [0, t.contentLength - 1]
    if (range.kind === 'partial') reply.code(206).header('content-range', contentRange(range, t.contentLength))
    return reply
      .type('application/octet-stream')
      .header('content-length', String(end + 1 - start))
      .header('accept-ranges', 'bytes')
      .header('x-naiad-sha256', t.sha256.toString('hex'))
      .send(contentStream(store, id, start, end))
  })

  return app
}
