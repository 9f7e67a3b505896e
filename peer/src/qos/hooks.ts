// The points where the daemon asks for permission to move bytes or take a request. The
// core only calls these; what they enforce (priority classes, bandwidth shares, tenant
// limits) is up to whatever a plugin installs through the daemon's plugin context (`ctx.qos`). Without one,
// every call is a no-op and costs nothing on the hot paths (callers check `active`).

import type { Priority } from '@naiad/proto'

export interface Traffic {
  priority: Priority
  /** What the bytes belong to: the task's URL. The implementation maps it onto a tenant. */
  tenantKey: string
  direction: 'download' | 'upload'
}

export type Admission =
  | { admitted: true; release: () => void }
  | { admitted: false; retryAfterSec: number; reason: string }

export interface QosLimiter {
  /** One incoming request (mirror, local API): admitted (call `release` when it ends) or refused. */
  admit(request: { tenantKey: string; priority: Priority }): Admission
  /** Waits for a slot for one piece transfer from a peer; resolves to its release. */
  slot(traffic: Traffic, signal: AbortSignal): Promise<() => void>
  /** Waits until `bytes` may move. */
  acquire(bytes: number, traffic: Traffic, signal: AbortSignal): Promise<void>
}

const nothing = (): void => {}

export const NO_QOS: QosLimiter = {
  admit: () => ({ admitted: true, release: nothing }),
  slot: async () => nothing,
  acquire: async () => {}
}

/**
 * The daemon's one QoS entry point, handed to the download, upload and request paths at
 * construction and to plugins as `ctx.qos`, where a plugin calls `install`.
 */
export class QosHooks implements QosLimiter {
  private impl: QosLimiter = NO_QOS

  /** Whether an implementation is installed; callers skip the calls when not. */
  get active(): boolean {
    return this.impl !== NO_QOS
  }

  /** Installs an implementation; the returned function puts the no-op back. */
  install(impl: QosLimiter): () => void {
    this.impl = impl
    return () => { if (this.impl === impl) this.impl = NO_QOS }
  }

  admit(request: { tenantKey: string; priority: Priority }): Admission {
    return this.impl.admit(request)
  }

  slot(traffic: Traffic, signal: AbortSignal): Promise<() => void> {
    return this.impl.slot(traffic, signal)
  }

  acquire(bytes: number, traffic: Traffic, signal: AbortSignal): Promise<void> {
    return this.impl.acquire(bytes, traffic, signal)
  }
}
