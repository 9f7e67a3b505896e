// Builds the timeline of each pull from the download events the core publishes: when it
// began, when the scheduler answered, the first piece, bytes per source (peer, seed,
// origin) and per parent, every back-to-source with its reason, and how it ended.

import { randomUUID } from 'node:crypto'

import type { PullTrace } from '@naiad/proto'

interface Open {
  trace: PullTrace
  parents: Map<string, { isSeed: boolean; bytes: number; pieces: number }>
}

/** URLs may carry signed tokens in their query: traces keep scheme, host and path only. */
export function traceUrl(url: string): string {
  try {
    const u = new URL(url)
    return `${u.protocol}//${u.host}${u.pathname}`
  } catch {
    return ''
  }
}

export class Timelines {
  private readonly open = new Map<string, Open>()
  private readonly maxOpen: number
  private readonly now: () => number

  constructor(options: { maxOpen?: number; now?: () => number } = {}) {
    this.maxOpen = options.maxOpen ?? 4096
    this.now = options.now ?? Date.now
  }

  get size(): number {
    return this.open.size
  }

  started(m: { taskId: string; url: string }): void {
    // A task runs once at a time per daemon (the task manager joins callers), so a second
    // start means the first never ended: drop it. The oldest goes when the map is full.
    this.open.delete(m.taskId)
    if (this.open.size >= this.maxOpen) this.open.delete(this.open.keys().next().value!)
    this.open.set(m.taskId, {
      parents: new Map(),
      trace: {
        traceId: randomUUID(), taskId: m.taskId, url: traceUrl(m.url),
        startedAtMs: this.now(), registeredAtMs: -1, scheduled: false, firstPieceAtMs: -1, finishedAtMs: -1, durationMs: 0,
        result: '', errorCode: '', errorMessage: '', contentLength: -1,
        bytesPeer: 0, bytesSeed: 0, bytesOrigin: 0, backToSource: [], parents: [], pieces: 0, pieceFailures: 0
      }
    })
  }

  registered(m: { taskId: string; scheduled: boolean }): void {
    const o = this.open.get(m.taskId)
    if (o === undefined) return
    o.trace.registeredAtMs = this.now()
    o.trace.scheduled = m.scheduled
  }

  pieceStored(m: { taskId: string; length: number; source: string; parentId: string; seed?: boolean }): void {
    const o = this.open.get(m.taskId)
    if (o === undefined) return
    const t = o.trace
    if (t.firstPieceAtMs < 0) t.firstPieceAtMs = this.now()
    t.pieces++
    if (m.source === 'origin') {
      t.bytesOrigin += m.length
      return
    }
    if (m.seed === true) t.bytesSeed += m.length
    else t.bytesPeer += m.length
    const p = o.parents.get(m.parentId) ?? { isSeed: m.seed === true, bytes: 0, pieces: 0 }
    p.bytes += m.length
    p.pieces++
    o.parents.set(m.parentId, p)
  }

  pieceFailed(m: { taskId: string }): void {
    const o = this.open.get(m.taskId)
    if (o !== undefined) o.trace.pieceFailures++
  }

  backToSource(m: { taskId: string; reason: string }): void {
    this.open.get(m.taskId)?.trace.backToSource.push({ atMs: this.now(), reason: m.reason })
  }

  /** Closes the timeline of a succeeded pull; undefined for a task this daemon did not see start. */
  succeeded(m: { taskId: string; contentLength: number; durationMs: number }): PullTrace | undefined {
    return this.close(m.taskId, { result: 'succeeded', contentLength: m.contentLength, durationMs: m.durationMs })
  }

  failed(m: { taskId: string; code: string; message: string; durationMs?: number }): PullTrace | undefined {
    return this.close(m.taskId, { result: 'failed', errorCode: m.code, errorMessage: m.message.slice(0, 1024), durationMs: m.durationMs })
  }

  private close(taskId: string, end: Partial<PullTrace>): PullTrace | undefined {
    const o = this.open.get(taskId)
    if (o === undefined) return undefined
    this.open.delete(taskId)
    const t = o.trace
    const now = this.now()
    Object.assign(t, end)
    t.finishedAtMs = now
    // The core measures the duration from its own start; without it, from the start event.
    if (end.durationMs === undefined) t.durationMs = Math.max(0, now - t.startedAtMs)
    if (t.contentLength < 0 && t.result === 'succeeded') t.contentLength = t.bytesPeer + t.bytesSeed + t.bytesOrigin
    t.parents = [...o.parents].map(([peerId, p]) => ({ peerId, ...p }))
    return t
  }
}
