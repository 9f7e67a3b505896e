// Sending a task's verified bytes to a client (the mirror, the forward proxy, the local
// API): from the store, read ahead into a few reused buffers; while a download runs, as
// far as its verified prefix reaches (TaskHandle.servable), waiting for more.

import { Readable, type Writable } from 'node:stream'

import { NaiadError } from '@naiad/proto'

import { BufferPool } from '../channel/buffer-pool.ts'
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

/** The buffers of one transfer: several calls that send it piece by piece share one pool. */
export function sendBuffers(): BufferPool {
  return new BufferPool(SEND_BUFFERS, SEND_CHUNK)
}

/**
 * Writes bytes [start, end] (inclusive) of a task's stored content to `out`, without
 * ending it. Reads run ahead of the socket into the pool's few buffers, which come back
 * once the socket has taken their bytes (a write's callback), so disk reads overlap socket
 * writes and a transfer allocates no buffers per chunk. Back-pressure: at most the pool's
 * buffers are in flight. Rejects if `out` is closed or errors before the last write landed.
 * Only bytes the store lists as verified may be asked for. Holds a pin while it runs.
 * A cold download is sent as its verified prefix grows: its calls share `pool` (a new set
 * per call was 1–4 MiB of external memory per piece, and the collector's time).
 */
export async function sendContent(store: PieceStore, id: string, start: number, end: number, out: Writable, pool = sendBuffers()): Promise<void> {
  if (end < start) return
  const stop = new AbortController()
  let failure: Error | undefined
  const fail = (err: Error): void => {
    failure ??= err
    stop.abort(failure)
  }
  const onClose = (): void => fail(new NaiadError('PROTO_ERR_ABORTED', 'the client closed the connection'))
  out.once('close', onClose)
  out.once('error', fail)
  const unpin = store.pin(id)
  try {
    if (out.destroyed) onClose()
    let pos = start
    while (pos <= end && failure === undefined) {
      const buf = await pool.take(stop.signal).catch(() => undefined)
      if (buf === undefined) break
      const chunk = buf.subarray(0, Math.min(buf.length, end + 1 - pos))
      try {
        await store.readInto(id, pos, chunk)
      } catch (err) {
        pool.give(buf)
        throw err
      }
      if (failure !== undefined) {
        pool.give(buf)
        break
      }
      pos += chunk.length
      out.write(chunk, (err) => {
        if (err !== undefined && err !== null) fail(err)
        pool.give(buf)
      })
    }
    await pool.drained(stop.signal).catch(() => {})
    if (failure !== undefined) throw failure
  } finally {
    out.off('close', onClose)
    out.off('error', fail)
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
  const settled = handle.done.then(() => { ended = true }, (err: unknown) => { failure = { err }; ended = true })
  for (;;) {
    signal?.throwIfAborted()
    if (handle.servable() > beyond) return
    await Promise.resolve() // a settled `done` runs its handler first
    if (failure !== undefined) throw failure.err
    if (ended) return
    // The end wakes this wait too: the task's last change can come between the checks above
    // and this wait, and a task that ends emits no change after it.
    await Promise.race([handle.changed(signal), settled])
  }
}

/**
 * Writes bytes [start, end] (inclusive) of a download to `out` as they become servable —
 * verified, the last piece only once the whole content matched its digest — without
 * ending `out`. Rejects with the download's error if it fails first.
 */
export async function sendServable(store: PieceStore, handle: TaskHandle, start: number, end: number, out: Writable, signal?: AbortSignal): Promise<void> {
  const pool = sendBuffers()
  let pos = start
  while (pos <= end) {
    await waitServable(handle, pos, signal)
    const ready = Math.min(end + 1, handle.servable())
    if (ready <= pos) throw new NaiadError('DFD_ERR_TASK_NOT_FOUND', `task ${handle.id} ended with ${handle.servable()} bytes, ${end + 1} were asked for`)
    await sendContent(store, handle.id, pos, ready - 1, out, pool)
    pos = ready
  }
}
