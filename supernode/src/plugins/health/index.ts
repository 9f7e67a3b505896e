// The health plugin, supernode half: receives the facts daemons measure about themselves on
// /naiad/health/1.0.0, judges them with the rules from `plugin-config.health.rules`, and
// takes remedies through the scheduler's extension points (degrade: a score penalty;
// isolate: never a parent) and the control service (heal), within the risk limits.
//
// @example
// # supernode.yaml
// plugins: [metrics, health]
// plugin-config:
//   health:
//     rules:
//       - { name: failing-pieces, when: "pieceFailureRate > 0.3 and samples >= 10", action: degrade }
//     remedies: { max: 5, window: 10m }
//     breaker: { maxUnhealthyPercent: 30 }
//
// curl localhost:8002/api/v1/health/hosts    # facts and state per host
// curl localhost:8002/api/v1/health/events   # every decision and why
//
// See docs/health.md.

import { HEALTH_PROTOCOL, HealthReply, HealthReport, NaiadError } from '@naiad/proto'

import { supernodePlugin } from '../../plugin-api/context.ts'
import { HealthEngine } from './engine.ts'
import { HealthEventStore } from './event-store.ts'
import { HEALTH_SETTINGS, healthSettings } from './settings.ts'

const EVENT_RETENTION_MS = 7 * 24 * 3600 * 1000

export const healthPlugin = supernodePlugin({
  name: 'health',
  version: '1.0.0',
  settings: HEALTH_SETTINGS,
  async setup(ctx) {
    const settings = healthSettings(ctx.settings)
    const { scheduler, control } = ctx
    const events = new HealthEventStore(ctx.database, ctx.fabric.peerId.toString())

    const engine = new HealthEngine({
      settings,
      events,
      logger: ctx.logger,
      isGone: (id) => scheduler.hosts.get(id)?.gone === true,
      schedulerFacts: (id): Record<string, number> => {
        const h = scheduler.hosts.get(id)
        return h === undefined ? {} : { servedBadPieces: h.badPieces, servedFailedPieces: h.failedPieces, servedGoodPieces: h.goodPieces }
      },
      heal: (hostId) => control.send(hostId, 'heal', {}, { timeoutMs: settings.healTimeoutMs }),
      self: ctx.fabric.peerId.toString()
    })
    await engine.restore()
    ctx.onClose(() => engine.leave())

    // Isolated hosts are never offered as parents; degraded ones lose score against the rest.
    scheduler.addFilter((c) => engine.levelOf(c.host.info.id) !== 'isolated')
    scheduler.addScorer((c) => engine.levelOf(c.host.info.id) === 'degraded' ? -settings.penalty : 0)

    await ctx.serve(HEALTH_PROTOCOL, HealthReport, HealthReply, async (req, { remotePeer }) => {
      const receivedAtMs = Date.now()
      if (req.facts === undefined) throw new NaiadError('SN_ERR_BAD_REQUEST', 'a health report without facts')
      // The host is whoever the Noise handshake proved the caller to be: no one reports for
      // another. Only hosts the scheduler knows count, so strangers cannot sway the breaker.
      const id = remotePeer.toString()
      const known = scheduler.hosts.get(id)
      if (known === undefined || known.gone || known.info.isSeed) throw new NaiadError('SN_ERR_HOST_NOT_FOUND', `health report from ${id}, which has not announced itself to the scheduler`)
      const host = engine.report(id, req.facts)
      return { receivedAtMs, repliedAtMs: Date.now(), state: host.level }
    }, { maxRequestBytes: 64 * 1024 })

    ctx.every(settings.evaluateIntervalMs, () => engine.evaluate())
    ctx.every(3600_000, () => events.prune(Date.now() - EVENT_RETENTION_MS))

    ctx.route('GET', '/api/v1/health/hosts', () => {
      const now = Date.now()
      const hosts = [...engine.hosts.values()].map((h) => {
        const info = scheduler.hosts.get(h.id)
        return {
          id: h.id,
          hostname: info?.info.hostname ?? '',
          state: h.level,
          step: h.step,
          stale: engine.isStale(h, now),
          gone: info?.gone === true,
          reportedAt: new Date(h.reportedAt).toISOString(),
          lastRemedyAt: h.stepAt === 0 ? null : new Date(h.stepAt).toISOString(),
          firing: [...h.firing].map(([rule, since]) => ({ rule, since: new Date(since).toISOString() })),
          facts: engine.factsOf(h)
        }
      })
      return { body: { breaker: engine.breakerState, hosts } }
    })

    ctx.route('GET', '/api/v1/health/events', async (req) => {
      const int = (v: string | undefined, key: string): number | undefined => {
        if (v === undefined) return undefined
        const n = Number(v)
        if (!Number.isSafeInteger(n) || n < 0) throw new NaiadError('SN_ERR_BAD_REQUEST', `bad ${key} "${v}": expected a whole number`)
        return n
      }
      return { body: await events.list({ host: req.query.host, afterId: int(req.query.after, 'after'), limit: int(req.query.limit, 'limit') }) }
    })
  }
})
