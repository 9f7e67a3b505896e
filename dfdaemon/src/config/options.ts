// dfdaemon's options: every flag, config key and default in one table, typed: the values
// `loadOptions` gives for it need no cast. The piece engine's groups (download.*, origin.*,
// scheduler.timeout) come from the peer package, where the seed's table takes them too.

import { homedir } from 'node:os'
import { join } from 'node:path'

import { DOWNLOAD_OPTIONS, ORIGIN_OPTIONS, SCHEDULER_CLIENT_OPTIONS } from '@naiad/peer'
import { defineCommand, type OptionValues } from '@naiad/proto'

const LABEL_KEY = /^[A-Za-z0-9]([A-Za-z0-9._/-]{0,62}[A-Za-z0-9])?$/

/** `host.labels`: a mapping of label → value, announced as `key=value` (keys hold no `=`; values no line breaks). */
export function hostLabels(raw: Record<string, unknown>): Record<string, string> {
  const out: Record<string, string> = {}
  for (const [k, v] of Object.entries(raw)) {
    if (!LABEL_KEY.test(k)) throw new Error(`bad label "${k}": letters, digits, . _ / -, at most 64 characters`)
    if (typeof v !== 'string' && typeof v !== 'number' && typeof v !== 'boolean') throw new Error(`label "${k}" must have a string value`)
    const value = String(v)
    if (value.length > 256 || /[\r\n]/.test(value)) throw new Error(`label "${k}": value too long or has a line break`)
    out[k] = value
  }
  return out
}

/** `proxy.rules`: each entry a regular expression. */
export function proxyRule(raw: string): RegExp {
  try {
    return new RegExp(raw)
  } catch (err) {
    throw new Error(`bad regular expression "${raw}": ${(err as Error).message}`, { cause: err })
  }
}

/** `plugin-config`: settings per plugin name, each a mapping (each plugin checks its own against its schema). */
export function pluginConfig(raw: Record<string, unknown>): Record<string, Record<string, unknown>> {
  for (const [name, v] of Object.entries(raw)) {
    if (v !== null && (typeof v !== 'object' || Array.isArray(v))) throw new Error(`${name}: expected a mapping of settings`)
  }
  return raw as Record<string, Record<string, unknown>>
}

export const DFDAEMON_COMMAND = defineCommand({
  name: 'dfdaemon',
  usage: 'dfdaemon --supernode URL [--supernode URL]... [--join-token TOKEN | --join-token-file FILE] [--config FILE] [--data-dir DIR] [--proxy-listen HOST:PORT] [--api-listen HOST:PORT] [--p2p-listen MULTIADDR] [--default-registry URL] [--insecure-registry HOST[:PORT]]... [--cache-quota SIZE] [--log-level LEVEL]\n       dfdaemon init-config --runtime containerd|docker|podman --registry HOST [--dry-run]\n       dfdaemon doctor [--config FILE] [--json] [--rules FILE]',
  summary: 'The per-node Naiad daemon: downloads tasks in verified pieces from its peers (falling back to the origin), serves pieces to them, and offers a local API to dfget and nydus-fs.',
  configFile: true,
  options: [
    { key: 'supernode', flag: 'supernode', type: 'url', multiple: true, default: [], meta: 'URL', help: "a supernode's HTTP URL, e.g. http://10.0.0.1:8002; repeat it for the supernodes of one cluster (a name that resolves to several addresses, such as a headless Service, stands for each); the daemon learns the rest of the live set from them" },
    { key: 'join-token', flag: 'join-token', type: 'string', default: '', meta: 'TOKEN', help: 'join token from "supernode token create" (needed once: the credential it earns is kept in the data dir)' },
    { key: 'join-token-file', flag: 'join-token-file', type: 'string', default: '', meta: 'FILE', help: 'file holding the join token (keeps it out of the process list)' },
    { key: 'data-dir', flag: 'data-dir', type: 'string', default: join(homedir(), '.naiad', 'dfdaemon'), meta: 'DIR', help: 'piece store, index, identity and membership credential' },
    { key: 'proxy.listen', flag: 'proxy-listen', type: 'hostport', default: '127.0.0.1:65001', meta: 'HOST:PORT', help: 'registry mirror and forward proxy' },
    { key: 'api.listen', flag: 'api-listen', type: 'hostport', default: '127.0.0.1:65003', meta: 'HOST:PORT', help: 'local API for dfget and nydus-fs' },
    { key: 'p2p.listen', flag: 'p2p-listen', type: 'multiaddr', default: '/ip4/0.0.0.0/tcp/65002', meta: 'MULTIADDR', help: 'fabric address peers dial' },
    { key: 'default-registry', flag: 'default-registry', type: 'url', default: 'https://registry-1.docker.io', meta: 'URL', help: 'upstream registry when a request names none' },
    { key: 'insecure-registry', flag: 'insecure-registry', type: 'list', multiple: true, default: [], meta: 'HOST[:PORT]', help: 'registries reached over plain HTTP (repeatable)' },
    { key: 'cache-quota', flag: 'cache-quota', type: 'size', min: 1, default: '20GiB', meta: 'SIZE', help: 'bytes the piece store may hold before evicting least recently used tasks' },
    { key: 'log-level', flag: 'log-level', type: 'level', default: 'info', meta: 'LEVEL', help: 'fatal, error, warn, info, debug, trace or silent' },
    { key: 'registry.auth-file', type: 'string', default: '', help: "registry credentials in Docker's config.json format, used when a client sends none" },
    { key: 'registry.ca-file', type: 'string', default: '', help: 'PEM CA certificates trusted for HTTPS registries and origins, besides the system store' },
    { key: 'proxy.rules', type: 'list', default: [], parse: (rules: string[]) => rules.map(proxyRule), help: 'regular expressions: forward-proxied plain-HTTP URLs that match go through the swarm' },
    { key: 'proxy.connect-allow', type: 'list', default: [], help: 'hosts the forward proxy may open CONNECT tunnels to: HOST (port 443) or HOST:PORT (empty: CONNECT is refused)' },
    { key: 'source.allow', type: 'list', default: [], help: 'hosts, HOST:PORT or CIDRs this daemon may fetch besides public addresses; its registries (--default-registry, --insecure-registry, registry.auth-file) count as listed' },
    { key: 'upload.slots', type: 'int', min: 1, default: 16, help: 'pieces served to other peers at once' },
    { key: 'piece.listen', type: 'string', default: '', help: "HOST:PORT of the data channel other peers fetch pieces from (default: the fabric's host, port 65004; an ephemeral port when the fabric's is 0)" },
    { key: 'piece.transport', type: 'enum', values: ['tls', 'tcp'], default: 'tls', help: 'tls: piece bytes encrypted, both ends authenticated by their fabric identity; tcp: plaintext (pieces are still verified; the operator gives up confidentiality on the wire)' },
    ...DOWNLOAD_OPTIONS,
    ...ORIGIN_OPTIONS,
    ...SCHEDULER_CLIENT_OPTIONS,
    { key: 'scheduler.keepalive', type: 'duration', min: 1, default: '5s', help: 'interval of host announcements (the pace instead, while the supernode asks for a longer one); a failed one is tried again from 250ms on, backing off to this' },
    { key: 'host.idc', type: 'string', default: '', help: 'locality label: data centre' },
    { key: 'host.location', type: 'string', default: '', help: 'locality label: location path such as region|zone|rack' },
    { key: 'host.labels', type: 'object', default: {}, parse: hostLabels, help: 'labels of this host (key: value), announced to the supernode, which selects hosts by them (preheat scopes)' },
    { key: 'plugins', type: 'list', default: ['metrics'], help: 'plugins to load, by built-in name or module path' },
    { key: 'plugin-config', type: 'object', default: {}, parse: pluginConfig, help: 'settings per plugin name' }
  ]
})

export type DaemonConfig = OptionValues<typeof DFDAEMON_COMMAND.options>
