// The `heal` remedy on the daemon: re-verify every piece of every complete task in the cache
// against the digest it was stored with, drop the tasks that hold a bad or unreadable piece
// (the store keeps whole tasks, and a task with a hole cannot be served as complete), tell
// the scheduler this daemon no longer holds them, and announce the host again.

import { createHash } from 'node:crypto'

import type { Logger } from 'pino'
import { NaiadError, type HealCommandResult } from '@naiad/proto'

import type { PieceStore, SchedulerClient } from '@naiad/peer'

export interface HealComponents {
  store: PieceStore
  scheduler: SchedulerClient
  announce: () => Promise<void>
  logger: Logger
}

/** What a heal found and did (the `heal` control command's result). */
export type HealResult = HealCommandResult

export async function healCache(c: HealComponents, signal: AbortSignal): Promise<HealResult> {
  const started = Date.now()
  const result: HealResult = { tasks: 0, pieces: 0, badPieces: 0, dropped: [], durationMs: 0 }
  for (const task of c.store.listTasks()) {
    // A task still downloading is verified piece by piece as it lands; only the cache is re-checked.
    if (!task.complete) continue
    if (signal.aborted) throw new NaiadError('PROTO_ERR_ABORTED', 'heal was aborted', { cause: signal.reason })
    result.tasks++
    let bad = 0
    const unpin = c.store.pin(task.id)
    try {
      for (const num of c.store.bitmap(task.id).pieces()) {
        result.pieces++
        try {
          const got = await c.store.readPiece(task.id, num)
          if (got === undefined || !createHash('sha256').update(got.data).digest().equals(got.piece.sha256)) bad++
        } catch {
          bad++
        }
        if (signal.aborted) break
      }
    } finally {
      unpin()
    }
    if (bad > 0) {
      result.badPieces += bad
      result.dropped.push(task.id)
      c.logger.warn({ task: task.id.slice(0, 12), badPieces: bad }, 'heal: dropping a cached task with bad pieces')
      await c.store.deleteTask(task.id)
      await c.scheduler.leaveTask(task.id, AbortSignal.timeout(5000)).catch(() => {})
    }
  }
  await c.announce()
  result.durationMs = Date.now() - started
  return result
}
