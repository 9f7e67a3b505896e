// The QoS plugin's implementation of the daemon's hooks: priority slots and weighted
// bandwidth for the whole daemon, then per-tenant request, concurrency and byte limits.

import type { Admission, QosLimiter, Traffic } from '@naiad/peer'
import { NaiadError, PRIORITIES, type Priority } from '@naiad/proto'

import type { Clock } from './clock.ts'
import { PrioritySlots } from './priority-slots.ts'
import type { QosSettings } from './settings.ts'
import { Tenants } from './tenants.ts'
import { WeightedShaper } from './weighted-shaper.ts'

export class QosPolicy implements QosLimiter {
  readonly settings: QosSettings
  readonly download: WeightedShaper
  readonly upload: WeightedShaper
  readonly slots: PrioritySlots
  readonly tenants: Tenants

  constructor(settings: QosSettings, clock: Clock) {
    this.settings = settings
    this.download = new WeightedShaper({ rate: settings.downloadRate, weights: settings.weights }, clock)
    this.upload = new WeightedShaper({ rate: settings.uploadRate, weights: settings.weights }, clock)
    this.slots = new PrioritySlots(settings.slots, PRIORITIES)
    this.tenants = new Tenants(settings.tenants, clock)
  }

  admit(request: { tenantKey: string; priority: Priority }): Admission {
    const tenant = this.tenants.of(request.tenantKey)
    if (tenant === undefined) return { admitted: true, release: () => {} }
    const { concurrency } = tenant.settings
    if (concurrency > 0 && tenant.active >= concurrency) {
      tenant.rejected++
      return { admitted: false, retryAfterSec: 1, reason: `tenant ${tenant.settings.match} has ${tenant.active} requests in progress, its limit is ${concurrency}` }
    }
    if (tenant.requests !== undefined && !tenant.requests.tryTake(1)) {
      tenant.rejected++
      return { admitted: false, retryAfterSec: Math.max(1, Math.ceil(tenant.requests.waitMs(1) / 1000)), reason: `tenant ${tenant.settings.match} is over its limit of ${tenant.settings.rate} requests a second` }
    }
    tenant.active++
    tenant.admitted++
    let released = false
    return {
      admitted: true,
      release: () => {
        if (released) return
        released = true
        tenant.active--
      }
    }
  }

  slot(traffic: Traffic, signal: AbortSignal): Promise<() => void> {
    return this.slots.acquire(traffic.priority, signal)
  }

  async acquire(bytes: number, traffic: Traffic, signal: AbortSignal): Promise<void> {
    const tenant = this.tenants.of(traffic.tenantKey)
    if (traffic.direction === 'download') {
      if (tenant?.download !== undefined) await tenant.download.acquire(bytes, 'all', signal)
      await this.download.acquire(bytes, traffic.priority, signal)
    } else {
      if (tenant?.upload !== undefined) await tenant.upload.acquire(bytes, 'all', signal)
      await this.upload.acquire(bytes, traffic.priority, signal)
    }
  }

  /** What GET /api/v1/qos shows. */
  snapshot(): Record<string, unknown> {
    const perClass = (s: WeightedShaper): Record<string, { bytes: number; waitingBytes: number }> =>
      Object.fromEntries(PRIORITIES.map((p) => [p, { bytes: s.served.get(p) ?? 0, waitingBytes: s.waiting(p) }]))
    return {
      download: { rate: this.settings.downloadRate, weights: this.settings.weights, classes: perClass(this.download) },
      upload: { rate: this.settings.uploadRate, classes: perClass(this.upload) },
      slots: { max: this.slots.max, inUse: this.slots.inUse, waiting: Object.fromEntries(PRIORITIES.map((p) => [p, this.slots.waiting(p)])) },
      tenants: this.tenants.all.map((t) => ({
        match: t.settings.match,
        active: t.active,
        admitted: t.admitted,
        rejected: t.rejected,
        downloadedBytes: t.download?.served.get('all') ?? null,
        uploadedBytes: t.upload?.served.get('all') ?? null
      }))
    }
  }

  close(): void {
    const err = new NaiadError('PROTO_ERR_ABORTED', 'the QoS plugin is shutting down')
    this.download.close(err)
    this.upload.close(err)
    this.slots.close(err)
  }
}
