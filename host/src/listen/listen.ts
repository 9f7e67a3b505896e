// Listen-address helpers both binaries use for their HTTP, fabric and data-channel addresses.

import { NaiadError } from '@naiad/proto'

/** `HOST:PORT` (IPv6 in brackets or not) → [host, port]. */
export function splitHostPort(hp: string): [string, string] {
  const i = hp.lastIndexOf(':')
  return [hp.slice(0, i).replace(/^\[|\]$/g, ''), hp.slice(i + 1)]
}

/** The IP address of a listen multiaddr (`/ip4/0.0.0.0/tcp/65002` → `0.0.0.0`), else all IPv4. */
export function listenHost(addr: string | undefined): string {
  const m = /^\/ip[46]\/([^/]+)\//.exec(addr ?? '')
  return m === null ? '0.0.0.0' : m[1]
}

/**
 * Loopback addresses are only useful to peers on the same host; when a node also listens
 * elsewhere, leave them out so remote peers don't dial their own loopback.
 */
export function advertisedAddrs(addrs: string[]): string[] {
  const remote = addrs.filter((a) => !a.startsWith('/ip4/127.') && !a.startsWith('/ip6/::1/'))
  return remote.length > 0 ? remote : addrs
}

/**
 * Where a data channel listens: `HOST:PORT` as configured, else the fabric's host with
 * `defaultPort` — or an ephemeral port when the fabric's own port is 0 (tests, several
 * nodes on one host).
 */
export function dataListen(configured: string, p2pListen: string, defaultPort: number): { host: string; port: number } {
  if (configured !== '') {
    const [host, port] = splitHostPort(configured)
    const n = Number(port)
    if (host === '' || !/^\d+$/.test(port) || n > 65535) {
      throw new NaiadError('PROTO_ERR_BAD_CONFIG', `piece.listen: expected HOST:PORT, got "${configured}"`)
    }
    return { host, port: n }
  }
  const fabricPort = /\/tcp\/(\d+)/.exec(p2pListen)?.[1]
  return { host: listenHost(p2pListen), port: fabricPort === '0' ? 0 : defaultPort }
}
