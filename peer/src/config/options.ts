// The piece engine's settings as option groups: the daemon's table and the supernode's (for
// its seed) include them, so their defaults live here once and nowhere else. DOWNLOAD_DEFAULTS
// and ORIGIN_DEFAULTS are these tables at their defaults.

import { defaultValues, defineOptions, type OptionValues } from '@naiad/proto'

import type { PeerTaskOptions } from '../download/types.ts'
import type { OriginOptions } from '../source/origin.ts'

export const DOWNLOAD_OPTIONS = defineOptions([
  { key: 'download.concurrency', type: 'int', min: 1, default: 8, help: 'pieces in flight at once per download' },
  { key: 'download.per-parent', type: 'int', min: 1, default: 3, help: 'pieces in flight at once from one parent' },
  { key: 'download.piece-timeout', type: 'duration', min: 1, default: '30s', help: 'longest a piece may go without a byte from its parent (and longest a piece may take to go out to a peer)' },
  { key: 'download.stall-timeout', type: 'duration', min: 1, default: '10s', help: 'with no parent able to serve for this long, go to the origin; while the supernode asks for a pace, at least two paces (a paced download asks for new parents once a pace); a poll the supernode puts off (SN_ERR_BUSY) starts the count again, up to a minute after the last progress' },
  { key: 'download.refresh-interval', type: 'duration', min: 1, default: '250ms', help: 'how often a running download asks the scheduler for fresh parents' },
  { key: 'download.slow-piece-min', type: 'duration', min: 1, default: '2s', help: 'a piece is given up as slow only after this long (and four times the recent median)' }
])

export const SCHEDULER_CLIENT_OPTIONS = defineOptions([
  { key: 'scheduler.timeout', type: 'duration', min: 1, default: '2s', help: 'timeout of one scheduler call' }
])

export const ORIGIN_OPTIONS = defineOptions([
  { key: 'origin.connect-timeout', type: 'duration', min: 1, default: '10s', help: 'origin connect timeout' },
  { key: 'origin.idle-timeout', type: 'duration', min: 1, default: '30s', help: 'longest wait for origin headers or the next body bytes' },
  { key: 'origin.retries', type: 'int', default: 3, help: 'retries of origin connection failures and 5xx answers' }
])

/** How many redirects an origin may send; not an operator's choice. */
const MAX_REDIRECTIONS = 5

export type DownloadValues = OptionValues<typeof DOWNLOAD_OPTIONS>
export type OriginValues = OptionValues<typeof ORIGIN_OPTIONS>

/** The download settings of a peer engine from the `download.*` values and the scheduler call timeout. */
export function downloadSettings(v: DownloadValues, schedulerTimeoutMs: number): PeerTaskOptions {
  return {
    concurrency: v['download.concurrency'],
    perParent: v['download.per-parent'],
    pieceTimeoutMs: v['download.piece-timeout'],
    stallTimeoutMs: v['download.stall-timeout'],
    refreshMs: v['download.refresh-interval'],
    slowPieceMinMs: v['download.slow-piece-min'],
    schedulerTimeoutMs
  }
}

/** The origin client's settings from the `origin.*` values. */
export function originSettings(v: OriginValues, extra: Pick<OriginOptions, 'caFile' | 'policy'> = {}): OriginOptions {
  return {
    connectTimeoutMs: v['origin.connect-timeout'],
    idleTimeoutMs: v['origin.idle-timeout'],
    retries: v['origin.retries'],
    maxRedirections: MAX_REDIRECTIONS,
    ...extra
  }
}

export const DOWNLOAD_DEFAULTS: PeerTaskOptions = downloadSettings(defaultValues(DOWNLOAD_OPTIONS), defaultValues(SCHEDULER_CLIENT_OPTIONS)['scheduler.timeout'])

export const ORIGIN_DEFAULTS: OriginOptions = originSettings(defaultValues(ORIGIN_OPTIONS))
