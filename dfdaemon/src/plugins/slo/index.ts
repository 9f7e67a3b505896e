// The daemon half of the slo plugin: turns the download events of this daemon into one
// timeline per pull and sends each finished timeline to the supernode, whose half of the
// plugin stores it and computes the SLIs and objectives (supernode/src/plugins/slo/).
//
// @example
// # dfdaemon.yaml
// plugins: [metrics, slo]
// plugin-config:
//   slo: { maxBuffered: 1000, retryInterval: 2s }
//
// curl localhost:65003/api/v1/traces/pending   # traces not yet delivered
//
// See docs/slo.md.

import { EVENTS, NaiadError, parseDuration, type NaiadPlugin } from '@naiad/proto'

import { Timelines } from './timelines.ts'
import { TraceSender } from './trace-sender.ts'

export interface SloDaemonSettings {
  /** Supernode HTTP URL; defaults to the daemon's own --supernode. */
  supernode: string | undefined
  maxBuffered: number
  batchSize: number
  retryMs: number
  timeoutMs: number
}

export function readDaemonSettings(raw: Record<string, unknown>, defaultSupernode: string | undefined): SloDaemonSettings {
  const key = (k: string): string => `plugin-config.slo.${k}`
  const int = (k: string, def: number, min: number, max: number): number => {
    const v = raw[k] ?? def
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) throw new NaiadError('PROTO_ERR_BAD_CONFIG', `${key(k)}: expected an integer from ${min} to ${max}`)
    return v
  }
  const duration = (k: string, def: string): number => {
    const v = raw[k] ?? def
    if (typeof v !== 'string') throw new NaiadError('PROTO_ERR_BAD_CONFIG', `${key(k)}: expected a duration such as ${def}`)
    try {
      return parseDuration(v, key(k))
    } catch (err) {
      throw new NaiadError('PROTO_ERR_BAD_CONFIG', (err as Error).message, { cause: err })
    }
  }
  const supernode = raw.supernode ?? defaultSupernode
  if (supernode !== undefined && (typeof supernode !== 'string' || !/^https?:\/\//.test(supernode))) {
    throw new NaiadError('PROTO_ERR_BAD_CONFIG', `${key('supernode')}: expected the supernode's HTTP URL`)
  }
  return {
    supernode,
    maxBuffered: int('maxBuffered', 1000, 1, 1_000_000),
    batchSize: int('batchSize', 100, 1, 1000),
    retryMs: duration('retryInterval', '2s'),
    timeoutMs: duration('timeout', '5s')
  }
}

export const sloDaemonPlugin: NaiadPlugin = {
  name: 'slo',
  version: '1.0.0',
  setup(ctx) {
    if (ctx.host !== 'dfdaemon') throw new NaiadError('PROTO_ERR_PLUGIN', 'this is the daemon half of the slo plugin')
    const settings = readDaemonSettings(ctx.settings, (ctx.extensions.daemon as { supernodeUrl?: string } | undefined)?.supernodeUrl || undefined)
    if (settings.supernode === undefined) throw new NaiadError('PROTO_ERR_BAD_CONFIG', 'plugin-config.slo.supernode: no supernode URL to send traces to')
    const timelines = new Timelines()
    const sender = new TraceSender(ctx.fabric, ctx.logger, {
      supernodeUrl: settings.supernode,
      maxBuffered: settings.maxBuffered,
      batchSize: settings.batchSize,
      retryMs: settings.retryMs,
      timeoutMs: settings.timeoutMs
    })

    ctx.subscribe<{ taskId: string; url: string }>(EVENTS.taskStarted, (m) => timelines.started(m))
    ctx.subscribe<{ taskId: string; scheduled: boolean }>(EVENTS.taskRegistered, (m) => timelines.registered(m))
    ctx.subscribe<{ taskId: string; length: number; source: string; parentId: string; seed?: boolean }>(EVENTS.pieceStored, (m) => timelines.pieceStored(m))
    ctx.subscribe<{ taskId: string }>(EVENTS.pieceFailed, (m) => timelines.pieceFailed(m))
    ctx.subscribe<{ taskId: string; reason: string }>(EVENTS.backToSource, (m) => timelines.backToSource(m))
    ctx.subscribe<{ taskId: string; contentLength: number; durationMs: number }>(EVENTS.taskSucceeded, (m) => {
      const trace = timelines.succeeded(m)
      if (trace !== undefined) sender.add(trace)
    })
    ctx.subscribe<{ taskId: string; code: string; message: string; durationMs?: number }>(EVENTS.taskFailed, (m) => {
      const trace = timelines.failed(m)
      if (trace !== undefined) sender.add(trace)
    })

    ctx.every(Math.max(100, Math.min(settings.retryMs, 1000)), () => sender.kick())
    ctx.route('GET', '/api/v1/traces/pending', () => ({ body: { ...sender.status(), open: timelines.size } }))
    ctx.onClose(() => sender.close())
  }
}
