// The lazy images the snapshotter serves: one read-only nydus-fs mount per image, shared by
// every container of it (the lower layer of their overlays). Each mount is its own detached
// `nydus-fs mount` process, like any other (state file, log and stats socket in
// `<root>/run`), so it outlives a snapshotter restart and the containers on it keep reading;
// a restarted snapshotter adopts the mounts it finds alive and mounts again those whose
// process is gone. FUSE callbacks also stay off the event loop that answers containerd.
//
// Access order: an image mounted with no access log here or in the registry records one
// (the mount does); once the first container on it has started and the record stopped
// growing, the snapshotter publishes it as a referrer of the lazy manifest
// (access-order.ts). A mount of an image whose order exists in the registry gets it into the
// cache directory first, so the mount prefetches those files from the start.

import { mkdir, readFile, rename, rmdir, stat, writeFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

import { NaiadError, type Logger } from '@naiad/proto/contracts'

import { accessLogPath, loadAccessLog } from '../mount/access-log.ts'
import { daemonize } from '../mount/daemonize.ts'
import { unmount } from '../mount/index.ts'
import { detachFuse, isMountProcess, mountType, readState } from '../mount/runtime.ts'
import { RegistryClient } from '@naiad/oci'
import { OCI_MEDIA_TYPES } from '@naiad/oci'
import { parseRef } from '@naiad/oci'
import { fetchAccessOrder, publishAccessOrder } from './access-order.ts'
import type { SnapshotterOptions } from './config.ts'
import type { SnapshotStore } from './store.ts'

const NYDUS_FS_BIN = fileURLToPath(new URL('../../bin/nydus-fs.ts', import.meta.url))

export interface LazyMountsComponents {
  store: SnapshotStore
  logger: Logger
}

export type LazyMountsOptions = Pick<SnapshotterOptions, 'root' | 'daemon' | 'plainHttp' | 'readTimeoutMs' | 'cacheBytes' |
  'mountTimeoutMs' | 'registryTimeoutMs' | 'accessSettleMs' | 'accessDeadlineMs' | 'logLevel'>

export class LazyMounts {
  readonly runDir: string
  readonly cacheDir: string
  private readonly mountDir: string
  private readonly store: SnapshotStore
  private readonly log: Logger
  private readonly options: LazyMountsOptions
  private readonly clients = new Map<string, RegistryClient>()
  /** Mounts being set up, by image: concurrent unpacks of one image share one mount. */
  private readonly pending = new Map<string, Promise<string>>()
  /** Images this process mounted without an access order: theirs is recorded and published. */
  private readonly recording = new Set<string>()
  private readonly publishing = new Map<string, NodeJS.Timeout>()
  /** Publications under way, for tests and shutdown. */
  readonly published = new Map<string, Promise<boolean>>()

  constructor(components: LazyMountsComponents, options: LazyMountsOptions) {
    this.store = components.store
    this.log = components.logger.child({ module: 'lazy-mounts' })
    this.options = options
    this.runDir = join(options.root, 'run')
    this.cacheDir = join(options.root, 'cache')
    this.mountDir = join(options.root, 'mnt')
  }

  mountpointOf(image: string): string {
    return this.store.lazyImage(image)?.mountpoint ?? join(this.mountDir, image.replace(/^sha256:/, '').slice(0, 16))
  }

  /** Whether the image's mount process is alive and its FUSE mount in place. */
  async isUp(mountpoint: string): Promise<boolean> {
    const state = await readState(this.runDir, mountpoint)
    if (state === undefined || !(await isMountProcess(state.pid, mountpoint))) return false
    return (await mountType(mountpoint)) === 'fuse.nydus-fs'
  }

  /** Mounts the lazy image `image` (at `ref`, pinned by digest) unless it is mounted; its mountpoint. */
  ensure(image: string, ref: string): Promise<string> {
    let p = this.pending.get(image)
    if (p === undefined) {
      p = this.mount(image, ref).finally(() => this.pending.delete(image))
      this.pending.set(image, p)
    }
    return p
  }

  /** At start-up: which recorded mounts are still up (kept), which are gone (mounted again on demand). */
  async adopt(): Promise<{ alive: number; gone: number }> {
    let alive = 0
    let gone = 0
    for (const row of this.store.lazyImages()) {
      if (await this.isUp(row.mountpoint)) alive++
      else gone++
    }
    this.log.info({ alive, gone }, 'lazy mounts found')
    return { alive, gone }
  }

  /** Unmounts the image once no snapshot stands on it any more. */
  async release(image: string): Promise<void> {
    if (this.store.lazyUsers(image) > 0) return
    const row = this.store.lazyImage(image)
    if (row === undefined) return
    this.store.removeLazyImage(image)
    clearTimeout(this.publishing.get(image))
    this.publishing.delete(image)
    this.recording.delete(image)
    try {
      await unmount(row.mountpoint, { runDir: this.runDir })
    } catch (err) {
      if ((await mountType(row.mountpoint)) !== undefined) this.log.warn({ image, err: (err as Error).message }, 'unmount failed')
    }
    await rmdir(row.mountpoint).catch(() => {})
    this.log.info({ image, mountpoint: row.mountpoint }, 'lazy image unmounted: no snapshot uses it')
  }

  /**
   * A container started on the image: once its mount's access record settles, publish it
   * (first run of the image anywhere: nobody had published one when it was mounted).
   */
  noteStart(image: string): void {
    if (!this.recording.has(image) || this.publishing.has(image) || this.published.has(image)) return
    const file = accessLogPath(this.cacheDir, image)
    const started = Date.now()
    const tick = async (): Promise<void> => {
      const st = await stat(file).catch(() => undefined)
      const late = Date.now() - started >= this.options.accessDeadlineMs
      const settled = st !== undefined && Date.now() - st.mtimeMs >= this.options.accessSettleMs
      if (!settled && !late) {
        this.publishing.set(image, setTimeout(() => { void tick() }, 1000).unref())
        return
      }
      this.publishing.delete(image)
      this.recording.delete(image)
      if (st === undefined) {
        this.log.info({ image }, 'no access order was recorded; nothing to publish')
        return
      }
      this.published.set(image, this.publish(image, file))
    }
    this.publishing.set(image, setTimeout(() => { void tick() }, 1000).unref())
  }

  async close(): Promise<void> {
    for (const t of this.publishing.values()) clearTimeout(t)
    this.publishing.clear()
    await Promise.allSettled(this.published.values())
    for (const c of this.clients.values()) await c.close().catch(() => {})
  }

  private client(registry: string): RegistryClient {
    let c = this.clients.get(registry)
    if (c === undefined) {
      c = new RegistryClient(registry, { plainHttp: this.options.plainHttp, timeoutMs: this.options.registryTimeoutMs })
      this.clients.set(registry, c)
    }
    return c
  }

  private async mount(image: string, ref: string): Promise<string> {
    const mountpoint = this.mountpointOf(image)
    if (await this.isUp(mountpoint)) {
      if (this.store.lazyImage(image) === undefined) this.store.putLazyImage({ image, ref, mountpoint })
      return mountpoint
    }
    // A mount whose process died leaves a dead FUSE mount (reads fail with ENOTCONN): detach it.
    if ((await mountType(mountpoint))?.startsWith('fuse') === true) await detachFuse(mountpoint).catch(() => {})
    await mkdir(mountpoint, { recursive: true })
    const recorded = await this.importAccessOrder(image, ref)
    const o = this.options
    const args = [
      NYDUS_FS_BIN, 'mount', ref, mountpoint,
      '--cache-dir', this.cacheDir,
      '--daemon', o.daemon ?? 'none',
      '--read-timeout', `${o.readTimeoutMs}ms`,
      '--disk-cache', String(o.cacheBytes),
      '--log-level', o.logLevel,
      ...(o.plainHttp ? ['--plain-http'] : [])
    ]
    const t0 = Date.now()
    try {
      await daemonize({ mountpoint, runDir: this.runDir, args, readyTimeoutMs: o.mountTimeoutMs, env: { NAIAD_RUN_DIR: this.runDir } })
    } catch (err) {
      await rmdir(mountpoint).catch(() => {})
      throw err instanceof NaiadError ? err : new NaiadError('NFS_ERR_MOUNT', `cannot mount ${ref}: ${(err as Error).message}`, { cause: err })
    }
    this.store.putLazyImage({ image, ref, mountpoint })
    if (!recorded) this.recording.add(image)
    this.log.info({ image, ref, mountpoint, ms: Date.now() - t0, accessOrder: recorded ? 'replayed' : 'recording' }, 'lazy image mounted')
    return mountpoint
  }

  /** Puts the registry's access order of the image in the cache directory, unless one is there; whether one is. */
  private async importAccessOrder(image: string, ref: string): Promise<boolean> {
    const file = accessLogPath(this.cacheDir, image)
    if (await loadAccessLog(file) !== undefined) return true
    const r = parseRef(ref)
    try {
      const body = await fetchAccessOrder(this.client(r.registry), r.repository, image, AbortSignal.timeout(this.options.registryTimeoutMs))
      if (body === undefined) return false
      await mkdir(dirname(file), { recursive: true })
      await writeFile(`${file}.tmp`, body)
      await rename(`${file}.tmp`, file)
      this.log.info({ image, bytes: body.length }, 'access order from the registry: the mount prefetches it')
      return true
    } catch (err) {
      this.log.warn({ image, err: (err as Error).message }, 'cannot read the access order from the registry; the mount records its own')
      return false
    }
  }

  private async publish(image: string, file: string): Promise<boolean> {
    const row = this.store.lazyImage(image)
    if (row === undefined) return false
    const r = parseRef(row.ref)
    const client = this.client(r.registry)
    const signal = AbortSignal.timeout(this.options.registryTimeoutMs * 4)
    try {
      const body = await readFile(file)
      const manifest = await client.getManifest(r.repository, image, [OCI_MEDIA_TYPES.manifest], signal)
      const done = await publishAccessOrder(client, r.repository, { mediaType: OCI_MEDIA_TYPES.manifest, digest: image, size: manifest.body.length }, body, signal)
      this.log.info({ image, files: (JSON.parse(body.toString('utf8')) as { files: unknown[] }).files.length, published: done }, done ? 'access order published to the registry' : 'an access order was in the registry already')
      return done
    } catch (err) {
      this.log.warn({ image, err: (err as Error).message }, 'cannot publish the access order (registry read-only for this node?); it stays local')
      return false
    }
  }
}
