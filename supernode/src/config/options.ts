// supernode's options: every flag, config key and default in one table, typed: the values
// `loadOptions` gives for it need no cast. The seed's piece-engine groups (origin.*,
// seed.download.*) come from the peer package, where the daemon's table takes them too.

import { homedir } from 'node:os'
import { join } from 'node:path'

import { DOWNLOAD_OPTIONS, ORIGIN_OPTIONS } from '@naiad/peer'
import { defineCommand, LIMITS, prefixOptions, type OptionSpec, type OptionValues } from '@naiad/proto'

import { databaseUrl } from '../database/open.ts'

/** `plugin-config`: settings per plugin name, each a mapping (each plugin checks its own against its schema). */
function pluginConfig(raw: Record<string, unknown>): Record<string, Record<string, unknown>> {
  for (const [name, v] of Object.entries(raw)) {
    if (v !== null && (typeof v !== 'object' || Array.isArray(v))) throw new Error(`${name}: expected a mapping of settings`)
  }
  return raw as Record<string, Record<string, unknown>>
}

export const SUPERNODE_COMMAND = defineCommand({
  name: 'supernode',
  usage: 'supernode [--config FILE] [--data-dir DIR] [--listen HOST:PORT] [--p2p-listen MULTIADDR] [--database URL] [--no-seed] [--log-level LEVEL]\n       supernode token create [--config FILE] [--data-dir DIR] [--ttl DURATION] [--scope join|api]\n       supernode node list|revoke ID [--config FILE] [--data-dir DIR]',
  summary: 'The Naiad supernode: schedules piece transfers between dfdaemons, runs the seed peer that fetches each task from its origin once, and keeps cluster state in SQLite (or, shared by several supernodes, in PostgreSQL).',
  configFile: true,
  options: [
    { key: 'data-dir', flag: 'data-dir', type: 'string', default: join(homedir(), '.naiad', 'supernode'), meta: 'DIR', help: 'state database, seed cache, identity and the cluster key' },
    { key: 'database', flag: 'database', type: 'string', default: '', meta: 'URL', parse: databaseUrl, help: 'shared state for several supernodes: postgres://USER:PASSWORD@HOST:PORT/DB (default: SQLite in the data dir)' },
    { key: 'listen', flag: 'listen', type: 'hostport', default: '0.0.0.0:8002', meta: 'HOST:PORT', help: 'HTTP API' },
    { key: 'p2p.listen', flag: 'p2p-listen', type: 'multiaddr', default: '/ip4/0.0.0.0/tcp/8003', meta: 'MULTIADDR', help: 'fabric address daemons dial' },
    { key: 'seed.enabled', flag: 'seed', type: 'bool', default: true, help: 'run the embedded seed peer (--no-seed: the first peer of each task fetches from the origin)' },
    { key: 'seed.cache-quota', type: 'size', min: 1, default: '100GiB', help: 'bytes the seed cache may hold' },
    { key: 'seed.upload-slots', type: 'int', min: 1, default: 64, help: 'pieces the seed serves at once' },
    ...prefixOptions('seed.', DOWNLOAD_OPTIONS),
    { key: 'piece.listen', type: 'string', default: '', help: "HOST:PORT of the seed's data channel (default: the fabric's host, port 8004; an ephemeral port when the fabric's is 0)" },
    { key: 'piece.transport', type: 'enum', values: ['tls', 'tcp'], default: 'tls', help: "tls or tcp: the seed's data channel (see the dfdaemon option)" },
    { key: 'origin.ca-file', type: 'string', default: '', help: 'PEM CA certificates the seed trusts for HTTPS origins and registries, besides the system store' },
    ...ORIGIN_OPTIONS,
    { key: 'scheduler.host-ttl', type: 'duration', min: 1, default: '30s', help: 'hosts silent for longer are not offered as parents' },
    { key: 'scheduler.announce-networks', type: 'list', default: [], help: "CIDRs whose addresses a daemon may announce although it connects from another address (NAT); others must be its connection's own" },
    { key: 'cluster.heartbeat', type: 'duration', min: 1, default: '1s', help: 'how often this supernode writes its heartbeat to the membership store (several supernodes: the shared database)' },
    { key: 'cluster.ttl', type: 'duration', min: 1, default: '4s', help: 'a supernode silent for longer leaves the live set: its tasks move to the next owner (keep it a few heartbeats long)' },
    { key: 'cluster.advertise-url', type: 'string', default: '', help: "this supernode's HTTP URL as daemons and the other supernodes reach it (default: --listen, with the fabric's advertised address when it listens on every interface)" },
    { key: 'control.timeout', type: 'duration', min: 1, default: LIMITS.controlTimeoutMs, help: 'how long a daemon may run a control command (a preheat download) when the caller names no timeout' },
    { key: 'source.allow', type: 'list', default: [], help: 'hosts, HOST:PORT or CIDRs the seed, preheat and access checks may fetch besides public addresses (loopback, link-local, private ranges and this host are refused otherwise)' },
    { key: 'api.public-read', type: 'bool', default: false, help: 'GET endpoints that reveal tasks and peers answer without an API token' },
    { key: 'log-level', flag: 'log-level', type: 'level', default: 'info', meta: 'LEVEL', help: 'fatal, error, warn, info, debug, trace or silent' },
    { key: 'plugins', type: 'list', default: ['metrics'], help: 'plugins to load, by built-in name or module path' },
    { key: 'plugin-config', type: 'object', default: {}, parse: pluginConfig, help: 'settings per plugin name' }
  ]
})

export type SupernodeConfig = OptionValues<typeof SUPERNODE_COMMAND.options>

/** The admin subcommands read the supernode's own table (the same config file and environment) with --data-dir the only flag. */
const FILE_ONLY = SUPERNODE_COMMAND.options.map((o) => o.key === 'data-dir' ? o : { ...o, flag: undefined }) as unknown as typeof SUPERNODE_COMMAND.options

function sameDataDir<const E extends readonly OptionSpec[]>(extra: E): readonly [...typeof SUPERNODE_COMMAND.options, ...E] {
  return [...FILE_ONLY, ...extra]
}

export const TOKEN_COMMAND = defineCommand({
  name: 'supernode token create',
  usage: 'supernode token create [--config FILE] [--data-dir DIR] [--ttl DURATION] [--scope join|api]',
  summary: 'Creates a token signed by the cluster key in the data directory (making the key on first use) and prints it on its last line. A join token lets a dfdaemon join (dfdaemon --join-token); an API token opens the supernode API (Authorization: Bearer). --ttl 0 makes a token that never expires.',
  configFile: true,
  options: sameDataDir([
    { key: 'ttl', flag: 'ttl', type: 'string', default: '24h', meta: 'DURATION', help: 'how long the token is good for, e.g. 1h or 30d written as 720h (0: no expiry)' },
    { key: 'scope', flag: 'scope', type: 'enum', values: ['join', 'api'], default: 'join', meta: 'join|api', help: 'join (daemons) or api (HTTP API callers: operators, Harbor)' }
  ])
})

export const NODE_COMMAND = defineCommand({
  name: 'supernode node',
  usage: 'supernode node list [--config FILE] [--data-dir DIR] [--json]\n       supernode node revoke ID [--config FILE] [--data-dir DIR]',
  summary: 'Lists the nodes that joined the cluster, or revokes one: a revoked node is refused on every connection from then on (a running supernode picks it up within seconds) and cannot join again under the same identity.',
  configFile: true,
  positionals: { min: 1, max: 2 },
  options: sameDataDir([
    { key: 'json', flag: 'json', type: 'bool', default: false, help: 'list as JSON' }
  ])
})
