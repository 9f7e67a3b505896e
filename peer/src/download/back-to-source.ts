// A download's read of the whole content from its origin (origin-reader.ts does the
// bytes): a body cut off mid-way is read again, a few times; each piece it stores is
// counted, published and reported. On the task's trusted source the layout goes to the
// scheduler at once and piece digests go with the reports: every other peer verifies
// against them.

import { channel } from 'node:diagnostics_channel'

import type { Logger } from 'pino'
import { EVENTS, NaiadError, parseRange } from '@naiad/proto'

import type { Traffic } from '../qos/hooks.ts'
import { OriginReader, type OriginReaderComponents } from './origin-reader.ts'
import type { ReportBatcher } from './report-batcher.ts'
import type { TaskProgress } from './task-progress.ts'
import type { TaskView } from './task-view.ts'
import type { DownloadRequest } from './types.ts'

const stored = channel(EVENTS.pieceStored)

/** Full reads of a content whose body the origin cut off mid-way. */
const ATTEMPTS = 3

/** The download whose content is read, and where what the read finds goes. */
export interface OriginTask {
  id: string
  req: DownloadRequest
  view: TaskView
  tally: TaskProgress
  reports: Pick<ReportBatcher, 'add' | 'flush'>
  /** This node is the task's trusted source: its digests are the reference. */
  trusted: boolean
  traffic(): Traffic
  /** Throws when a content of this length cannot be had (it is larger than the whole cache). */
  checkLayout(contentLength: number): void
}

export interface BackToSourceComponents extends Omit<OriginReaderComponents, 'live'> {
  /** Pieces a trusted source's reads offer live to peers. */
  live: NonNullable<OriginReaderComponents['live']>
  log: Logger
}

/** Reads the whole content from the origin, storing the pieces not yet here; resolves to its SHA-256. */
export async function readFromOrigin(task: OriginTask, c: BackToSourceComponents, options: { reserveWaitMs: number }, signal: AbortSignal): Promise<Buffer> {
  let lastErr: unknown
  for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
    try {
      return await readOnce(task, c, options, signal)
    } catch (err) {
      lastErr = err
      // Only a body cut off mid-way is worth another full attempt; the origin client
      // already retried connection failures and 5xx answers.
      if (signal.aborted || (err as NaiadError).code !== 'DFD_ERR_ORIGIN_TRUNCATED') throw err
    }
  }
  throw lastErr
}

async function readOnce(task: OriginTask, c: BackToSourceComponents, options: { reserveWaitMs: number }, signal: AbortSignal): Promise<Buffer> {
  const { id, req, view, tally, reports, trusted } = task
  const reader = new OriginReader({ origin: c.origin, store: c.store, live: trusted ? c.live : undefined, qos: c.qos, staging: c.staging }, options)
  const result = await reader.read({
    id,
    url: req.url,
    headers: req.headers,
    range: req.range === undefined ? undefined : parseRange(req.range),
    pieceSize: view.pieceSize,
    contentLength: view.contentLength,
    digest: (n) => trusted ? undefined : view.digests.get(n)
  }, {
    layout: (contentLength, pieceSize, pieceCount) => {
      task.checkLayout(contentLength)
      view.pieceSize = pieceSize
      if (contentLength >= 0) {
        view.contentLength = contentLength
        view.pieceCount = pieceCount
      }
      // Children wait for the layout to ask for live pieces: publish it at once.
      if (trusted) reports.flush({ contentLength: view.contentLength, pieceSize, pieceCount: view.pieceCount }).catch(() => {})
      tally.emit()
    },
    piece: (num, length, sha256, written, costMs) => {
      view.digests.set(num, sha256)
      if (written) {
        c.log.debug({ piece: num, ms: costMs }, 'origin piece stored')
        tally.add('origin', length)
        stored.publish({ taskId: id, num, length, source: 'origin', parentId: '', costMs })
        reports.add({ num, parentId: '', length, costMs, sha256: trusted ? sha256 : new Uint8Array(0), errorCode: '' })
      }
      tally.advance()
      tally.emit()
    }
  }, task.traffic(), signal)
  view.contentLength = result.contentLength
  view.pieceCount = result.pieceCount
  if (view.sourceSha256 !== undefined && !trusted && !result.sha256.equals(view.sourceSha256)) {
    throw new NaiadError('DFD_ERR_ORIGIN_CHANGED', 'origin content differs from what the source published')
  }
  // Every byte passed through the hash on its way to the store.
  return result.sha256
}
