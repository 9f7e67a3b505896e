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

import { defineOptions, EVENTS } from '@naiad/proto'

import { daemonPlugin } from '../../plugin-api/context.ts'
import { Timelines } from './timelines.ts'
import { TraceSender } from './trace-sender.ts'

export const SLO_DAEMON_SETTINGS = defineOptions([
  { key: 'maxBuffered', type: 'int', min: 1, max: 1_000_000, default: 1000, help: 'traces kept while the supernode is unreachable; the oldest go first' },
  { key: 'batchSize', type: 'int', min: 1, max: 1000, default: 100, help: 'traces sent in one message' },
  { key: 'retryInterval', type: 'duration', min: 1, default: '2s', help: 'after a failed delivery, wait this long before the next' },
  { key: 'timeout', type: 'duration', min: 1, default: '5s', help: 'how long one delivery may take' }
])

export const sloDaemonPlugin = daemonPlugin({
  name: 'slo',
  version: '1.0.0',
  settings: SLO_DAEMON_SETTINGS,
  setup(ctx) {
    const settings = ctx.settings
    const timelines = new Timelines()
    const sender = new TraceSender(ctx.supernode, ctx.logger, {
      maxBuffered: settings.maxBuffered,
      batchSize: settings.batchSize,
      retryMs: settings.retryInterval,
      timeoutMs: settings.timeout
    })

    ctx.subscribe(EVENTS.taskStarted, (m) => timelines.started(m))
    ctx.subscribe(EVENTS.taskRegistered, (m) => timelines.registered(m))
    ctx.subscribe(EVENTS.pieceStored, (m) => timelines.pieceStored(m))
    ctx.subscribe(EVENTS.pieceFailed, (m) => timelines.pieceFailed(m))
    ctx.subscribe(EVENTS.backToSource, (m) => timelines.backToSource(m))
    ctx.subscribe(EVENTS.taskSucceeded, (m) => {
      const trace = timelines.succeeded(m)
      if (trace !== undefined) sender.add(trace)
    })
    ctx.subscribe(EVENTS.taskFailed, (m) => {
      const trace = timelines.failed(m)
      if (trace !== undefined) sender.add(trace)
    })

    ctx.every(Math.max(100, Math.min(settings.retryInterval, 1000)), () => sender.kick())
    ctx.route('GET', '/api/v1/traces/pending', () => ({ body: { ...sender.status(), open: timelines.size } }))
    ctx.onClose(() => sender.close())
  }
})
