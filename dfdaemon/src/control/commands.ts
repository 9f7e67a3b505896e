// The daemon's built-in control commands (their arguments and results are proto's
// ControlCommands): `download` (start or join a task and wait for it), `info` (who this host
// is) and, for a cluster member, `membership.revoke`.

import type { InfoCommandResult } from '@naiad/proto'
import type { TaskManager } from '@naiad/peer'

import daemonPackage from '../../package.json' with { type: 'json' }

import type { ControlServer } from './control-server.ts'

// Imported, not read from disk, so that the bundled binary (scripts/build.ts) carries it.
export const DAEMON_VERSION: string = daemonPackage.version

export function registerBuiltinCommands(control: ControlServer, components: { tasks: TaskManager; info: () => InfoCommandResult; revoke?: (peers: string[]) => void }): void {
  control.handle('download', async (args, signal) => {
    // Starts the task or joins the one running; the signal ends only this wait, and the
    // download, which may be shared, keeps filling the cache.
    const r = await components.tasks.download({ ...args, headers: args.headers ?? {} }, { signal })
    return { taskId: r.taskId, contentLength: r.contentLength, fromPeers: r.fromPeers, fromOrigin: r.fromOrigin, cached: r.cached }
  })
  control.handle('info', async () => components.info())
  const revoke = components.revoke
  if (revoke !== undefined) {
    // The supernode tells its daemons at once when it revokes a node (renewals carry the list too).
    control.handle('membership.revoke', async ({ peers }) => {
      revoke(peers)
      return { revoked: peers.length }
    })
  }
}
