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

import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'
import {
  call, EVENTS, HEALTH_PROTOCOL, HealthReply, HealthReport, NaiadError, parseDuration, raiseRemote,
  type HealthFacts, type NaiadPlugin
} from '@naiad/proto'
import type { PieceStore, SchedulerClient } from '@naiad/peer'

import type { DaemonInfo } from '../../daemon.ts'
import { clockOffset, measure, SlidingWindow } from './facts.ts'
import { healCache, type HealResult } from './heal.ts'

export interface DaemonHealthSettings {
  intervalMs: number
  windowMs: number
  timeoutMs: number
  fuseDevice: string
}

/** The control service's daemon side, when the control plugin is loaded. */
interface ControlHandlers {
  handle(command: string, fn: (args: unknown, signal: AbortSignal) => Promise<unknown>): void
}

const DEFAULTS: DaemonHealthSettings = { intervalMs: 10_000, windowMs: 60_000, timeoutMs: 5_000, fuseDevice: '/dev/fuse' }

export function readDaemonSettings(raw: Record<string, unknown>): DaemonHealthSettings {
  const duration = (key: string, fallback: number): number => {
    const v = raw[key]
    if (v === undefined) return fallback
    if (typeof v !== 'string') throw new NaiadError('PROTO_ERR_BAD_CONFIG', `plugin-config.health.${key}: expected a duration such as 10s`)
    try {
      const ms = parseDuration(v, `plugin-config.health.${key}`)
      if (ms <= 0) throw new Error('must be above zero')
      return ms
    } catch (err) {
      throw new NaiadError('PROTO_ERR_BAD_CONFIG', `plugin-config.health.${key}: ${(err as Error).message}`, { cause: err })
    }
  }
  const device = raw.fuseDevice ?? DEFAULTS.fuseDevice
  if (typeof device !== 'string') throw new NaiadError('PROTO_ERR_BAD_CONFIG', 'plugin-config.health.fuseDevice: expected a path')
  return {
    intervalMs: duration('interval', DEFAULTS.intervalMs),
    windowMs: duration('window', DEFAULTS.windowMs),
    timeoutMs: duration('timeout', DEFAULTS.timeoutMs),
    fuseDevice: device
  }
}

export const daemonHealthPlugin: NaiadPlugin = {
  name: 'health',
  version: '1.0.0',
  setup(ctx) {
    if (ctx.host !== 'dfdaemon') throw new NaiadError('PROTO_ERR_PLUGIN', 'this is the daemon half of the health plugin')
    const settings = readDaemonSettings(ctx.settings)
    const ext = ctx.extensions as {
      daemon?: DaemonInfo
      store?: PieceStore
      scheduler?: SchedulerClient
      announce?: () => Promise<void>
      control?: ControlHandlers
    }
    const dataDir = ext.daemon?.dataDir
    if (dataDir === undefined || ext.store === undefined || ext.scheduler === undefined || ext.announce === undefined) {
      throw new NaiadError('PROTO_ERR_PLUGIN', 'the health plugin needs the daemon\'s data dir, piece store and scheduler client')
    }
    const supernodeUrl = ext.daemon?.supernodeUrl || undefined
    const pieces = new SlidingWindow(settings.windowMs)
    const uploads = new SlidingWindow(settings.windowMs)
    ctx.subscribe<{ costMs: number }>(EVENTS.pieceStored, (m) => pieces.add(true, m.costMs))
    ctx.subscribe(EVENTS.pieceFailed, () => pieces.add(false))
    ctx.subscribe(EVENTS.pieceUploaded, () => uploads.add(true))
    ctx.subscribe(EVENTS.pieceUploadFailed, () => uploads.add(false))

    const clock = { offsetMs: 0, rttMs: 0 }
    let last: { facts: HealthFacts; at: number; state: string; error: string | undefined } | undefined
    let addrs: Multiaddr[] | undefined
    let lastHeal: HealResult | undefined

    const resolve = async (signal: AbortSignal): Promise<Multiaddr[]> => {
      if (addrs !== undefined) return addrs
      if (supernodeUrl === undefined) throw new NaiadError('PROTO_ERR_BAD_CONFIG', 'the health plugin has no supernode to report to')
      const res = await fetch(`${supernodeUrl}/api/v1/info`, { signal })
      if (!res.ok) throw new NaiadError('PROTO_ERR_DIAL', `supernode info: HTTP ${res.status}`)
      const info = await res.json() as { peerId: string; multiaddrs: string[] }
      addrs = info.multiaddrs.map((a) => multiaddr(a.includes('/p2p/') ? a : `${a}/p2p/${info.peerId}`))
      return addrs
    }

    const report = async (): Promise<void> => {
      const facts = await measure({ dataDir, fuseDevice: settings.fuseDevice, windowMs: settings.windowMs, pieces, uploads, clock })
      const signal = AbortSignal.timeout(settings.timeoutMs)
      try {
        const target = await resolve(signal)
        const t0 = Date.now()
        const reply = await call(ctx.fabric, target, HEALTH_PROTOCOL, HealthReport, HealthReply, { facts, sentAtMs: t0 }, { signal, timeoutMs: settings.timeoutMs })
        const t3 = Date.now()
        raiseRemote(reply.error)
        // The offset goes out with the next report: this one's facts were measured before it.
        if (reply.receivedAtMs > 0) Object.assign(clock, clockOffset(t0, reply.receivedAtMs, reply.repliedAtMs, t3))
        last = { facts, at: Date.now(), state: reply.state, error: undefined }
      } catch (err) {
        addrs = undefined
        last = { facts, at: Date.now(), state: last?.state ?? 'unknown', error: (err as Error).message }
        throw err
      }
    }

    ctx.every(settings.intervalMs, report)
    // The first report goes out soon after start rather than one interval later.
    const first = setTimeout(() => { report().catch((err: unknown) => ctx.logger.debug({ err: (err as Error).message }, 'first health report failed')) }, Math.min(1000, settings.intervalMs))
    first.unref()
    ctx.onClose(() => clearTimeout(first))

    const heal = async (_args: unknown, signal: AbortSignal): Promise<HealResult> => {
      ctx.logger.warn('heal requested by the supernode: re-verifying the cache')
      lastHeal = await healCache({ store: ext.store!, scheduler: ext.scheduler!, announce: ext.announce!, logger: ctx.logger }, signal)
      pieces.clear()
      uploads.clear()
      ctx.logger.info({ ...lastHeal, dropped: lastHeal.dropped.length }, 'heal finished')
      return lastHeal
    }
    if (ext.control !== undefined) ext.control.handle('heal', heal)
    else ctx.logger.info('no control service: the heal remedy is unavailable on this daemon')

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
}
