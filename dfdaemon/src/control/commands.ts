// The daemon's built-in control commands: `download` (start or join a task and wait for it)
// and `info` (who this host is).

import { NaiadError } from '@naiad/proto'

import daemonPackage from '../../package.json' with { type: 'json' }

import type { DownloadRequest, TaskManager } from '@naiad/peer'
import type { ControlRegistry } from './control-server.ts'

// Imported, not read from disk, so that the bundled binary (scripts/build.ts) carries it.
export const DAEMON_VERSION: string = daemonPackage.version

const PRIORITIES = new Set(['on-demand', 'preheat', 'prefetch'])

/** Arguments of the `download` command. */
export interface DownloadCommandArgs {
  url: string
  headers?: Record<string, string>
  digest?: string
  range?: string
  filter?: string[]
  priority?: 'on-demand' | 'preheat' | 'prefetch'
}

export interface DownloadCommandResult {
  taskId: string
  contentLength: number
  fromPeers: number
  fromOrigin: number
  cached: boolean
}

export interface InfoCommandResult {
  hostId: string
  hostname: string
  labels: Record<string, string>
  version: string
}

function bad(message: string): NaiadError {
  return new NaiadError('DFD_ERR_BAD_REQUEST', `download command: ${message}`)
}

function optionalString(a: Record<string, unknown>, key: string): string | undefined {
  const v = a[key]
  if (v === undefined || v === null) return undefined
  if (typeof v !== 'string') throw bad(`${key} must be a string`)
  return v
}

/** Checks the shape of `download` arguments; TaskManager.validate checks their values. */
export function parseDownloadArgs(raw: unknown): DownloadRequest & { priority?: DownloadCommandArgs['priority'] } {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw bad('arguments must be an object {url, headers?, digest?, range?, filter?, priority?}')
  const a = raw as Record<string, unknown>
  if (typeof a.url !== 'string' || a.url === '') throw bad('url is required')
  const headers: Record<string, string> = {}
  if (a.headers !== undefined && a.headers !== null) {
    if (typeof a.headers !== 'object' || Array.isArray(a.headers)) throw bad('headers must be an object of name → value')
    for (const [k, v] of Object.entries(a.headers as Record<string, unknown>)) {
      if (typeof v !== 'string') throw bad(`headers.${k} must be a string`)
      headers[k] = v
    }
  }
  let filter: string[] | undefined
  if (a.filter !== undefined && a.filter !== null) {
    if (!Array.isArray(a.filter) || a.filter.some((x) => typeof x !== 'string')) throw bad('filter must be a list of strings')
    filter = a.filter as string[]
  }
  const priority = optionalString(a, 'priority')
  if (priority !== undefined && !PRIORITIES.has(priority)) throw bad(`priority must be one of ${[...PRIORITIES].join(', ')}`)
  return {
    url: a.url, headers, digest: optionalString(a, 'digest'), range: optionalString(a, 'range'), filter,
    ...(priority === undefined ? {} : { priority: priority as DownloadCommandArgs['priority'] })
  }
}

export function registerBuiltinCommands(control: ControlRegistry, components: { tasks: TaskManager; info: () => InfoCommandResult }): void {
  control.handle('download', async (args, signal) => {
    const req = parseDownloadArgs(args)
    // Starts the task or joins the one running; the signal ends only this wait, and the
    // download, which may be shared, keeps filling the cache.
    const r = await components.tasks.download(req, { signal })
    const result: DownloadCommandResult = { taskId: r.taskId, contentLength: r.contentLength, fromPeers: r.fromPeers, fromOrigin: r.fromOrigin, cached: r.cached }
    return result
  })
  control.handle('info', async () => components.info())
}
