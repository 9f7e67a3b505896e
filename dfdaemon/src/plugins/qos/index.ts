// The `qos` plugin: priority classes with weighted bandwidth shares and slot preemption,
// and per-tenant limits, installed into the daemon's QoS hooks (`ctx.extensions.qos`).
// Settings: `plugin-config.qos` (see settings.ts and docs/qos.md).

import { NaiadError, type NaiadPlugin } from '@naiad/proto'

import type { QosHooks } from '@naiad/peer'
import { realClock } from './clock.ts'
import { QosPolicy } from './policy.ts'
import { parseQosSettings } from './settings.ts'

export const qosPlugin: NaiadPlugin = {
  name: 'qos',
  version: '1.0.0',
  setup(ctx) {
    if (ctx.host !== 'dfdaemon') throw new NaiadError('PROTO_ERR_PLUGIN', 'the qos plugin runs in dfdaemon only')
    const hooks = ctx.extensions.qos as QosHooks | undefined
    if (hooks === undefined) throw new NaiadError('PROTO_ERR_PLUGIN', 'this daemon offers no QoS hooks')
    const policy = new QosPolicy(parseQosSettings(ctx.settings), realClock)
    const uninstall = hooks.install(policy)
    ctx.route('GET', '/api/v1/qos', () => ({ body: policy.snapshot() }))
    ctx.onClose(() => {
      uninstall()
      policy.close()
    })
    ctx.logger.info({ downloadRate: policy.settings.downloadRate, weights: policy.settings.weights, slots: policy.settings.slots, tenants: policy.settings.tenants.length }, 'qos limits installed')
  }
}
