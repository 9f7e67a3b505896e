// Sending a task's verified bytes to a client (the mirror, the forward proxy, the local
// API): from the store, read ahead into a few reused buffers; while a download runs, as
// far as its verified prefix reaches (TaskHandle.servable), waiting for more.

import { Readable, type Writable } from 'node:stream'

import { NaiadError } from '@naiad/proto'

import type { TaskHandle } from '../download/task-manager.ts'
import type { PieceStore } from './piece-store.ts'

/**
 * Streams bytes [start, end] (inclusive) of a complete task, holding a pin until the
 * stream ends or is destroyed.
 */
export function contentStream(store: PieceStore, id: string, start: number, end: number): Readable {
  const unpin = store.pin(id)
  const step = 1024 * 1024
  async function* chunks(): AsyncGenerator<Buffer> {
    try {
      for (let pos = start; pos <= end; pos += step) yield await store.read(id, pos, Math.min(step, end + 1 - pos))
    } finally {
      unpin()
    }
  }
  const stream = Readable.from(chunks(), { objectMode: false })
  stream.once('close', unpin)
  return stream
}

/** Bytes read from disk at once when sending content, and buffers in flight (read ahead). */
const SEND_CHUNK = 1024 * 1024
const SEND_BUFFERS = 4

/**
 * Buffers of one transfer, kept across the calls that send it piece by piece (a cold
 * download is sent as its verified prefix grows: a new set per call was 1–4 MiB of
 * external memory per piece, and the collector's time).
 */
export class SendBuffers {
  readonly free: Buffer[] = []
  allocated = 0
}

/**
 * Writes bytes [start, end] (inclusive) of a task's stored content to `out`, without
 * ending it. Reads run ahead of the socket into a few buffers that are reused once the
 * socket has taken their bytes (a write's callback), so disk reads overlap socket writes
 * and a transfer allocates no buffers per chunk. Back-pressure: at most SEND_BUFFERS
 * chunks are in flight. Rejects if `out` is closed or errors before the last write landed.
 * Only bytes the store lists as verified may be asked for. Holds a pin while it runs.
 * `buffers` lets several calls for one transfer reuse the same buffers.
 */
export async function sendContent(store: PieceStore, id: string, start: number, end: number, out: Writable, buffers = new SendBuffers()): Promise<void> {
  if (end < start) return
  const free = buffers.free
  let pending = 0
  let failure: Error | undefined
  let wake: (() => void) | undefined
  const onClose = (): void => {
    failure ??= new NaiadError('PROTO_ERR_ABORTED', 'the client closed the connection')
    wake?.()
  }
  const onError = (err: Error): void => {
    failure ??= err
    wake?.()
  }
  out.once('close', onClose)
  out.once('error', onError)
  const unpin = store.pin(id)
  const wait = (): Promise<void> => new Promise<void>((resolve) => { wake = resolve })
  try {
    if (out.destroyed) onClose()
    let pos = start
    while (pos <= end && failure === undefined) {
      let buf = free.pop()
      if (buf === undefined && buffers.allocated < SEND_BUFFERS) {
        buf = Buffer.allocUnsafeSlow(SEND_CHUNK)
        buffers.allocated++
      }
      if (buf === undefined) {
        await wait()
        continue
      }
      const n = Math.min(SEND_CHUNK, end + 1 - pos)
      const chunk = buf.subarray(0, n)
      await store.readInto(id, pos, chunk)
      if (failure !== undefined) break
      pos += n
      pending++
      const owned = buf
      out.write(chunk, (err) => {
        pending--
        if (err !== undefined && err !== null) failure ??= err
        else free.push(owned)
        wake?.()
      })
    }
    while (pending > 0 && failure === undefined) await wait()
    if (failure !== undefined) throw failure
  } finally {
    out.off('close', onClose)
    out.off('error', onError)
    unpin()
  }
}

/**
 * Resolves once the download's servable bytes reach past `beyond` or it ended well;
 * rejects with its error if it failed first, or when `signal` fires.
 */
export async function waitServable(handle: TaskHandle, beyond: number, signal?: AbortSignal): Promise<void> {
  let failure: { err: unknown } | undefined
  let ended = false
  // One settlement handler for the whole wait: no derived promise is left to reject unseen.
  handle.done.then(() => { ended = true }, (err: unknown) => { failure = { err }; ended = true })
  for (;;) {
    signal?.throwIfAborted()
    if (handle.servable() > beyond) return
    await Promise.resolve() // a settled `done` runs its handler first
    if (failure !== undefined) throw failure.err
    if (ended) return
    await handle.changed(signal)
  }
}

/**
 * Writes bytes [start, end] (inclusive) of a download to `out` as they become servable —
 * verified, the last piece only once the whole content matched its digest — without
 * ending `out`. Rejects with the download's error if it fails first.
 */
export async function sendServable(store: PieceStore, handle: TaskHandle, start: number, end: number, out: Writable, signal?: AbortSignal): Promise<void> {
  const buffers = new SendBuffers()
  let pos = start
  while (pos <= end) {
    await waitServable(handle, pos, signal)
    const ready = Math.min(end + 1, handle.servable())
    if (ready <= pos) throw new NaiadError('DFD_ERR_TASK_NOT_FOUND', `task ${handle.id} ended with ${handle.servable()} bytes, ${end + 1} were asked for`)
    await sendContent(store, handle.id, pos, ready - 1, out, buffers)
    pos = ready
  }
}
