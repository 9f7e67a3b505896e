// Which destinations a node may fetch (the seed, preheat, the daemons' origin reads, the
// mirror's upstream): public addresses, plus what the operator lists in `source.allow`
// (hosts, host:port, CIDRs). Loopback, link-local (169.254.0.0/16: the cloud metadata
// service), private, shared, reserved and multicast ranges and the node's own addresses are
// refused unless listed, and only http and https are fetched.
//
// The check runs where the connection is made (an undici connector): the address tested is
// the one actually connected after name resolution, so a name that resolves to a private
// address, a DNS answer that changes between check and use, and every redirect hop (each
// hop connects anew) are all checked.

import { lookup as dnsLookup, type LookupAddress, type LookupAllOptions } from 'node:dns'
import { BlockList, isIP, isIPv4 } from 'node:net'
import { networkInterfaces } from 'node:os'

import { buildConnector } from 'undici'
import { NaiadError } from '@naiad/proto'

/** Ranges that are not the public internet (RFC 6890 and friends). */
const NOT_PUBLIC_V4 = [
  ['0.0.0.0', 8], ['10.0.0.0', 8], ['100.64.0.0', 10], ['127.0.0.0', 8], ['169.254.0.0', 16], ['172.16.0.0', 12],
  ['192.0.0.0', 24], ['192.0.2.0', 24], ['192.88.99.0', 24], ['192.168.0.0', 16], ['198.18.0.0', 15],
  ['198.51.100.0', 24], ['203.0.113.0', 24], ['224.0.0.0', 4], ['240.0.0.0', 4]
] as const
const NOT_PUBLIC_V6 = [
  ['::', 128], ['::1', 128], ['100::', 64], ['2001:db8::', 32], ['fc00::', 7], ['fe80::', 10], ['fec0::', 10], ['ff00::', 8]
] as const

const notPublic = new BlockList()
for (const [net, prefix] of NOT_PUBLIC_V4) notPublic.addSubnet(net, prefix, 'ipv4')
for (const [net, prefix] of NOT_PUBLIC_V6) notPublic.addSubnet(net, prefix, 'ipv6')

/** An IPv6 address that carries an IPv4 one (mapped, NAT64, 6to4) stands for that IPv4 address. */
function embeddedV4(ip: string): string | undefined {
  const lower = ip.toLowerCase()
  const dotted = /^(?:::ffff:|64:ff9b::)(\d+\.\d+\.\d+\.\d+)$/.exec(lower)
  if (dotted !== null) return dotted[1]
  const words = expandV6(lower)
  if (words === undefined) return undefined
  const v4 = (hi: number, lo: number): string => `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`
  if (words.slice(0, 5).every((w) => w === 0) && words[5] === 0xffff) return v4(words[6], words[7]) // ::ffff:a.b.c.d
  if (words[0] === 0x64 && words[1] === 0xff9b && words.slice(2, 6).every((w) => w === 0)) return v4(words[6], words[7]) // NAT64
  if (words[0] === 0x2002) return v4(words[1], words[2]) // 6to4
  return undefined
}

function expandV6(ip: string): number[] | undefined {
  if (isIP(ip) !== 6 || ip.includes('.')) return undefined
  const [head, tail] = ip.split('::')
  const h = head === '' ? [] : head.split(':')
  const t = tail === undefined || tail === '' ? [] : tail.split(':')
  const zeros = tail === undefined ? 0 : 8 - h.length - t.length
  return [...h, ...Array<string>(zeros).fill('0'), ...t].map((w) => parseInt(w, 16))
}

function unbracket(host: string): string {
  return host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host
}

function defaultPort(protocol: string): number {
  return protocol === 'https:' ? 443 : 80
}

/** The node's own interface addresses: its own APIs are never a fetch destination by accident. */
export function ownAddresses(): string[] {
  const out: string[] = []
  for (const list of Object.values(networkInterfaces())) for (const a of list ?? []) out.push(a.address.replace(/%.*$/, ''))
  return out
}

export interface DestinationPolicyOptions {
  /** `source.allow`: HOST, HOST:PORT, [V6]:PORT or a CIDR. */
  allow: string[]
  /** Addresses refused unless listed; by default the node's interface addresses. */
  self?: string[]
}

type Lookup = (hostname: string, options: LookupAllOptions | { all?: false }, callback: (...args: unknown[]) => void) => void

export class DestinationPolicy {
  private readonly nets = new BlockList()
  private readonly hosts = new Set<string>()
  private readonly hostPorts = new Set<string>()
  private readonly self = new Set<string>()
  /** The entries as given, for messages and for extending the policy. */
  readonly entries: readonly string[]

  constructor(options: DestinationPolicyOptions) {
    this.entries = [...options.allow]
    for (const raw of options.allow) this.add(raw)
    for (const ip of options.self ?? ownAddresses()) this.self.add(normalise(ip))
  }

  /** This policy plus more allowed entries (configured registries, a plugin's own list). */
  with(allow: string[]): DestinationPolicy {
    return new DestinationPolicy({ allow: [...this.entries, ...allow], self: [...this.self] })
  }

  private add(raw: string): void {
    const entry = raw.trim().toLowerCase()
    const bad = (): never => { throw new NaiadError('PROTO_ERR_BAD_CONFIG', `source.allow: bad entry "${raw}": expected HOST, HOST:PORT or a CIDR such as 10.0.0.0/8`) }
    if (entry === '') bad()
    const cidr = /^([0-9a-f.:]+)\/(\d{1,3})$/.exec(entry)
    if (cidr !== null) {
      const family = isIP(cidr[1])
      const prefix = Number(cidr[2])
      if (family === 0 || prefix > (family === 4 ? 32 : 128)) bad()
      this.nets.addSubnet(cidr[1], prefix, family === 4 ? 'ipv4' : 'ipv6')
      return
    }
    const hostPort = /^(\[[0-9a-f:.]+\]|[^:/\s[\]]+):(\d{1,5})$/.exec(entry)
    if (hostPort !== null) {
      if (Number(hostPort[2]) > 65535) bad()
      this.hostPorts.add(`${normalise(unbracket(hostPort[1]))}:${Number(hostPort[2])}`)
      return
    }
    const host = unbracket(entry)
    if (isIP(host) === 0 && !/^[a-z0-9_]([a-z0-9_.-]*[a-z0-9_])?$/.test(host)) bad()
    this.hosts.add(normalise(host))
  }

  /** A host the operator listed by name (or literal) for this port: allowed whatever it resolves to. */
  allowsName(hostname: string, port: number): boolean {
    const h = normalise(unbracket(hostname))
    return this.hosts.has(h) || this.hostPorts.has(`${h}:${port}`)
  }

  /** May a connection to `ip`:`port` be made (for a name not listed)? */
  allowsAddress(ip: string, port: number): boolean {
    const a = normalise(ip)
    const v4 = isIPv4(a) ? a : embeddedV4(a)
    if (this.hosts.has(a) || this.hostPorts.has(`${a}:${port}`)) return true
    if (this.nets.check(a, isIPv4(a) ? 'ipv4' : 'ipv6')) return true
    if (v4 !== undefined && v4 !== a && (this.hosts.has(v4) || this.hostPorts.has(`${v4}:${port}`) || this.nets.check(v4, 'ipv4'))) return true
    if (this.self.has(a) || (v4 !== undefined && this.self.has(v4))) return false
    if (v4 !== undefined) return !notPublic.check(v4, 'ipv4')
    return !notPublic.check(a, 'ipv6')
  }

  /**
   * Checks what can be checked before connecting: the scheme, and a literal address. Names
   * are checked where they are resolved (see connector).
   */
  checkUrl(raw: string | URL): URL {
    let url: URL
    try {
      url = typeof raw === 'string' ? new URL(raw) : raw
    } catch (err) {
      throw new NaiadError('DFD_ERR_BAD_REQUEST', `malformed URL "${String(raw)}"`, { cause: err })
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw denied(`${url.protocol} URLs are not fetched (only http and https)`)
    const port = url.port === '' ? defaultPort(url.protocol) : Number(url.port)
    const host = unbracket(url.hostname)
    if (isIP(host) !== 0 && !this.allowsName(host, port) && !this.allowsAddress(host, port)) throw denied(`${url.host} is not a public address and not in source.allow`)
    return url
  }

  /** An undici connector (Agent's `connect`) that connects only where this policy allows. */
  connector(options: buildConnector.BuildOptions = {}): buildConnector.connector {
    const named = buildConnector(options)
    const checked = (port: number): buildConnector.connector => buildConnector({ ...options, lookup: this.lookup(port) as never })
    return (opts, callback) => {
      const port = opts.port === '' ? defaultPort(opts.protocol) : Number(opts.port)
      const host = unbracket(opts.hostname)
      if (this.allowsName(host, port)) return named(opts, callback)
      if (isIP(host) !== 0) {
        if (!this.allowsAddress(host, port)) return callback(denied(`${opts.hostname}:${port} is not a public address and not in source.allow`), null)
        return named(opts, callback)
      }
      checked(port)(opts, callback)
    }
  }

  /** dns.lookup that drops the addresses this policy refuses; none left is an error. */
  private lookup(port: number): Lookup {
    return (hostname, options, callback) => {
      dnsLookup(hostname, { ...options, all: true }, (err, addresses: LookupAddress[]) => {
        if (err !== null) return callback(err)
        const ok = addresses.filter((a) => this.allowsAddress(a.address, port))
        if (ok.length === 0) {
          return callback(denied(`${hostname} resolves to ${addresses.map((a) => a.address).join(', ')}: not a public address and not in source.allow`))
        }
        if ((options as { all?: boolean }).all === true) return callback(null, ok)
        callback(null, ok[0].address, ok[0].family)
      })
    }
  }
}

function normalise(ip: string): string {
  return ip.toLowerCase().replace(/%.*$/, '')
}

function denied(why: string): NaiadError {
  return new NaiadError('PROTO_ERR_DESTINATION_DENIED', `destination refused: ${why}`)
}

/** The policy's refusal, wherever undici wrapped it (a connect error, an AggregateError of happy eyeballs). */
export function destinationDenied(err: unknown): NaiadError | undefined {
  for (let e = err as { code?: string; cause?: unknown; errors?: unknown[] } | undefined, depth = 0; e !== undefined && e !== null && depth < 6; depth++) {
    if (e instanceof NaiadError && e.code === 'PROTO_ERR_DESTINATION_DENIED') return e
    const inner = (e as { errors?: unknown[] }).errors?.map((x) => destinationDenied(x)).find((x) => x !== undefined)
    if (inner !== undefined) return inner
    e = e.cause as typeof e
  }
  return undefined
}

/** For components that build their own dispatcher: the Agent options that apply `policy`. */
export function policyConnect(policy: DestinationPolicy | undefined, options: buildConnector.BuildOptions): buildConnector.BuildOptions | buildConnector.connector {
  return policy === undefined ? options : policy.connector(options)
}

