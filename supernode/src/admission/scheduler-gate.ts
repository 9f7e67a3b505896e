// What the scheduler service checks before it believes a daemon (the embedded seed is
// trusted and skips it): a task's ID is recomputed from its URL, range, digest and filter,
// so nobody squats another URL's task; headers are capped; new tasks per node are rate
// limited; the origin must be an allowed destination and, for private content, open to the
// node's own credentials; announced addresses must be the connection's own address (or in
// a configured network); and grants go only to nodes that may have the task.

import { BlockList, isIP } from 'node:net'

import { NaiadError, taskIdOf, type Host, type RegisterTaskRequest } from '@naiad/proto'
import type { DestinationPolicy } from '@naiad/peer'

import type { Admission } from './admission.ts'
import type { TaskAccess } from './task-access.ts'

export interface SchedulerGateOptions {
  /** Announced addresses inside these CIDRs are accepted even when they are not the connection's. */
  announceNetworks: string[]
  /** New tasks one node may register per second, and in a burst. */
  registerRate: number
  registerBurst: number
}

export const GATE_LIMITS = {
  /** Names and values of a registration's headers together. */
  maxHeaderBytes: 16 * 1024,
  maxHeaders: 64,
  maxUrlChars: 8 * 1024,
  maxFilter: 32,
  maxLabels: 64,
  maxLabelChars: 320,
  maxMultiaddrs: 16,
  maxHostnameChars: 255
} as const

export const GATE_DEFAULTS: SchedulerGateOptions = { announceNetworks: [], registerRate: 20, registerBurst: 200 }

interface Bucket { tokens: number; at: number }

/** The IP of a multiaddr's first component, when it is /ip4 or /ip6. */
export function multiaddrIp(addr: string): string | undefined {
  const m = /^\/ip[46]\/([^/]+)\//.exec(`${addr}/`)
  return m === null || isIP(m[1]) === 0 ? undefined : m[1]
}

export class SchedulerGate {
  private readonly admission: Admission
  private readonly access: TaskAccess
  private readonly policy: DestinationPolicy
  private readonly knows: (taskId: string) => boolean
  private readonly networks = new BlockList()
  private readonly buckets = new Map<string, Bucket>()
  private readonly options: SchedulerGateOptions

  constructor(components: { admission: Admission; access: TaskAccess; policy: DestinationPolicy; knows: (taskId: string) => boolean }, options: SchedulerGateOptions = GATE_DEFAULTS) {
    this.admission = components.admission
    this.access = components.access
    this.policy = components.policy
    this.knows = components.knows
    this.options = options
    for (const cidr of options.announceNetworks) {
      const m = /^([0-9a-fA-F.:]+)\/(\d{1,3})$/.exec(cidr)
      const family = m === null ? 0 : isIP(m[1])
      if (m === null || family === 0) throw new NaiadError('PROTO_ERR_BAD_CONFIG', `scheduler.announce-networks: bad CIDR "${cidr}"`)
      this.networks.addSubnet(m[1], Number(m[2]), family === 4 ? 'ipv4' : 'ipv6')
    }
  }

  /** Throws unless `hostId` may register `req`. */
  async register(hostId: string, req: RegisterTaskRequest, signal?: AbortSignal): Promise<void> {
    if (req.url.length > GATE_LIMITS.maxUrlChars) throw bad(`a URL of ${req.url.length} characters (at most ${GATE_LIMITS.maxUrlChars})`)
    if (req.filter.length > GATE_LIMITS.maxFilter) throw bad(`${req.filter.length} filtered query parameters (at most ${GATE_LIMITS.maxFilter})`)
    if (req.headers.length > GATE_LIMITS.maxHeaders) throw bad(`${req.headers.length} headers (at most ${GATE_LIMITS.maxHeaders})`)
    let bytes = 0
    for (const h of req.headers) bytes += h.name.length + h.value.length
    if (bytes > GATE_LIMITS.maxHeaderBytes) throw bad(`${bytes} bytes of headers (at most ${GATE_LIMITS.maxHeaderBytes})`)
    let id: string
    try {
      id = taskIdOf({ url: req.url, filter: req.filter, range: req.range === '' ? undefined : req.range, digest: req.digest === '' ? undefined : req.digest })
    } catch (err) {
      throw new NaiadError('SN_ERR_BAD_REQUEST', `registerTask: ${(err as Error).message}`, { cause: err })
    }
    if (id !== req.taskId) {
      throw new NaiadError('SN_ERR_TASK_ID_MISMATCH', `task ID ${req.taskId.slice(0, 80)} is not the ID of its URL, range, digest and filter (${id})`)
    }
    this.policy.checkUrl(req.url)
    if (!this.knows(id)) this.take(hostId)
    const headers: Record<string, string> = {}
    for (const h of req.headers) headers[h.name.toLowerCase()] = h.value
    await this.access.check(hostId, { id, url: req.url, headers }, signal)
  }

  /** A host as the scheduler should believe it: addresses the connection confirms, capped labels. */
  announce(host: Host, remote: string | undefined): Host {
    if (host.labels.length > GATE_LIMITS.maxLabels || host.labels.some((l) => l.length > GATE_LIMITS.maxLabelChars)) {
      throw bad(`at most ${GATE_LIMITS.maxLabels} labels of ${GATE_LIMITS.maxLabelChars} characters`)
    }
    if (host.multiaddrs.length > GATE_LIMITS.maxMultiaddrs) throw bad(`${host.multiaddrs.length} addresses (at most ${GATE_LIMITS.maxMultiaddrs})`)
    if (host.dataTransport !== '' && host.dataTransport !== 'tls' && host.dataTransport !== 'tcp') throw bad(`unknown data transport "${host.dataTransport.slice(0, 20)}"`)
    if (host.dataPort > 65535) throw bad(`data port ${host.dataPort}`)
    const multiaddrs = remote === undefined ? host.multiaddrs : host.multiaddrs.filter((a) => {
      const ip = multiaddrIp(a)
      return ip !== undefined && (ip === remote || this.networks.check(ip, isIP(ip) === 4 ? 'ipv4' : 'ipv6'))
    })
    return { ...host, hostname: host.hostname.slice(0, GATE_LIMITS.maxHostnameChars), multiaddrs, ip: remote ?? host.ip }
  }

  /**
   * Throws unless `hostId` may take part in `taskId` (ask for parents, report pieces): the
   * task ID alone is worth nothing, only a registration the gate accepted.
   */
  member(hostId: string, taskId: string): void {
    if (!this.access.allowed(hostId, taskId)) {
      throw new NaiadError('SN_ERR_FORBIDDEN', `node ${hostId} has no registration for task ${taskId.slice(0, 64)} that the supernode accepted (register it, with the credentials its origin wants)`)
    }
  }

  /** A grant for `hostId` to fetch `taskId`, or none when it may not (a private task it did not prove). */
  grant(hostId: string, taskId: string): Uint8Array {
    return this.access.allowed(hostId, taskId) ? this.admission.grant(hostId, taskId) : new Uint8Array(0)
  }

  /** Drops what is kept about a node (revoked). */
  forget(hostId: string): void {
    this.buckets.delete(hostId)
    this.access.forget(hostId)
  }

  private take(hostId: string): void {
    const now = Date.now()
    const b = this.buckets.get(hostId) ?? { tokens: this.options.registerBurst, at: now }
    b.tokens = Math.min(this.options.registerBurst, b.tokens + ((now - b.at) / 1000) * this.options.registerRate)
    b.at = now
    this.buckets.set(hostId, b)
    if (b.tokens < 1) throw new NaiadError('SN_ERR_RATE_LIMITED', `node ${hostId} registers new tasks faster than ${this.options.registerRate}/s`)
    b.tokens -= 1
  }
}

function bad(why: string): NaiadError {
  return new NaiadError('SN_ERR_BAD_REQUEST', why)
}
