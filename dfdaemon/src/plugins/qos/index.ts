// The `qos` plugin: priority classes with weighted bandwidth shares and slot preemption,
// and per-tenant limits, installed into the daemon's QoS seam (`ctx.installQos`).
// Settings: `plugin-config.qos` (see settings.ts and docs/qos.md).

import { daemonPlugin } from '../../plugin-api/context.ts'
import { realClock } from './clock.ts'
import { QosPolicy } from './policy.ts'
import { QOS_SETTINGS, qosSettings } from './settings.ts'

export const qosPlugin = daemonPlugin({
  name: 'qos',
  version: '1.0.0',
  settings: QOS_SETTINGS,
  setup(ctx) {
    const policy = new QosPolicy(qosSettings(ctx.settings), realClock)
    ctx.installQos(policy)
    ctx.route('GET', '/api/v1/qos', () => ({ body: policy.snapshot() }))
    ctx.onClose(() => policy.close())
    ctx.logger.info({ downloadRate: policy.settings.downloadRate, weights: policy.settings.weights, slots: policy.settings.slots, tenants: policy.settings.tenants.length }, 'qos limits installed')
  }
})
