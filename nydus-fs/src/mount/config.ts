// The option tables of `nydus-fs mount` and `nydus-fs umount`, with every default in one
// place, and their conversion into typed options. Flags > NAIAD_* environment > defaults.

import { homedir } from 'node:os'
import { join, resolve } from 'node:path'

import { defineCommand, NaiadError, type Loaded, type OptionValues } from '@naiad/proto/contracts'

import { parseRef } from '@naiad/oci'

const isRoot = process.getuid?.() === 0

export const MOUNT_DEFAULTS = {
  /** The dfdaemon's local API; used when it answers, else chunks come from the registry. */
  daemon: 'http://127.0.0.1:65003',
  cacheDir: isRoot ? '/var/cache/naiad/nydus-fs' : join(homedir(), '.cache', 'naiad', 'nydus-fs'),
  /** State files, logs and the stats sockets of running mounts. */
  runDir: isRoot ? '/run/naiad/nydus-fs' : join(process.env.XDG_RUNTIME_DIR ?? join(homedir(), '.cache'), 'naiad', 'nydus-fs', 'run'),
  /** Longest a read waits for its data, retries included; then EIO. */
  readTimeout: '30s',
  /** One request to the daemon or the registry. */
  attemptTimeout: '10s',
  /** Further attempts after a failed range request. */
  retries: 3,
  /** Daemon windows: aligned slices of a data blob, one swarm task each. */
  windowSize: '1MiB',
  /** Verified chunks kept in memory. */
  memoryCache: '256MiB',
  diskCache: '10GiB',
  /** Range requests in flight at once, and of those for prefetch. */
  concurrency: 8,
  prefetchConcurrency: 2,
  /** Stats file rewrite interval. */
  statsInterval: '5s',
  /** How long `mount` waits for the background mount to come up; `umount` for it to go. */
  readyTimeout: '60s',
  umountTimeout: '20s',
  /** Kernel attribute and entry cache: the image never changes under a mount. */
  kernelCacheTimeoutSec: 3600
} as const

export const MOUNT_USAGE = 'nydus-fs mount REF MOUNTPOINT [--daemon URL] [--plain-http] [--cache-dir DIR] [--prefetch|--no-prefetch] [--foreground]'
export const UMOUNT_USAGE = 'nydus-fs umount MOUNTPOINT'

export const MOUNT_COMMAND = defineCommand({
  name: 'nydus-fs mount',
  usage: MOUNT_USAGE,
  summary: 'Mount a lazy image read-only over FUSE: chunks are fetched when read (through the dfdaemon, else\n' +
    'the registry), verified and cached. Returns once the mount is ready; --foreground stays and unmounts on\n' +
    'SIGINT/SIGTERM. Live stats: GET /stats or /metrics on the unix socket named in RUN_DIR/<id>.json.',
  positionals: { min: 2, max: 2 },
  options: [
    { key: 'daemon', flag: 'daemon', type: 'string', default: MOUNT_DEFAULTS.daemon, meta: 'URL', help: "dfdaemon local API for P2P chunk fetches ('none': registry only)" },
    { key: 'plain-http', flag: 'plain-http', type: 'bool', default: false, help: 'talk HTTP, not HTTPS, to the registry' },
    { key: 'cache-dir', flag: 'cache-dir', type: 'string', default: MOUNT_DEFAULTS.cacheDir, meta: 'DIR', help: 'verified chunks, access logs and stats files' },
    { key: 'prefetch', flag: 'prefetch', type: 'bool', default: true, help: 'fetch the prefetch table and the recorded access order in the background (--no-prefetch: off)' },
    { key: 'foreground', flag: 'foreground', type: 'bool', default: false, help: 'stay in the foreground; unmount on SIGINT/SIGTERM' },
    { key: 'read-timeout', flag: 'read-timeout', type: 'duration', default: MOUNT_DEFAULTS.readTimeout, meta: 'DURATION', help: 'a read that cannot get its data within this fails with EIO' },
    { key: 'memory-cache', flag: 'memory-cache', type: 'size', default: MOUNT_DEFAULTS.memoryCache, meta: 'SIZE', help: 'verified chunks kept in memory' },
    { key: 'disk-cache', flag: 'disk-cache', type: 'size', default: MOUNT_DEFAULTS.diskCache, meta: 'SIZE', help: 'verified chunks kept under --cache-dir; least recently used go first' },
    { key: 'window-size', flag: 'window-size', type: 'size', default: MOUNT_DEFAULTS.windowSize, meta: 'SIZE', help: 'aligned blob window asked of the dfdaemon (a power of two, 64KiB-64MiB)' },
    { key: 'log-level', flag: 'log-level', type: 'level', default: 'info', meta: 'LEVEL', help: 'fatal, error, warn, info, debug, trace or silent' },
    { key: 'attempt-timeout', type: 'duration', default: MOUNT_DEFAULTS.attemptTimeout, help: 'one range request' },
    { key: 'retries', type: 'int', default: MOUNT_DEFAULTS.retries, help: 'further attempts after a failed range request' },
    { key: 'concurrency', type: 'int', default: MOUNT_DEFAULTS.concurrency, help: 'range requests in flight' },
    { key: 'prefetch-concurrency', type: 'int', default: MOUNT_DEFAULTS.prefetchConcurrency, help: 'of those, for prefetch' },
    { key: 'run-dir', type: 'string', default: MOUNT_DEFAULTS.runDir, help: 'state files, logs and stats sockets of running mounts' },
    { key: 'allow-other', type: 'bool', default: isRoot, help: 'let other users (containers) use the mount' }
  ]
})

export const UMOUNT_COMMAND = defineCommand({
  name: 'nydus-fs umount',
  usage: UMOUNT_USAGE,
  summary: 'Unmount a nydus-fs mount: the mount process answers pending reads, writes its stats and exits.',
  positionals: { min: 1, max: 1 },
  options: [
    { key: 'timeout', flag: 'timeout', type: 'duration', default: MOUNT_DEFAULTS.umountTimeout, meta: 'DURATION', help: 'how long to wait for the mount process before it is killed' },
    { key: 'run-dir', type: 'string', default: MOUNT_DEFAULTS.runDir, help: 'state files of running mounts' }
  ]
})

export interface MountCliOptions {
  ref: string
  mountpoint: string
  /** undefined: registry only. */
  daemon: string | undefined
  plainHttp: boolean
  cacheDir: string
  prefetch: boolean
  foreground: boolean
  readTimeoutMs: number
  attemptTimeoutMs: number
  retries: number
  memoryCacheBytes: number
  diskCacheBytes: number
  windowBytes: number
  concurrency: number
  prefetchConcurrency: number
  runDir: string
  allowOther: boolean
  logLevel: string
}

function usage(message: string): NaiadError {
  return new NaiadError('PROTO_ERR_USAGE', message)
}

/** The `--daemon` value: undefined for `none` (or empty), else an http(s) URL without a trailing slash. */
export function daemonOption(raw: string): string | undefined {
  if (raw === '' || raw === 'none') return undefined
  let u: URL
  try { u = new URL(raw) } catch { throw usage(`flag --daemon: malformed URL "${raw}"`) }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw usage(`flag --daemon: URL must be http or https, got "${raw}"`)
  return raw.replace(/\/+$/, '')
}

export function mountOptionsFrom(loaded: Loaded<OptionValues<typeof MOUNT_COMMAND.options>>): MountCliOptions {
  const v = loaded.values
  const [ref, mountpoint] = loaded.positionals
  try {
    parseRef(ref)
  } catch (err) {
    // A malformed reference is a bad value on the command line: exit 2 like any other.
    throw new NaiadError('PROTO_ERR_USAGE', (err as Error).message, { cause: err })
  }
  const daemon = daemonOption(v.daemon)
  const windowBytes = v['window-size']
  if (windowBytes < 64 * 1024 || windowBytes > 64 * 1024 * 1024 || (windowBytes & (windowBytes - 1)) !== 0) {
    throw usage(`flag --window-size: ${windowBytes} bytes is not a power of two between 64KiB and 64MiB`)
  }
  const readTimeoutMs = v['read-timeout']
  if (readTimeoutMs < 100) throw usage('flag --read-timeout: must be at least 100ms')
  const positive = (key: 'concurrency' | 'prefetch-concurrency'): number => {
    const n = v[key]
    if (!Number.isSafeInteger(n) || n < 1) throw new NaiadError('PROTO_ERR_BAD_CONFIG', `${key}: must be at least 1, got ${n}`)
    return n
  }
  if (v['cache-dir'] === '') throw usage('flag --cache-dir: must not be empty')
  return {
    ref,
    mountpoint: resolve(mountpoint),
    daemon,
    plainHttp: v['plain-http'],
    cacheDir: resolve(v['cache-dir']),
    prefetch: v.prefetch,
    foreground: v.foreground,
    readTimeoutMs,
    attemptTimeoutMs: Math.min(readTimeoutMs, v['attempt-timeout']),
    retries: v.retries,
    memoryCacheBytes: v['memory-cache'],
    diskCacheBytes: v['disk-cache'],
    windowBytes,
    concurrency: positive('concurrency'),
    prefetchConcurrency: positive('prefetch-concurrency'),
    runDir: resolve(v['run-dir']),
    allowOther: v['allow-other'],
    logLevel: v['log-level']
  }
}

export interface UmountCliOptions {
  mountpoint: string
  timeoutMs: number
  runDir: string
}

export function umountOptionsFrom(loaded: Loaded<OptionValues<typeof UMOUNT_COMMAND.options>>): UmountCliOptions {
  return {
    mountpoint: resolve(loaded.positionals[0]),
    timeoutMs: loaded.values.timeout,
    runDir: resolve(loaded.values['run-dir'])
  }
}
