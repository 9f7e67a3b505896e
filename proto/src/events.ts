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
