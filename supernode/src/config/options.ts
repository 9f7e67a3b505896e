// supernode's options: every flag, config key and default in one table.

import { homedir } from 'node:os'
import { join } from 'node:path'

import type { CommandSpec } from '@naiad/proto'

export const SUPERNODE_COMMAND: CommandSpec = {
  name: 'supernode',
  usage: 'supernode [--config FILE] [--data-dir DIR] [--listen HOST:PORT] [--p2p-listen MULTIADDR] [--no-seed] [--log-level LEVEL]',
  summary: 'The Naiad supernode: schedules piece transfers between dfdaemons, runs the seed peer that fetches each task from its origin once, and keeps cluster state in SQLite.',
  configFile: true,
  options: [
    { key: 'data-dir', flag: 'data-dir', type: 'string', default: join(homedir(), '.naiad', 'supernode'), meta: 'DIR', help: 'state database, seed cache and identity' },
    { key: 'listen', flag: 'listen', type: 'hostport', default: '0.0.0.0:8002', meta: 'HOST:PORT', help: 'HTTP API' },
    { key: 'p2p.listen', flag: 'p2p-listen', type: 'multiaddr', default: '/ip4/0.0.0.0/tcp/8003', meta: 'MULTIADDR', help: 'fabric address daemons dial' },
    { key: 'seed.enabled', flag: 'seed', type: 'bool', default: true, help: 'run the embedded seed peer (--no-seed: the first peer of each task fetches from the origin)' },
    { key: 'seed.cache-quota', type: 'size', default: '100GiB', help: 'bytes the seed cache may hold' },
    { key: 'seed.upload-slots', type: 'int', default: 64, help: 'pieces the seed serves at once' },
    { key: 'piece.listen', type: 'string', default: '', help: "HOST:PORT of the seed's data channel (default: the fabric's host, port 8004; an ephemeral port when the fabric's is 0)" },
    { key: 'piece.transport', type: 'string', default: 'tls', help: "tls or tcp: the seed's data channel (see the dfdaemon option)" },
    { key: 'origin.ca-file', type: 'string', default: '', help: "PEM CA certificates the seed trusts for HTTPS origins and registries, besides the system store" },
    { key: 'scheduler.host-ttl', type: 'duration', default: '30s', help: 'hosts silent for longer are not offered as parents' },
    { key: 'log-level', flag: 'log-level', type: 'level', default: 'info', meta: 'LEVEL', help: 'fatal, error, warn, info, debug, trace or silent' },
    { key: 'plugins', type: 'list', default: ['metrics'], help: 'plugins to load, by built-in name or module path' },
    { key: 'plugin-config', type: 'object', default: {}, help: 'settings per plugin name' }
  ]
}
