/**
 * nydus-fs mount: a lazy image as a read-only FUSE file system, and `umount`.
 *
 * Exported API (what the `nydus-fs` binary's `mount` and `umount` subcommands call):
 *
 *   MOUNT_COMMAND, UMOUNT_COMMAND: CommandSpec         option tables (flags, NAIAD_* env, defaults)
 *   mountOptionsFrom(loaded): MountCliOptions           validated options of `mount`
 *   umountOptionsFrom(loaded): UmountCliOptions
 *   runMount(options, args?): Promise<number>          the whole `mount` command: daemonizes unless
 *                                                       options.foreground; in the foreground, mounts and
 *                                                       stays until SIGINT/SIGTERM or an external unmount
 *   runUmount(options): Promise<number>                 the whole `umount` command
 *   mountImage(options: MountOptions): Promise<MountHandle>   mount in this process (the library call)
 *   unmount(mountpoint, { runDir?, timeoutMs? }): Promise<void>  unmount a mount of any process
 *   readMountStats(mountpoint, { runDir? }): Promise<MountStats>  live stats of a running mount
 *
 * @example
 * // bin: nydus-fs mount REF MOUNTPOINT ... / nydus-fs umount MOUNTPOINT
 * await runCli(MOUNT_COMMAND, argv, (loaded) => runMount(mountOptionsFrom(loaded)))
 * await runCli(UMOUNT_COMMAND, argv, (loaded) => runUmount(umountOptionsFrom(loaded)))
 *
 * // library
 * const m = await mountImage({ ref: '127.0.0.1:5000/app:lazy', mountpoint: '/mnt/app', plainHttp: true, cacheDir: '/var/cache/nfs' })
 * console.log(m.stats().fetch.bytes)
 * await m.close()
 *
 * Stats: GET /stats (JSON, MountStats) and GET /metrics (Prometheus) on the unix socket
 * `<run-dir>/<id>.sock` named by the state file `<run-dir>/<id>.json`; the same JSON is
 * rewritten to `<cache-dir>/stats/<id>.json` every few seconds and on unmount.
 */

import { join, resolve } from 'node:path'

import { createLogger, NaiadError, parseDuration, type Logger } from '@naiad/proto/contracts'

import { ChunkCache } from '../cache/chunk-cache.ts'
import { RegistrySource, type BlobSource } from '../fetch/blob-source.ts'
import { ChunkFetcher } from '../fetch/chunk-fetcher.ts'
import { DaemonSource } from '../fetch/daemon-source.ts'
import { loadLazyImage } from '../image/load.ts'
import { lookupPath } from '../image/tree.ts'
import { RegistryClient } from '@naiad/oci'
import { parseRef } from '@naiad/oci'
import { AccessRecorder, accessLogPath, loadAccessLog } from './access-log.ts'
import { MOUNT_DEFAULTS, type MountCliOptions, type UmountCliOptions } from './config.ts'
import { mountInBackground, reportReady } from './daemonize.ts'
import { mountFuse, unmountFuse } from './fuse-host.ts'
import { LazyFs } from './lazy-fs.ts'
import { Prefetcher } from './prefetch.ts'
import { detachFuse, isAlive, isMountProcess, mountId, mountType, readState, removeState, runPaths, writeState } from './runtime.ts'
import { querySocket, readStatsFile, StatsServer, writeStatsFile, type MountStats } from './stats.ts'

export { MOUNT_COMMAND, UMOUNT_COMMAND, MOUNT_DEFAULTS, mountOptionsFrom, umountOptionsFrom, type MountCliOptions, type UmountCliOptions } from './config.ts'
export { prometheusText, type MountStats, type ReadStats, type PrefetchStats } from './stats.ts'
export { accessLogPath, loadAccessLog } from './access-log.ts'
export { mountId, runPaths, readState, type MountState } from './runtime.ts'

export interface MountOptions {
  /** Lazy image reference, `host[:port]/repo:tag` or `…@sha256:…`. */
  ref: string
  mountpoint: string
  cacheDir: string
  plainHttp?: boolean
  /** dfdaemon local API URL; undefined: registry only. */
  daemon?: string
  /** Background prefetch (prefetch table, recorded access order); default true. */
  prefetch?: boolean
  readTimeoutMs?: number
  attemptTimeoutMs?: number
  retries?: number
  memoryCacheBytes?: number
  diskCacheBytes?: number
  windowBytes?: number
  concurrency?: number
  prefetchConcurrency?: number
  runDir?: string
  allowOther?: boolean
  /** Registry Authorization value; default from NAIAD_REGISTRY_AUTH. */
  auth?: string
  logger?: Logger
}

export interface MountHandle {
  readonly mountpoint: string
  readonly ref: string
  /** Digest of the lazy image's manifest. */
  readonly imageDigest: string
  /** Path of the stats socket. */
  readonly socket: string
  stats(): MountStats
  /** Resolves once background prefetch has gone through its list (at once when off). */
  readonly prefetched: Promise<void>
  /** Unmounts: pending reads get EIO, stats and access log are written, the mount goes away. */
  close(): Promise<void>
}

function positiveOr(v: number | undefined, d: number): number {
  return v !== undefined && Number.isFinite(v) && v > 0 ? v : d
}

export async function mountImage(options: MountOptions): Promise<MountHandle> {
  const logger = options.logger ?? createLogger('nydus-fs', 'info')
  const log = logger.child({ module: 'mount' })
  const ref = parseRef(options.ref)
  const mountpoint = resolve(options.mountpoint)
  const cacheDir = resolve(options.cacheDir)
  const runDir = resolve(options.runDir ?? MOUNT_DEFAULTS.runDir)
  const readTimeoutMs = positiveOr(options.readTimeoutMs, parseDuration(MOUNT_DEFAULTS.readTimeout))
  const attemptTimeoutMs = Math.min(readTimeoutMs, positiveOr(options.attemptTimeoutMs, parseDuration(MOUNT_DEFAULTS.attemptTimeout)))
  const startedAt = new Date()

  const previous = await readState(runDir, mountpoint)
  if (previous !== undefined && previous.pid !== process.pid && await isMountProcess(previous.pid, mountpoint)) {
    throw new NaiadError('NFS_ERR_MOUNT', `${mountpoint} is already mounted by nydus-fs (pid ${previous.pid}); unmount it first`)
  }

  const client = new RegistryClient(ref.registry, { plainHttp: options.plainHttp ?? false, auth: options.auth, timeoutMs: attemptTimeoutMs })
  const controller = new AbortController()
  const cleanups: Array<() => Promise<void>> = [() => client.close()]
  const cleanup = async (): Promise<void> => {
    for (const c of cleanups.reverse()) await c().catch(() => {})
  }
  try {
    const image = await loadLazyImage(client, ref, { signal: AbortSignal.timeout(Math.max(readTimeoutMs, 60_000)) })
    const b = image.bootstrap
    const bootstrapBytes = image.manifest.layers.find((l) => l.digest === image.bootstrapDigest)?.size ?? 0
    const dataBytes = image.blobs.reduce((n, x) => n + x.size, 0)
    log.info({ ref: options.ref, digest: image.digest, inodes: b.inodes.length, chunks: b.chunks.length, dataBytes }, 'bootstrap verified')

    const cache = new ChunkCache({
      memoryBytes: positiveOr(options.memoryCacheBytes, 256 * 1024 * 1024),
      diskDir: join(cacheDir, 'chunks'),
      diskBytes: positiveOr(options.diskCacheBytes, 10 * 1024 * 1024 * 1024)
    })
    const sources: BlobSource[] = []
    let daemon: DaemonSource | undefined
    if (options.daemon !== undefined && options.daemon !== '') {
      daemon = new DaemonSource({
        daemonUrl: options.daemon, client, repository: ref.repository,
        windowBytes: positiveOr(options.windowBytes, 1024 * 1024), timeoutMs: attemptTimeoutMs
      })
      cleanups.push(() => daemon!.close())
      sources.push(daemon)
    }
    sources.push(new RegistrySource(client, ref.repository))
    const fetcher = new ChunkFetcher({
      bootstrap: b, cache, sources, signal: controller.signal,
      onEvent: (e) => {
        if (e.type === 'failed') log.warn({ source: e.source, code: e.code, err: e.message }, 'chunk fetch failed')
        else if (e.type === 'digest') log.error({ source: e.source, chunk: e.chunk }, 'chunk does not match its digest')
      }
    }, {
      timeoutMs: readTimeoutMs,
      attemptTimeoutMs,
      ...(options.retries !== undefined ? { retries: options.retries } : {}),
      ...(options.concurrency !== undefined ? { concurrency: options.concurrency } : {}),
      ...(options.prefetchConcurrency !== undefined ? { prefetchConcurrency: options.prefetchConcurrency } : {})
    })

    const accessFile = accessLogPath(cacheDir, image.digest)
    const recorded = await loadAccessLog(accessFile)
    const recorder = recorded === undefined ? new AccessRecorder(accessFile, image.digest) : undefined
    const prefetchOn = options.prefetch !== false
    const prefetchFiles = prefetchOn
      ? [...b.prefetch, ...(recorded ?? []).map((p) => lookupPath(b, p)).filter((ino): ino is number => ino !== undefined)]
      : []
    const prefetcher = new Prefetcher({
      bootstrap: b, fetcher, signal: controller.signal,
      onError: (err) => log.debug({ err: (err as Error).message }, 'prefetch batch failed')
    }, prefetchFiles, recorded === undefined ? 'recording' : 'replayed')
    prefetcher.stats.enabled = prefetchOn

    const fs = new LazyFs({ bootstrap: b, fetcher, recorder, logger: log }, { readTimeoutMs })
    const paths = runPaths(runDir, mountpoint)
    const statsFile = join(cacheDir, 'stats', `${mountId(mountpoint)}.json`)
    const files = b.inodes.reduce((n, i) => n + (i.type === 'file' ? 1 : 0), 0)
    const snapshot = (): MountStats => {
      const f = fetcher.stats
      return {
        ref: options.ref,
        imageDigest: image.digest,
        mountpoint,
        pid: process.pid,
        startedAt: startedAt.toISOString(),
        uptimeSec: Math.round((Date.now() - startedAt.getTime()) / 1000),
        image: { dataBytes, bootstrapBytes, blobs: image.blobs.length, chunks: b.chunks.length, inodes: b.inodes.length, files },
        bootstrapFetchedBytes: bootstrapBytes,
        fetch: { ...f, bytesBySource: { ...f.bytesBySource }, ...(daemon !== undefined ? { daemon: { ...daemon.stats } } : {}) },
        cache: cache.stats(),
        reads: fs.readStats(),
        prefetch: { ...prefetcher.stats },
        fetchedFraction: (bootstrapBytes + f.bytes) / Math.max(1, bootstrapBytes + dataBytes)
      }
    }

    const fuse = await mountFuse(mountpoint, fs.operations(), {
      fsname: options.ref, allowOther: options.allowOther ?? process.getuid?.() === 0, readTimeoutMs,
      cacheTimeoutSec: MOUNT_DEFAULTS.kernelCacheTimeoutSec
    })
    cleanups.push(() => unmountFuse(fuse))
    const server = new StatsServer(paths.socket, snapshot)
    await server.listen()
    cleanups.push(() => server.close())
    await writeState(runDir, {
      pid: process.pid, mountpoint, ref: options.ref, imageDigest: image.digest, socket: paths.socket, statsFile, cacheDir,
      startedAt: startedAt.toISOString()
    })
    cleanups.push(() => removeState(runDir, mountpoint, process.pid))
    const statsTimer = setInterval(() => { void writeStatsFile(statsFile, snapshot()).catch(() => {}) }, parseDuration(MOUNT_DEFAULTS.statsInterval))
    statsTimer.unref()
    if (prefetchOn) prefetcher.start()
    log.info({ mountpoint, prefetchFiles: prefetcher.stats.files, accessLog: prefetcher.stats.accessLog, daemon: options.daemon ?? null }, 'mounted')

    let closing: Promise<void> | undefined
    return {
      mountpoint,
      ref: options.ref,
      imageDigest: image.digest,
      socket: paths.socket,
      stats: snapshot,
      prefetched: prefetcher.done,
      close: () => {
        closing ??= (async () => {
          fs.closing = true
          controller.abort(new NaiadError('NFS_ERR_MOUNT', 'the mount is closing'))
          // Let the aborted reads answer EIO before the file system goes away.
          await new Promise((r) => setImmediate(r))
          clearInterval(statsTimer)
          await recorder?.flush()
          await prefetcher.done.catch(() => {})
          await cache.close()
          await writeStatsFile(statsFile, snapshot()).catch(() => {})
          await cleanup()
          log.info({ mountpoint }, 'unmounted')
        })()
        return closing
      }
    }
  } catch (err) {
    controller.abort()
    await cleanup()
    throw err
  }
}

/**
 * The `mount` command. Without `foreground` it starts itself again detached (`args`: the
 * command line to repeat, default this process's) and returns once the mount is ready.
 */
export async function runMount(options: MountCliOptions, args: string[] = process.argv.slice(1)): Promise<number> {
  if (!options.foreground) return mountInBackground(options, args)
  const logger = createLogger('nydus-fs', options.logLevel)
  let handle: MountHandle
  try {
    handle = await mountImage({ ...options, logger })
  } catch (err) {
    const e = err instanceof NaiadError ? err : new NaiadError('NFS_ERR_MOUNT', (err as Error).message, { cause: err })
    await reportReady({ error: { code: e.code, message: e.message } })
    throw e
  }
  const stop = new Promise<string>((resolveStop) => {
    process.once('SIGINT', () => resolveStop('SIGINT'))
    process.once('SIGTERM', () => resolveStop('SIGTERM'))
    // Someone ran fusermount -u (or the kernel dropped us): leave as well.
    const watch = setInterval(() => {
      void mountType(handle.mountpoint).then((t) => { if (t !== 'fuse.nydus-fs') resolveStop('unmounted externally') })
    }, 2_000)
    watch.unref()
  })
  await reportReady({ ready: true, pid: process.pid, mountpoint: handle.mountpoint, socket: handle.socket })
  logger.info({ mountpoint: handle.mountpoint, pid: process.pid, socket: handle.socket }, 'nydus-fs mount ready')
  const why = await stop
  logger.info({ why }, 'unmounting')
  await handle.close()
  // The FUSE thread's handles may keep the loop alive after a lazy unmount; do not linger.
  setTimeout(() => process.exit(process.exitCode ?? 0), 1_000).unref()
  return 0
}

/** Unmounts `mountpoint`: asks its mount process to finish (SIGTERM), then makes sure it is gone. */
export async function unmount(mountpoint: string, options: { runDir?: string; timeoutMs?: number } = {}): Promise<void> {
  const mp = resolve(mountpoint)
  const runDir = resolve(options.runDir ?? MOUNT_DEFAULTS.runDir)
  const timeoutMs = options.timeoutMs ?? parseDuration(MOUNT_DEFAULTS.umountTimeout)
  const state = await readState(runDir, mp)
  if (state !== undefined && await isMountProcess(state.pid, mp)) {
    process.kill(state.pid, 'SIGTERM')
    const until = Date.now() + timeoutMs
    while (isAlive(state.pid) && Date.now() < until) await new Promise((r) => setTimeout(r, 50))
    if (isAlive(state.pid)) {
      process.kill(state.pid, 'SIGKILL')
      while (isAlive(state.pid)) await new Promise((r) => setTimeout(r, 50))
    }
  }
  const type = await mountType(mp)
  if (type === 'fuse.nydus-fs' || (state !== undefined && type?.startsWith('fuse') === true)) {
    await detachFuse(mp)
  } else if (state === undefined) {
    throw new NaiadError('NFS_ERR_MOUNT', `${mp} is not a nydus-fs mount`)
  }
  if (state !== undefined) await removeState(runDir, mp, state.pid)
}

export async function runUmount(options: UmountCliOptions): Promise<number> {
  await unmount(options.mountpoint, { runDir: options.runDir, timeoutMs: options.timeoutMs })
  return 0
}

/** Live stats of a running mount (from its socket), else the last stats file it wrote. */
export async function readMountStats(mountpoint: string, options: { runDir?: string } = {}): Promise<MountStats> {
  const runDir = resolve(options.runDir ?? MOUNT_DEFAULTS.runDir)
  const state = await readState(runDir, resolve(mountpoint))
  if (state === undefined) throw new NaiadError('NFS_ERR_MOUNT', `${resolve(mountpoint)} is not a nydus-fs mount (no state in ${runDir})`)
  try {
    return JSON.parse(await querySocket(state.socket, '/stats')) as MountStats
  } catch (err) {
    const last = await readStatsFile(state.statsFile)
    if (last !== undefined) return last
    throw err
  }
}
