// Both ends of `/naiad/seed-fetch/1.0.0` (messages/seed-fetch.ts): one request frame, then
// the callee's progress frames and a last frame with the result or an error. Progress goes
// out at least every keepalive interval even when no byte moved, so the caller can tell a
// slow fetch (frames keep coming) from a dead callee (none for idleTimeoutMs). The caller
// gives up by resetting the stream, which aborts the fetch on the callee.

import type { Stream } from '@libp2p/interface'
import { lpStream } from '@libp2p/utils'

import { NaiadError, toNaiadError } from '../errors.ts'
import { SeedFetchFrame, SeedFetchRequest } from '../messages/seed-fetch.ts'
import { LIMITS, PROTOCOLS } from '../protocols.ts'
import type { FabricNode } from './node.ts'
import { deadline, fabricError, openStream, raiseRemote, type DialTarget, type HandlerContext } from './rpc.ts'

/** The callee sends a frame at least this often while it fetches. */
export const SEED_FETCH_KEEPALIVE_MS = 2_000
/** A caller gives up on a callee that sent no frame for this long. */
export const SEED_FETCH_IDLE_TIMEOUT_MS = 15_000

export interface SeedFetchProgress {
  taskId: string
  completedBytes: number
  totalBytes: number
}

export interface SeedFetchContext extends HandlerContext {
  /** Reports the latest progress; sent with the next keepalive, not per call. */
  progress: (p: SeedFetchProgress) => void
}

export interface ServeSeedFetchOptions {
  /** Longest fetch a caller may ask for, and the default when it names none. */
  maxTimeoutMs: number
  /** Aborts every fetch in flight (the supernode stopping). */
  stopping?: AbortSignal
  keepaliveMs?: number
  maxInboundStreams?: number
}

/** Serves seed-fetch; the handler's error becomes the last frame's error. */
export async function serveSeedFetch(
  node: FabricNode,
  handler: (req: SeedFetchRequest, ctx: SeedFetchContext) => Promise<Partial<SeedFetchFrame>>,
  options: ServeSeedFetchOptions
): Promise<void> {
  await node.handle(PROTOCOLS.seedFetch, async (stream, connection) => {
    const lp = lpStream(stream, { maxDataLength: LIMITS.maxMessageBytes })
    let req: SeedFetchRequest
    try {
      req = SeedFetchRequest.decode((await lp.read({ signal: AbortSignal.timeout(LIMITS.callTimeoutMs) })).subarray())
    } catch (err) {
      stream.abort(toNaiadError(err, 'PROTO_ERR_DECODE', 'seed-fetch request'))
      return
    }
    const gone = new AbortController()
    const onClose = (): void => gone.abort(new NaiadError('PROTO_ERR_ABORTED', 'the caller closed the seed-fetch stream'))
    stream.addEventListener('close', onClose, { once: true })
    const timeoutMs = Math.min(req.timeoutMs > 0 ? req.timeoutMs : options.maxTimeoutMs, options.maxTimeoutMs)
    const signal = AbortSignal.any([AbortSignal.timeout(timeoutMs), gone.signal, ...(options.stopping === undefined ? [] : [options.stopping])])
    // Frames go out one at a time, each bounded: a caller that stops reading is cut off.
    let writing: Promise<void> = Promise.resolve()
    const send = (frame: Partial<SeedFetchFrame>): Promise<void> => {
      writing = writing.then(() => lp.write(SeedFetchFrame.encode(frame), { signal: AbortSignal.timeout(LIMITS.callTimeoutMs) }).then(() => {}))
      return writing
    }
    let latest: SeedFetchProgress = { taskId: '', completedBytes: 0, totalBytes: -1 }
    const timer = setInterval(() => { send({ done: false, ...latest }).catch(() => gone.abort(new NaiadError('PROTO_ERR_ABORTED', 'the caller stopped reading'))) }, options.keepaliveMs ?? SEED_FETCH_KEEPALIVE_MS)
    let last: Partial<SeedFetchFrame>
    try {
      last = { ...await handler(req, { remotePeer: connection.remotePeer, connection, signal, progress: (p) => { latest = p } }), done: true }
    } catch (err) {
      // When the wait was cut short, say why (timeout, shutdown) rather than how the seed noticed.
      const e = signal.aborted ? fabricError(new Error('seed fetch stopped'), signal, 'seed fetch') : toNaiadError(err, 'PROTO_ERR_REMOTE')
      last = { done: true, error: { code: e.code, message: e.message } }
    } finally {
      clearInterval(timer)
      stream.removeEventListener('close', onClose)
    }
    if (gone.signal.aborted) return
    try {
      await send(last)
      await stream.close({ signal: AbortSignal.timeout(LIMITS.callTimeoutMs) })
    } catch (err) {
      stream.abort(toNaiadError(err, 'PROTO_ERR_ABORTED', 'seed-fetch answer'))
    }
  }, { maxInboundStreams: options.maxInboundStreams ?? 64 })
}

export interface SeedFetchCallOptions {
  signal?: AbortSignal
  /** The whole fetch; the callee is told, and stops then too. */
  timeoutMs: number
  /** No frame for this long: the callee is taken for gone (PROTO_ERR_TIMEOUT). */
  idleTimeoutMs?: number
  onProgress?: (p: SeedFetchProgress) => void
}

/** Asks the supernode at `target` to fetch a task into its seed; resolves with its last frame. */
export async function callSeedFetch(node: FabricNode, target: DialTarget, req: Partial<SeedFetchRequest>, options: SeedFetchCallOptions): Promise<SeedFetchFrame> {
  const signal = deadline(options.signal, options.timeoutMs)
  const idleMs = options.idleTimeoutMs ?? SEED_FETCH_IDLE_TIMEOUT_MS
  let stream: Stream | undefined
  let frameSignal = signal
  try {
    stream = await openStream(node, target, PROTOCOLS.seedFetch, AbortSignal.any([signal, AbortSignal.timeout(LIMITS.callTimeoutMs)]))
    const lp = lpStream(stream, { maxDataLength: LIMITS.maxMessageBytes })
    await lp.write(SeedFetchRequest.encode({ ...req, timeoutMs: options.timeoutMs }), { signal })
    for (;;) {
      frameSignal = AbortSignal.any([signal, AbortSignal.timeout(idleMs)])
      const frame = SeedFetchFrame.decode((await lp.read({ signal: frameSignal })).subarray())
      if (!frame.done) {
        options.onProgress?.({ taskId: frame.taskId, completedBytes: frame.completedBytes, totalBytes: frame.totalBytes })
        continue
      }
      await stream.close({ signal: AbortSignal.timeout(LIMITS.callTimeoutMs) }).catch(() => {})
      raiseRemote(frame.error)
      return frame
    }
  } catch (err) {
    const e = err instanceof NaiadError ? err : fabricError(err, frameSignal, `${PROTOCOLS.seedFetch} call`)
    stream?.abort(e)
    throw e
  }
}
