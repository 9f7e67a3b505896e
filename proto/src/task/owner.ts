// Which supernode owns a task: rendezvous (highest-random-weight) hashing of the task ID over
// the live supernodes' IDs. Daemons and supernodes compute it alike from the same live set,
// so it is part of the contract between them. Each member's weight for a task is the first
// 8 bytes of SHA-256(member ID, task ID); the highest wins. A member leaving moves only the
// tasks it owned (each to its own runner-up), a member joining takes only the tasks it now
// weighs most for: about 1/n of them.

import { createHash } from 'node:crypto'

/** The member's weight for a task (a 64-bit unsigned integer). */
export function ownerWeight(memberId: string, taskId: string): bigint {
  return createHash('sha256').update(memberId).update('\0').update(taskId).digest().readBigUInt64BE(0)
}

/** The owner of `taskId` among `memberIds` (any order); undefined when there are none. Ties go to the smaller ID. */
export function ownerOf(taskId: string, memberIds: Iterable<string>): string | undefined {
  let best: string | undefined
  let bestWeight = -1n
  for (const id of memberIds) {
    const w = ownerWeight(id, taskId)
    if (w > bestWeight || (w === bestWeight && best !== undefined && id < best)) {
      best = id
      bestWeight = w
    }
  }
  return best
}
