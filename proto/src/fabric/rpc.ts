// Typed request/response over fabric streams: one length-prefixed request frame, one
// length-prefixed response frame, both bounded by a maximum size on receive.

import type { Connection, PeerId, Stream } from '@libp2p/interface'
import type { Multiaddr } from '@multiformats/multiaddr'
import { lpStream } from '@libp2p/utils'

import type { Fields, Infer, MessageSchema } from '../codec/wire.ts'
import { NaiadError, isErrorCode, toNaiadError, type ErrorCode } from '../errors.ts'
import { LIMITS } from '../protocols.ts'
import type { FabricNode } from './node.ts'

export interface CallOptions {
  signal?: AbortSignal
  timeoutMs?: number
  maxResponseBytes?: number
}

export type DialTarget = PeerId | Multiaddr | Multiaddr[]

/** Combines the caller's signal with a timeout; tells the two apart when it fires. */
export function deadline(signal: AbortSignal | undefined, timeoutMs: number): AbortSignal {
  const timeout = AbortSignal.timeout(timeoutMs)
  return signal === undefined ? timeout : AbortSignal.any([signal, timeout])
}

/** Maps a failure of a fabric wait onto the codes callers branch on. */
export function fabricError(err: unknown, signal: AbortSignal, what: string, fallback: ErrorCode = 'PROTO_ERR_DIAL'): NaiadError {
  if (err instanceof NaiadError) return err
  if (signal.aborted) {
    const reason = signal.reason as Error | undefined
    if (reason?.name === 'TimeoutError') return new NaiadError('PROTO_ERR_TIMEOUT', `${what} timed out`, { cause: err })
    return new NaiadError('PROTO_ERR_ABORTED', `${what} was aborted`, { cause: err })
  }
  const e = err as Error & { name?: string }
  if (e?.name === 'InvalidDataLengthError' || e?.name === 'StreamBufferError') {
    return new NaiadError('PROTO_ERR_MESSAGE_TOO_LARGE', `${what}: ${e.message}`, { cause: err })
  }
  return toNaiadError(err, fallback, what)
}

export async function openStream(node: FabricNode, target: DialTarget, protocol: string, signal: AbortSignal): Promise<Stream> {
  return node.dialProtocol(target, protocol, { signal })
}

/** One request, one response. */
export async function call<Q extends Fields, R extends Fields>(
  node: FabricNode,
  target: DialTarget,
  protocol: string,
  request: MessageSchema<Q>,
  response: MessageSchema<R>,
  value: Partial<Infer<Q>>,
  options: CallOptions = {}
): Promise<Infer<R>> {
  const signal = deadline(options.signal, options.timeoutMs ?? LIMITS.callTimeoutMs)
  let stream: Stream | undefined
  try {
    stream = await openStream(node, target, protocol, signal)
    const lp = lpStream(stream, { maxDataLength: options.maxResponseBytes ?? LIMITS.maxMessageBytes })
    await lp.write(request.encode(value), { signal })
    const reply = await lp.read({ signal })
    await stream.close({ signal }).catch(() => {})
    return response.decode(reply.subarray())
  } catch (err) {
    const e = fabricError(err, signal, `${protocol} call`)
    stream?.abort(e)
    throw e
  }
}

export interface HandlerContext {
  remotePeer: PeerId
  connection: Connection
  signal: AbortSignal
}

export interface ServeOptions {
  maxRequestBytes?: number
  timeoutMs?: number
  maxInboundStreams?: number
}

/**
 * Serves one request/response protocol. The handler's errors become the response's
 * `error` field (the response schema must have one, of type RpcError) rather than a reset
 * stream, so the caller learns the code.
 */
export async function serve<Q extends Fields, R extends Fields>(
  node: FabricNode,
  protocol: string,
  request: MessageSchema<Q>,
  response: MessageSchema<R>,
  handler: (req: Infer<Q>, ctx: HandlerContext) => Promise<Partial<Infer<R>>>,
  options: ServeOptions = {}
): Promise<void> {
  await node.handle(protocol, async (stream, connection) => {
    const signal = AbortSignal.timeout(options.timeoutMs ?? LIMITS.callTimeoutMs * 2)
    const lp = lpStream(stream, { maxDataLength: options.maxRequestBytes ?? LIMITS.maxMessageBytes })
    try {
      const bytes = await lp.read({ signal })
      let reply: Partial<Infer<R>>
      try {
        const req = request.decode(bytes.subarray())
        reply = await handler(req, { remotePeer: connection.remotePeer, connection, signal })
      } catch (err) {
        const e = toNaiadError(err, 'PROTO_ERR_REMOTE')
        reply = { error: { code: e.code, message: e.message } } as unknown as Partial<Infer<R>>
      }
      await lp.write(response.encode(reply), { signal })
      await stream.close({ signal })
    } catch (err) {
      stream.abort(fabricError(err, signal, `${protocol} handler`))
    }
  }, { maxInboundStreams: options.maxInboundStreams ?? 256 })
}

/** Turns an `error` field of a response back into a thrown NaiadError. */
export function raiseRemote(error: { code: string; message: string } | undefined): void {
  if (error === undefined || error.code === '') return
  const code: ErrorCode = isErrorCode(error.code) ? error.code : 'PROTO_ERR_REMOTE'
  throw new NaiadError(code, error.message)
}
