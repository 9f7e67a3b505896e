// The health plugin, daemon half: measures this node (free disk, piece failure and upload
// error rates, mean piece cost, clock offset, FUSE) and pushes the facts to the supernode
// every `interval` on /naiad/health/1.0.0, where the supernode half judges them. It also
// carries out the `heal` remedy the supernode sends over the control service.
//
// @example
// # dfdaemon.yaml
// plugins: [metrics, health]
// plugin-config:
//   health: { interval: 10s, window: 5m }
//
// curl localhost:65003/api/v1/health     # the facts last measured and the supernode's verdict
//
// See docs/health.md.

import { defineOptions, EVENTS, HEALTH_PROTOCOL, HealthReply, HealthReport, type HealthFacts, type OptionValues } from '@naiad/proto'

import { daemonPlugin } from '../../plugin-api/context.ts'
import { clockOffset, measure, SlidingWindow } from './facts.ts'
import { healCache, type HealResult } from './heal.ts'

export const DAEMON_HEALTH_SETTINGS = defineOptions([
  { key: 'interval', type: 'duration', min: 1, default: '10s', help: 'how often the facts are measured and sent' },
  { key: 'window', type: 'duration', min: 1, default: '60s', help: 'the sliding window of piece and upload outcomes' },
  { key: 'timeout', type: 'duration', min: 1, default: '5s', help: 'how long one report may take' },
  { key: 'fuseDevice', type: 'string', default: '/dev/fuse', help: 'the FUSE device checked' }
])

export type DaemonHealthSettings = OptionValues<typeof DAEMON_HEALTH_SETTINGS>

export const daemonHealthPlugin = daemonPlugin({
  name: 'health',
  version: '1.0.0',
  settings: DAEMON_HEALTH_SETTINGS,
  setup(ctx) {
    const settings = ctx.settings
    const dataDir = ctx.daemon.dataDir
    const pieces = new SlidingWindow(settings.window)
    const uploads = new SlidingWindow(settings.window)
    ctx.subscribe(EVENTS.pieceStored, (m) => pieces.add(true, m.costMs))
    ctx.subscribe(EVENTS.pieceFailed, () => pieces.add(false))
    ctx.subscribe(EVENTS.pieceUploaded, () => uploads.add(true))
    ctx.subscribe(EVENTS.pieceUploadFailed, () => uploads.add(false))

    const clock = { offsetMs: 0, rttMs: 0 }
    let last: { facts: HealthFacts; at: number; state: string; error: string | undefined } | undefined
    let lastHeal: HealResult | undefined

    const report = async (): Promise<void> => {
      const facts: HealthFacts = await measure({ dataDir, fuseDevice: settings.fuseDevice, windowMs: settings.window, pieces, uploads, clock })
      try {
        const t0 = Date.now()
        const reply = await ctx.supernode.call(HEALTH_PROTOCOL, HealthReport, HealthReply, { facts, sentAtMs: t0 }, { timeoutMs: settings.timeout })
        const t3 = Date.now()
        // The offset goes out with the next report: this one's facts were measured before it.
        if (reply.receivedAtMs > 0) Object.assign(clock, clockOffset(t0, reply.receivedAtMs, reply.repliedAtMs, t3))
        last = { facts, at: Date.now(), state: reply.state, error: undefined }
      } catch (err) {
        last = { facts, at: Date.now(), state: last?.state ?? 'unknown', error: (err as Error).message }
        throw err
      }
    }

    ctx.every(settings.interval, report)
    // The first report goes out soon after start rather than one interval later.
    const first = setTimeout(() => { report().catch((err: unknown) => ctx.logger.debug({ err: (err as Error).message }, 'first health report failed')) }, Math.min(1000, settings.interval))
    first.unref()
    ctx.onClose(() => clearTimeout(first))

    ctx.handle('heal', async (_args, signal): Promise<HealResult> => {
      ctx.logger.warn('heal requested by the supernode: re-verifying the cache')
      lastHeal = await healCache({ store: ctx.store, scheduler: ctx.scheduler, announce: () => ctx.announce(), logger: ctx.logger }, signal)
      pieces.clear()
      uploads.clear()
      ctx.logger.info({ ...lastHeal, dropped: lastHeal.dropped.length }, 'heal finished')
      return lastHeal
    })

    ctx.route('GET', '/api/v1/health', () => ({
      body: {
        facts: last?.facts ?? null,
        measuredAt: last === undefined ? null : new Date(last.at).toISOString(),
        state: last?.state ?? 'unknown',
        reportError: last?.error ?? null,
        lastHeal: lastHeal ?? null
      }
    }))
  }
})
