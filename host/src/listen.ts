// Listen-address helpers both binaries use for their HTTP and fabric addresses.

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
