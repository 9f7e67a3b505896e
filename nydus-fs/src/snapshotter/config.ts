// The option table of `nydus-fs snapshotter`, every default in one place, and its
// conversion into typed options. Flags > NAIAD_* environment > defaults.

import { resolve } from 'node:path'

import { defineCommand, NaiadError, type Loaded, type OptionValues } from '@naiad/proto/contracts'

import { daemonOption, MOUNT_DEFAULTS } from '../mount/config.ts'

export const SNAPSHOTTER_DEFAULTS = {
  socket: '/run/naiad/snapshotter.sock',
  root: '/var/lib/naiad/snapshotter',
  /** The dfdaemon's local API for chunk reads; `none`: the registry only. */
  daemon: MOUNT_DEFAULTS.daemon,
  /** The proxy plugin name containerd knows the snapshotter by. */
  pluginName: 'naiad',
  readTimeout: MOUNT_DEFAULTS.readTimeout,
  /** Verified chunks kept on disk by each lazy mount (least recently used go first). */
  cacheSize: MOUNT_DEFAULTS.diskCache,
  /** How long a lazy mount may take to come up (bootstrap fetched and verified). */
  mountTimeout: MOUNT_DEFAULTS.readyTimeout,
  /** Registry requests of the snapshotter itself (manifests, access-order artifacts). */
  registryTimeout: '15s',
  /**
   * A container's access order is published once the mount's record has not grown for
   * this long after the container started, and at most this long after the start.
   */
  accessSettle: '5s',
  accessDeadline: '2m'
} as const

export const SNAPSHOTTER_USAGE = 'nydus-fs snapshotter --socket PATH --root DIR [--daemon URL] [--plain-http] [--print-containerd-config]'

export const SNAPSHOTTER_COMMAND = defineCommand({
  name: 'nydus-fs snapshotter',
  usage: SNAPSHOTTER_USAGE,
  summary: "containerd's snapshots service on a unix socket, for containerd's proxy_plugins (type \"snapshot\").\n" +
    'Layers of Naiad lazy images are served from a nydus-fs mount (nothing downloaded or unpacked);\n' +
    'other images get overlayfs snapshots as with containerd\'s own. --print-containerd-config prints\n' +
    "the containerd configuration for this socket and exits.",
  positionals: { min: 0, max: 0 },
  options: [
    { key: 'socket', flag: 'socket', type: 'string', default: SNAPSHOTTER_DEFAULTS.socket, meta: 'PATH', help: 'unix socket containerd connects to' },
    { key: 'root', flag: 'root', type: 'string', default: SNAPSHOTTER_DEFAULTS.root, meta: 'DIR', help: 'state (SQLite), snapshot directories, lazy mounts and their chunk cache' },
    { key: 'daemon', flag: 'daemon', type: 'string', default: SNAPSHOTTER_DEFAULTS.daemon, meta: 'URL', help: "dfdaemon local API for P2P chunk reads ('none': registry only)" },
    { key: 'plain-http', flag: 'plain-http', type: 'bool', default: false, help: 'talk HTTP, not HTTPS, to registries' },
    { key: 'print-containerd-config', flag: 'print-containerd-config', type: 'bool', default: false, help: 'print the containerd configuration (proxy plugin, CRI snapshotter) and exit' },
    { key: 'plugin-name', flag: 'plugin-name', type: 'string', default: SNAPSHOTTER_DEFAULTS.pluginName, meta: 'NAME', help: 'proxy plugin name in the printed containerd configuration' },
    { key: 'read-timeout', flag: 'read-timeout', type: 'duration', default: SNAPSHOTTER_DEFAULTS.readTimeout, meta: 'DURATION', help: "a container's read of a lazy file that cannot get its data within this fails with EIO" },
    { key: 'cache-size', flag: 'cache-size', type: 'size', default: SNAPSHOTTER_DEFAULTS.cacheSize, meta: 'SIZE', help: 'verified chunks kept on disk per lazy mount; least recently used go first' },
    { key: 'log-level', flag: 'log-level', type: 'level', default: 'info', meta: 'LEVEL', help: 'fatal, error, warn, info, debug, trace or silent' },
    { key: 'mount-timeout', type: 'duration', default: SNAPSHOTTER_DEFAULTS.mountTimeout, help: 'how long a lazy mount may take to come up' },
    { key: 'registry-timeout', type: 'duration', default: SNAPSHOTTER_DEFAULTS.registryTimeout, help: 'one registry request of the snapshotter itself' },
    { key: 'access-settle', type: 'duration', default: SNAPSHOTTER_DEFAULTS.accessSettle, help: 'publish the access order once it stopped growing for this long' },
    { key: 'access-deadline', type: 'duration', default: SNAPSHOTTER_DEFAULTS.accessDeadline, help: 'publish it at the latest this long after the first container started' }
  ]
})

export interface SnapshotterOptions {
  socket: string
  root: string
  /** undefined: the registry only. */
  daemon: string | undefined
  plainHttp: boolean
  printContainerdConfig: boolean
  pluginName: string
  readTimeoutMs: number
  cacheBytes: number
  logLevel: string
  mountTimeoutMs: number
  registryTimeoutMs: number
  accessSettleMs: number
  accessDeadlineMs: number
}

function usage(message: string): NaiadError {
  return new NaiadError('PROTO_ERR_USAGE', message)
}

export function snapshotterOptionsFrom(loaded: Loaded<OptionValues<typeof SNAPSHOTTER_COMMAND.options>>): SnapshotterOptions {
  const v = loaded.values
  const daemon = daemonOption(v.daemon)
  for (const k of ['socket', 'root'] as const) if (v[k] === '') throw usage(`flag --${k}: must not be empty`)
  const name = v['plugin-name']
  if (!/^[a-z0-9][a-z0-9._-]*$/.test(name)) throw usage(`flag --plugin-name: "${name}" is not a plugin name (lowercase letters, digits, . _ -)`)
  const readTimeoutMs = v['read-timeout']
  if (readTimeoutMs < 100) throw usage('flag --read-timeout: must be at least 100ms')
  return {
    socket: resolve(v.socket),
    root: resolve(v.root),
    daemon,
    plainHttp: v['plain-http'],
    printContainerdConfig: v['print-containerd-config'],
    pluginName: name,
    readTimeoutMs,
    cacheBytes: v['cache-size'],
    logLevel: v['log-level'],
    mountTimeoutMs: v['mount-timeout'],
    registryTimeoutMs: v['registry-timeout'],
    accessSettleMs: v['access-settle'],
    accessDeadlineMs: v['access-deadline']
  }
}
