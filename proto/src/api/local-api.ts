// The contract of the daemon's local API (dfdaemon serves it; dfget and nydus-fs call it
// through LocalApiClient, local-api-client.ts).

import type { Priority } from '../task/priority.ts'

/** Body of POST /api/v1/downloads. */
export interface DownloadRequestBody {
  url: string
  headers?: Record<string, string>
  /** `sha256:<hex>` of the whole content. */
  digest?: string
  /** Inclusive byte range `START-END`. */
  range?: string
  /** Query parameters left out of the task ID. */
  filter?: string[]
  /** How long this caller waits; the download itself goes on. */
  timeoutMs?: number
  /** QoS class (the `qos` plugin): on-demand (default) before preheat before prefetch. */
  priority?: Priority
}

/** One NDJSON line of the answer to POST /api/v1/downloads; the last is `done` or `error`. */
export type DownloadEvent =
  /** `path`: the task's data file on the daemon's host; a client there that may read it can copy the content from it once done. */
  | { event: 'started'; taskId: string; path?: string }
  /** `servableBytes`: bytes from the start that are verified and may be read now. */
  | { event: 'progress'; taskId: string; completedBytes: number; totalBytes: number; fromPeers: number; fromOrigin: number; servableBytes?: number }
  /**
   * `file`: the identity (fileIdentity) the daemon recorded for the data file when the task
   * completed; a same-host client links or copies that file only while it still has it.
   */
  | { event: 'done'; taskId: string; contentLength: number; sha256: string; fromPeers: number; fromOrigin: number; cached: boolean; file?: string }
  | { event: 'error'; code: string; message: string }

/** The parts of a file's status that any write into it (or its replacement) changes. */
export interface FileStatus {
  dev: bigint
  ino: bigint
  size: bigint
  mtimeNs: bigint
}

/**
 * A complete task's data file as the daemon recorded it: device, inode, size and mtime in
 * nanoseconds. Not ctime: a hard link to the file (dfget's output) or a chmod changes it
 * without changing a byte.
 */
export function fileIdentity(st: FileStatus): string {
  return `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}`
}
