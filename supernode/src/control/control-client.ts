// The supernode's side of the control service: sends a command to one daemon over the
// fabric (`/naiad/control/1.0.0`), typed by proto's ControlCommands, and lists the daemons
// commands can go to. Plugins reach it as their context's `control`.

import {
  call, ControlRequest, ControlResponse, dialableAddrs, isErrorCode, NaiadError, PROTOCOLS,
  type ControlArgs, type ControlCommandName, type ControlResult, type FabricNode, type Host
} from '@naiad/proto'

import type { HostState } from '../scheduler/scheduler.ts'

export interface ControlSendOptions {
  signal?: AbortSignal
  /** How long the daemon may run the command; the default is the client's `defaultTimeoutMs`. */
  timeoutMs?: number
}

/** A daemon that can take commands. */
export interface ControlHost {
  id: string
  hostname: string
  labels: Record<string, string>
  idc: string
  location: string
  multiaddrs: string[]
  lastSeen: number
}

export interface ControlClientComponents {
  node: FabricNode
  /** The scheduler's hosts: who announced itself, with which addresses and labels. */
  hosts: ReadonlyMap<string, HostState>
}

export interface ControlClientOptions {
  /** Hosts silent for longer are not listed (the scheduler's host TTL). */
  hostTtlMs: number
  defaultTimeoutMs: number
}

/** Extra time the client waits beyond the daemon's timeout, so the daemon's own timeout answer arrives first. */
const GRACE_MS = 3_000

/** `["zone=a", "gpu=true"]` → `{zone: "a", gpu: "true"}`. */
export function labelsOf(host: Pick<Host, 'labels'>): Record<string, string> {
  const out: Record<string, string> = {}
  for (const l of host.labels ?? []) {
    const i = l.indexOf('=')
    if (i > 0) out[l.slice(0, i)] = l.slice(i + 1)
  }
  return out
}

export class ControlClient {
  private readonly c: ControlClientComponents
  private readonly options: ControlClientOptions

  constructor(components: ControlClientComponents, options: ControlClientOptions) {
    this.c = components
    this.options = options
  }

  /** Live daemons (not seeds, not gone, announced within the host TTL) that carry all of `labels`. */
  hosts(labels: Record<string, string> = {}): ControlHost[] {
    const now = Date.now()
    const want = Object.entries(labels)
    const out: ControlHost[] = []
    for (const h of this.c.hosts.values()) {
      if (h.gone || h.info.isSeed || now - h.lastSeen > this.options.hostTtlMs) continue
      const have = labelsOf(h.info)
      if (!want.every(([k, v]) => have[k] === v)) continue
      out.push({ id: h.info.id, hostname: h.info.hostname, labels: have, idc: h.info.idc, location: h.info.location, multiaddrs: [...h.info.multiaddrs], lastSeen: h.lastSeen })
    }
    return out.sort((a, b) => a.id.localeCompare(b.id))
  }

  /**
   * Runs `command` on the daemon `hostId` and returns its result. Throws NaiadError with the
   * daemon's code when the command fails there, SN_ERR_HOST_NOT_FOUND for an unknown, gone
   * or seed host, and PROTO_ERR_DIAL / PROTO_ERR_TIMEOUT / PROTO_ERR_ABORTED for the fabric.
   */
  async send<K extends ControlCommandName>(hostId: string, command: K, args: ControlArgs<K>, options: ControlSendOptions = {}): Promise<ControlResult<K>> {
    const host = this.c.hosts.get(hostId)
    if (host === undefined || host.gone || host.info.isSeed) {
      throw new NaiadError('SN_ERR_HOST_NOT_FOUND', `no daemon ${hostId} to send "${command}" to${host?.gone === true ? ' (it left)' : host?.info.isSeed === true ? ' (it is a seed)' : ''}`)
    }
    const addrs = dialableAddrs(host.info.multiaddrs, hostId)
    if (addrs.length === 0) throw new NaiadError('PROTO_ERR_DIAL', `daemon ${hostId} announced no address to dial`)
    const timeoutMs = Math.max(1, Math.round(options.timeoutMs ?? this.options.defaultTimeoutMs))
    const res = await call(this.c.node, addrs, PROTOCOLS.control, ControlRequest, ControlResponse, {
      command, argsJson: args === undefined ? '' : JSON.stringify(args), timeoutMs
    }, { signal: options.signal, timeoutMs: timeoutMs + GRACE_MS })
    if (!res.ok) {
      throw new NaiadError(isErrorCode(res.code) ? res.code : 'PROTO_ERR_REMOTE', `${command} on ${host.info.hostname || hostId}: ${res.message}`)
    }
    try {
      // The daemon's handler for K returned ControlResult<K>; the JSON carries it as it was.
      return JSON.parse(res.resultJson === '' ? 'null' : res.resultJson) as ControlResult<K>
    } catch (err) {
      throw new NaiadError('PROTO_ERR_DECODE', `${command} on ${hostId}: the result is not JSON`, { cause: err })
    }
  }
}

