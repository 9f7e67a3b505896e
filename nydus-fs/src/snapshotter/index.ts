/**
 * nydus-fs snapshotter: containerd's snapshots service (a proxy plugin of type "snapshot")
 * that starts containers of Naiad lazy images from a nydus-fs mount without downloading or
 * unpacking their layers, and serves every other image like containerd's overlayfs
 * snapshotter.
 *
 * Exported API:
 *
 *   SNAPSHOTTER_COMMAND: CommandSpec               option table of `nydus-fs snapshotter`
 *   snapshotterOptionsFrom(loaded): SnapshotterOptions
 *   createSnapshotter(options): Promise<SnapshotterHandle>   listen on the socket (the library call)
 *   runSnapshotter(options): Promise<number>       the whole command: serve until SIGINT/SIGTERM
 *   containerdConfig({ socket, pluginName }): string
 *
 * @example
 * const s = await createSnapshotter({ ...options, socket: '/run/naiad/snapshotter.sock', root: '/var/lib/naiad/snapshotter' })
 * // containerd: [proxy_plugins.naiad] type = "snapshot", address = "/run/naiad/snapshotter.sock"
 * await s.close()   // lazy mounts stay up for the containers on them
 *
 * State under the root: snapshotter.db (SQLite), snapshots/<id>/{fs,work}, mnt/<image> (lazy
 * mounts), cache/ (their verified chunks and access logs), run/ (mount processes' state,
 * logs and stats sockets).
 */

import { mkdir } from 'node:fs/promises'
import { join } from 'node:path'

import { createLogger, untilSignal, type Logger } from '@naiad/proto/contracts'

import type { SnapshotterOptions } from './config.ts'
import { containerdConfig } from './containerd-config.ts'
import { SnapshotsServer } from './grpc.ts'
import { LazyMounts } from './lazy-mounts.ts'
import { Snapshotter } from './snapshotter.ts'
import { SnapshotStore } from './store.ts'

export { SNAPSHOTTER_COMMAND, SNAPSHOTTER_DEFAULTS, snapshotterOptionsFrom, type SnapshotterOptions } from './config.ts'
export { containerdConfig } from './containerd-config.ts'
export { ACCESS_ORDER_TYPE, fetchAccessOrder } from './access-order.ts'

export interface SnapshotterHandle {
  readonly socket: string
  readonly snapshotter: Snapshotter
  readonly lazy: LazyMounts
  /** Stops serving; lazy mounts and the containers on them are left running. */
  close(): Promise<void>
}

export async function createSnapshotter(options: SnapshotterOptions & { logger?: Logger }): Promise<SnapshotterHandle> {
  const logger = options.logger ?? createLogger('nydus-fs-snapshotter', options.logLevel)
  await mkdir(join(options.root, 'snapshots'), { recursive: true, mode: 0o700 })
  const store = new SnapshotStore(options.root)
  const lazy = new LazyMounts({ store, logger }, options)
  const snapshotter = new Snapshotter({ store, lazy, logger }, options.root)
  const server = new SnapshotsServer(snapshotter, logger)
  try {
    await lazy.adopt()
    await server.listen(options.socket)
  } catch (err) {
    await server.close(0)
    store.close()
    throw err
  }
  logger.info({ socket: options.socket, root: options.root, daemon: options.daemon ?? null }, 'snapshotter ready')
  return {
    socket: options.socket,
    snapshotter,
    lazy,
    close: async () => {
      await server.close()
      await lazy.close()
      store.close()
    }
  }
}

export async function runSnapshotter(options: SnapshotterOptions): Promise<number> {
  if (options.printContainerdConfig) {
    process.stdout.write(containerdConfig(options))
    return 0
  }
  const logger = createLogger('nydus-fs-snapshotter', options.logLevel)
  const handle = await createSnapshotter({ ...options, logger })
  await untilSignal(logger, () => handle.close())
  return 0
}
