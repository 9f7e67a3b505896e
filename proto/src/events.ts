// diagnostics_channel names. The core publishes; metrics, tracing and tests subscribe.
// Publishing costs nothing when no one listens.

export const EVENTS = {
  /** { taskId, num, length, source: 'peer' | 'origin', parentId, costMs } */
  pieceStored: 'naiad:piece:stored',
  /** { taskId, num, parentId, code } */
  pieceFailed: 'naiad:piece:failed',
  /** { taskId, num, length, peerId } */
  pieceUploaded: 'naiad:piece:uploaded',
  /** { taskId, contentLength, durationMs, fromPeers, fromOrigin } */
  taskSucceeded: 'naiad:task:succeeded',
  /** { taskId, code, message } */
  taskFailed: 'naiad:task:failed',
  /** { taskId, reason } */
  backToSource: 'naiad:task:back-to-source',
  /** { taskId, bytes } */
  cacheEvicted: 'naiad:cache:evicted',
  /** scheduler: { taskId, peerId, parents: number, durationMs } */
  parentsScheduled: 'naiad:scheduler:parents',
  /** scheduler: { taskId, peerId, count } */
  piecesReported: 'naiad:scheduler:reported',
  /** { taskId, url }: a download that did not hit the cache begins. (pieceStored also carries `seed: boolean` for pieces from a parent; taskFailed also carries `durationMs`.) */
  taskStarted: 'naiad:task:started',
  /** { taskId, scheduled: boolean, backToSource: boolean }: the scheduler answered the registration (scheduled) or could not be reached */
  taskRegistered: 'naiad:task:registered',
  /** { taskId, num, peerId, code }: a piece this daemon was asked for could not be served */
  pieceUploadFailed: 'naiad:piece:upload-failed'
} as const

export type EventName = (typeof EVENTS)[keyof typeof EVENTS]

/** What each event carries, for typed subscribers (the plugin context's `subscribe`). */
export interface EventPayloads {
  [EVENTS.pieceStored]: { taskId: string; num: number; length: number; source: 'peer' | 'origin'; parentId: string; costMs: number; seed?: boolean }
  [EVENTS.pieceFailed]: { taskId: string; num: number; parentId: string; code: string }
  [EVENTS.pieceUploaded]: { taskId: string; num: number; length: number; peerId: string }
  [EVENTS.taskSucceeded]: { taskId: string; contentLength: number; durationMs: number; fromPeers: number; fromOrigin: number }
  [EVENTS.taskFailed]: { taskId: string; code: string; message: string; durationMs?: number }
  [EVENTS.backToSource]: { taskId: string; reason: string }
  /** `reason` 'modified': its data file changed outside the daemon (a hard-linked output written to). */
  [EVENTS.cacheEvicted]: { taskId: string; bytes: number; reason?: 'modified' }
  [EVENTS.parentsScheduled]: { taskId: string; peerId: string; parents: number; durationMs: number }
  [EVENTS.piecesReported]: { taskId: string; peerId: string; count: number }
  [EVENTS.taskStarted]: { taskId: string; url: string }
  [EVENTS.taskRegistered]: { taskId: string; scheduled: boolean; backToSource: boolean }
  [EVENTS.pieceUploadFailed]: { taskId: string; num: number; peerId: string; code: string }
}
