// What a download is asked for and what it reports.

import type { Priority } from '@naiad/proto'

export interface DownloadRequest {
  url: string
  headers: Record<string, string>
  /** `sha256:<hex>`: the whole content must match. */
  digest?: string
  /** Inclusive byte range `START-END`. */
  range?: string
  filter?: string[]
  /** Traffic class for QoS; on-demand when absent. */
  priority?: Priority
}

export interface DownloadProgress {
  taskId: string
  completedBytes: number
  totalBytes: number // -1 while unknown
  fromPeers: number
  fromOrigin: number
  /** Bytes from the start of the content that are verified and may be served (the last piece only once the whole content matched). */
  servableBytes: number
}

export interface DownloadResult {
  taskId: string
  contentLength: number
  sha256: string
  fromPeers: number
  fromOrigin: number
  cached: boolean
}

export interface PeerTaskOptions {
  /** Pieces in flight at once, over all parents. */
  concurrency: number
  /** Pieces in flight at once from one parent. */
  perParent: number
  /** A piece may go this long without a byte before its parent counts as stuck. */
  pieceTimeoutMs: number
  schedulerTimeoutMs: number
  /** With nothing to fetch and no progress for this long, go to the origin. */
  stallTimeoutMs: number
  /** How often to ask the scheduler for fresh parents while fetching. */
  refreshMs: number
  /** A piece is abandoned as slow only after this long (and 4× the recent median). */
  slowPieceMinMs: number
  /** How long a piece waits for room in the cache held by downloads in use before it fails. */
  reserveWaitMs?: number
  /** Pieces asked of the source at once while it is the only holder (streamed live). */
  sourceWindow?: number
}
