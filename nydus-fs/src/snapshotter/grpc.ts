// The snapshots service on a unix socket with @grpc/grpc-js. Messages are (de)serialized by
// the schemas in @naiad/proto (snapshots/snapshots.ts) through grpc-js's custom
// serializers, so no .proto is loaded at run time. Typed errors become gRPC status codes
// here and only here, the way containerd's errdefs reads them back (NOT_FOUND,
// ALREADY_EXISTS, FAILED_PRECONDITION, ...).

import { mkdir, rm } from 'node:fs/promises'
import { dirname } from 'node:path'

import * as grpc from '@grpc/grpc-js'
import {
  labelsFromEntries, NaiadError, SNAPSHOTS_METHODS, SNAPSHOTS_SERVICE_NAME,
  type Logger, type MessageSchema, type Fields, type SnapshotsMethod
} from '@naiad/proto/contracts'

import type { Snapshotter } from './snapshotter.ts'

function grpcCode(err: unknown): grpc.status {
  if (!(err instanceof NaiadError)) return grpc.status.UNKNOWN
  switch (err.status) {
    case 400: return grpc.status.INVALID_ARGUMENT
    case 404: return grpc.status.NOT_FOUND
    case 409: return grpc.status.ALREADY_EXISTS
    case 412: return grpc.status.FAILED_PRECONDITION
    case 502: case 503: case 504: return grpc.status.UNAVAILABLE
    default: return grpc.status.UNKNOWN
  }
}

function definition(): grpc.ServiceDefinition {
  const def: Record<string, grpc.MethodDefinition<object, object>> = {}
  for (const [name, m] of Object.entries(SNAPSHOTS_METHODS)) {
    const req = m.request as unknown as MessageSchema<Fields>
    const res = m.response as unknown as MessageSchema<Fields>
    def[name] = {
      path: `/${SNAPSHOTS_SERVICE_NAME}/${name}`,
      requestStream: false,
      responseStream: m.responseStream,
      requestSerialize: (v: object) => Buffer.from(req.encode(v)),
      requestDeserialize: (b: Buffer) => req.decode(b),
      responseSerialize: (v: object) => Buffer.from(res.encode(v)),
      responseDeserialize: (b: Buffer) => res.decode(b),
      originalName: name
    }
  }
  return def
}

type Decoded<M extends SnapshotsMethod> = ReturnType<(typeof SNAPSHOTS_METHODS)[M]['request']['decode']>
type Reply<M extends SnapshotsMethod> = Parameters<(typeof SNAPSHOTS_METHODS)[M]['response']['encode']>[0]

export class SnapshotsServer {
  private readonly server = new grpc.Server({ 'grpc.max_receive_message_length': 16 * 1024 * 1024 })
  private readonly snapshotter: Snapshotter
  private readonly log: Logger

  constructor(snapshotter: Snapshotter, logger: Logger) {
    this.snapshotter = snapshotter
    this.log = logger.child({ module: 'grpc' })
    const s = this.snapshotter
    const unary = <M extends SnapshotsMethod>(method: M, handle: (req: Decoded<M>) => Promise<Reply<M>> | Reply<M>): grpc.handleUnaryCall<Decoded<M>, Reply<M>> =>
      (call, callback) => {
        const t0 = Date.now()
        Promise.resolve().then(() => handle(call.request)).then(
          (reply) => {
            this.log.debug({ method, ms: Date.now() - t0 }, 'ok')
            callback(null, reply)
          },
          (err: unknown) => {
            const code = grpcCode(err)
            const level = code === grpc.status.ALREADY_EXISTS || code === grpc.status.NOT_FOUND ? 'debug' : 'warn'
            this.log[level]({ method, code: grpc.status[code], err: (err as Error).message }, 'failed')
            callback({ code, details: (err as Error).message })
          })
      }
    const impl: grpc.UntypedServiceImplementation = {
      Prepare: unary('Prepare', async (r) => ({ mounts: await s.prepare(r.key, r.parent, labelsFromEntries(r.labels)) })),
      View: unary('View', async (r) => ({ mounts: await s.view(r.key, r.parent, labelsFromEntries(r.labels)) })),
      Mounts: unary('Mounts', async (r) => ({ mounts: await s.mounts(r.key) })),
      Commit: unary('Commit', async (r) => { await s.commit(r.name, r.key, labelsFromEntries(r.labels)); return {} }),
      Remove: unary('Remove', async (r) => { await s.remove(r.key); return {} }),
      Stat: unary('Stat', (r) => ({ info: s.stat(r.key) })),
      Update: unary('Update', (r) => {
        if (r.info === undefined) throw new NaiadError('PROTO_ERR_USAGE', 'Update without info')
        return { info: s.update(r.info, r.updateMask?.paths ?? []) }
      }),
      Usage: unary('Usage', async (r) => s.usage(r.key)),
      Cleanup: unary('Cleanup', async () => { await s.cleanup(); return {} }),
      List: (call: grpc.ServerWritableStream<Decoded<'List'>, Reply<'List'>>) => {
        try {
          const infos = s.list(call.request.filters)
          // containerd's own snapshotters send pages of 100.
          for (let i = 0; i < infos.length; i += 100) call.write({ info: infos.slice(i, i + 100) })
          call.end()
        } catch (err) {
          call.destroy(Object.assign(new Error((err as Error).message), { code: grpcCode(err) }))
        }
      }
    }
    this.server.addService(definition(), impl)
  }

  async listen(socket: string): Promise<void> {
    await mkdir(dirname(socket), { recursive: true, mode: 0o700 })
    // A socket file left by a killed snapshotter would make the bind fail.
    await rm(socket, { force: true })
    await new Promise<void>((resolve, reject) => {
      this.server.bindAsync(`unix:${socket}`, grpc.ServerCredentials.createInsecure(), (err) => (err === null ? resolve() : reject(err)))
    })
  }

  /** Stops taking calls; calls under way get `graceMs` to finish. */
  async close(graceMs = 5_000): Promise<void> {
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => { this.server.forceShutdown(); resolve() }, graceMs)
      this.server.tryShutdown(() => { clearTimeout(timer); resolve() })
    })
  }
}
