// dfdaemon's options: every flag, config key and default in one table.

import { homedir } from 'node:os'
import { join } from 'node:path'

import type { CommandSpec } from '@naiad/proto'

export const DFDAEMON_COMMAND: CommandSpec = {
  name: 'dfdaemon',
  usage: 'dfdaemon --supernode URL [--join-token TOKEN | --join-token-file FILE] [--config FILE] [--data-dir DIR] [--proxy-listen HOST:PORT] [--api-listen HOST:PORT] [--p2p-listen MULTIADDR] [--default-registry URL] [--insecure-registry HOST[:PORT]]... [--cache-quota SIZE] [--log-level LEVEL]\n       dfdaemon init-config --runtime containerd|docker|podman --registry HOST [--dry-run]\n       dfdaemon doctor [--config FILE] [--json] [--rules FILE]',
  summary: 'The per-node Naiad daemon: downloads tasks in verified pieces from its peers (falling back to the origin), serves pieces to them, and offers a local API to dfget and nydus-fs.',
  configFile: true,
  options: [
    { key: 'supernode', flag: 'supernode', type: 'url', default: undefined, meta: 'URL', help: "the supernode's HTTP URL, e.g. http://10.0.0.1:8002" },
    { key: 'join-token', flag: 'join-token', type: 'string', default: '', meta: 'TOKEN', help: 'join token from "supernode token create" (needed once: the credential it earns is kept in the data dir)' },
    { key: 'join-token-file', flag: 'join-token-file', type: 'string', default: '', meta: 'FILE', help: 'file holding the join token (keeps it out of the process list)' },
    { key: 'data-dir', flag: 'data-dir', type: 'string', default: join(homedir(), '.naiad', 'dfdaemon'), meta: 'DIR', help: 'piece store, index, identity and membership credential' },
    { key: 'proxy.listen', flag: 'proxy-listen', type: 'hostport', default: '127.0.0.1:65001', meta: 'HOST:PORT', help: 'registry mirror and forward proxy' },
    { key: 'api.listen', flag: 'api-listen', type: 'hostport', default: '127.0.0.1:65003', meta: 'HOST:PORT', help: 'local API for dfget and nydus-fs' },
    { key: 'p2p.listen', flag: 'p2p-listen', type: 'multiaddr', default: '/ip4/0.0.0.0/tcp/65002', meta: 'MULTIADDR', help: 'fabric address peers dial' },
    { key: 'default-registry', flag: 'default-registry', type: 'url', default: 'https://registry-1.docker.io', meta: 'URL', help: 'upstream registry when a request names none' },
    { key: 'insecure-registry', flag: 'insecure-registry', type: 'list', multiple: true, default: [], meta: 'HOST[:PORT]', help: 'registries reached over plain HTTP (repeatable)' },
    { key: 'cache-quota', flag: 'cache-quota', type: 'size', default: '20GiB', meta: 'SIZE', help: 'bytes the piece store may hold before evicting least recently used tasks' },
    { key: 'log-level', flag: 'log-level', type: 'level', default: 'info', meta: 'LEVEL', help: 'fatal, error, warn, info, debug, trace or silent' },
    { key: 'registry.auth-file', type: 'string', default: '', help: "registry credentials in Docker's config.json format, used when a client sends none" },
    { key: 'registry.ca-file', type: 'string', default: '', help: 'PEM CA certificates trusted for HTTPS registries and origins, besides the system store' },
    { key: 'proxy.rules', type: 'list', default: [], help: 'regular expressions: forward-proxied plain-HTTP URLs that match go through the swarm' },
    { key: 'proxy.connect-allow', type: 'list', default: [], help: 'hosts the forward proxy may open CONNECT tunnels to: HOST (port 443) or HOST:PORT (empty: CONNECT is refused)' },
    { key: 'source.allow', type: 'list', default: [], help: 'hosts, HOST:PORT or CIDRs this daemon may fetch besides public addresses; its registries (--default-registry, --insecure-registry, registry.auth-file) count as listed' },
    { key: 'upload.slots', type: 'int', default: 16, help: 'pieces served to other peers at once' },
    { key: 'piece.listen', type: 'string', default: '', help: "HOST:PORT of the data channel other peers fetch pieces from (default: the fabric's host, port 65004; an ephemeral port when the fabric's is 0)" },
    { key: 'piece.transport', type: 'string', default: 'tls', help: 'tls: piece bytes encrypted, both ends authenticated by their fabric identity; tcp: plaintext (pieces are still verified; the operator gives up confidentiality on the wire)' },
    { key: 'download.concurrency', type: 'int', default: 8, help: 'pieces in flight at once per download' },
    { key: 'download.per-parent', type: 'int', default: 3, help: 'pieces in flight at once from one parent' },
    { key: 'download.piece-timeout', type: 'duration', default: '30s', help: 'longest transfer of one piece from a parent' },
    { key: 'download.stall-timeout', type: 'duration', default: '10s', help: 'with no parent able to serve for this long, go to the origin' },
    { key: 'origin.connect-timeout', type: 'duration', default: '10s', help: 'origin connect timeout' },
    { key: 'origin.idle-timeout', type: 'duration', default: '30s', help: 'longest wait for origin headers or the next body bytes' },
    { key: 'origin.retries', type: 'int', default: 3, help: 'retries of origin connection failures and 5xx answers' },
    { key: 'scheduler.timeout', type: 'duration', default: '2s', help: 'timeout of one scheduler call' },
    { key: 'scheduler.keepalive', type: 'duration', default: '5s', help: 'interval of host announcements (and reconnection attempts)' },
    { key: 'host.idc', type: 'string', default: '', help: 'locality label: data centre' },
    { key: 'host.location', type: 'string', default: '', help: 'locality label: location path such as region|zone|rack' },
    { key: 'host.labels', type: 'object', default: {}, help: 'labels of this host (key: value), announced to the supernode, which selects hosts by them (preheat scopes)' },
    { key: 'plugins', type: 'list', default: ['metrics'], help: 'plugins to load, by built-in name or module path' },
    { key: 'plugin-config', type: 'object', default: {}, help: 'settings per plugin name' }
  ]
}
