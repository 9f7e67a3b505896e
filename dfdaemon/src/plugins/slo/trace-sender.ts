// Delivers finished traces to the supernode over /naiad/trace/1.0.0. While the supernode
// is unreachable the traces wait in a bounded buffer (the oldest go first when it is full)
// and are retried on every tick; a pull never waits for its trace to be delivered.

import type { Logger } from 'pino'
import { NaiadError, SLO_TRACE_PROTOCOL, TraceAck, TraceBatch, type PullTrace } from '@naiad/proto'

import type { SupernodeLink } from '../../plugin-api/context.ts'

export interface TraceSenderOptions {
  maxBuffered: number
  batchSize: number
  /** After a failed delivery, wait this long before the next attempt. */
  retryMs: number
  timeoutMs: number
}

export interface TraceSenderStatus {
  buffered: number
  sent: number
  dropped: number
  failures: number
  lastError: { code: string; message: string; at: string } | null
}

export class TraceSender {
  private readonly buffer: PullTrace[] = []
  private flushing: Promise<void> | undefined
  private retryAfter = 0
  private sent = 0
  private dropped = 0
  private failures = 0
  private lastError: TraceSenderStatus['lastError'] = null
  private closing = false
  private closed = false

  private readonly supernode: SupernodeLink
  private readonly logger: Logger
  private readonly options: TraceSenderOptions

  constructor(supernode: SupernodeLink, logger: Logger, options: TraceSenderOptions) {
    this.supernode = supernode
    this.logger = logger
    this.options = options
  }

  status(): TraceSenderStatus {
    return { buffered: this.buffer.length, sent: this.sent, dropped: this.dropped, failures: this.failures, lastError: this.lastError }
  }

  add(trace: PullTrace): void {
    this.buffer.push(trace)
    if (this.buffer.length > this.options.maxBuffered) {
      const n = this.buffer.length - this.options.maxBuffered
      this.buffer.splice(0, n)
      this.dropped += n
      this.logger.warn({ dropped: n, buffered: this.buffer.length }, 'trace buffer full: dropped the oldest traces')
    }
    this.kick()
  }

  /** Starts a delivery unless one runs or the last one failed less than retryMs ago. */
  kick(): void {
    if (this.closing || this.flushing !== undefined || this.buffer.length === 0 || Date.now() < this.retryAfter) return
    this.flushing = this.flush().finally(() => { this.flushing = undefined })
  }

  /** Waits for a running delivery, then makes one last short attempt so that a daemon stopping right after a pull still reports it. */
  async close(): Promise<void> {
    this.closing = true
    await this.flushing
    if (this.buffer.length > 0 && Date.now() >= this.retryAfter) await this.flush(Math.min(this.options.timeoutMs, 2000))
    this.closed = true
  }

  private async flush(timeoutMs = this.options.timeoutMs): Promise<void> {
    while (!this.closed && this.buffer.length > 0) {
      const batch = this.buffer.slice(0, this.options.batchSize)
      try {
        await this.supernode.call(SLO_TRACE_PROTOCOL, TraceBatch, TraceAck, { traces: batch }, { timeoutMs })
      } catch (err) {
        const e = err instanceof NaiadError ? err : new NaiadError('PROTO_ERR_DIAL', (err as Error).message, { cause: err })
        this.failures++
        this.retryAfter = Date.now() + this.options.retryMs
        if (this.lastError === null) this.logger.warn({ err: e.message, code: e.code, buffered: this.buffer.length }, 'cannot deliver traces to the supernode; keeping them to retry')
        else this.logger.debug({ err: e.message, code: e.code, buffered: this.buffer.length }, 'trace delivery failed again')
        this.lastError = { code: e.code, message: e.message, at: new Date().toISOString() }
        return
      }
      // The buffer may have dropped its oldest entries meanwhile: remove exactly what was sent.
      const sentIds = new Set(batch.map((t) => t.traceId))
      let n = 0
      for (let i = this.buffer.length - 1; i >= 0; i--) {
        if (sentIds.has(this.buffer[i].traceId)) { this.buffer.splice(i, 1); n++ }
      }
      this.sent += n
      if (this.lastError !== null) this.logger.info({ sent: n, buffered: this.buffer.length }, 'traces delivered again')
      this.lastError = null
    }
  }
}
