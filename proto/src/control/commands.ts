// The control service's commands (`/naiad/control/1.0.0`, supernode → daemon) as one typed
// map: the supernode's `send('download', args)` and the daemon's `handle('download', fn)`
// both take their argument and result types from here, and the daemon checks arguments
// with the parser below before its handler runs. A plugin that adds a command declares it
// by merging into ControlCommands:
//
//   declare module '@naiad/proto' {
//     interface ControlCommands { 'my.command': { args: { n: number }; result: { ok: boolean } } }
//   }

import { NaiadError } from '../errors.ts'
import { isPriority, PRIORITIES, type Priority } from '../task/priority.ts'

/** Arguments of `download`: start or join a task on the daemon and wait for it. */
export interface DownloadCommandArgs {
  url: string
  headers?: Record<string, string>
  digest?: string
  range?: string
  filter?: string[]
  priority?: Priority
}

export interface DownloadCommandResult {
  taskId: string
  contentLength: number
  fromPeers: number
  fromOrigin: number
  cached: boolean
}

/** `info`: who the host is. */
export interface InfoCommandResult {
  hostId: string
  hostname: string
  labels: Record<string, string>
  version: string
}

/** `heal` (the health plugin): the daemon re-verified its cache and dropped what was bad. */
export interface HealCommandResult {
  tasks: number
  pieces: number
  badPieces: number
  dropped: string[]
  durationMs: number
}

export interface ControlCommands {
  download: { args: DownloadCommandArgs; result: DownloadCommandResult }
  info: { args: undefined; result: InfoCommandResult }
  /** The supernode revoked nodes: refuse them from now on. */
  'membership.revoke': { args: { peers: string[] }; result: { revoked: number } }
  heal: { args: Record<string, never>; result: HealCommandResult }
}

export type ControlCommandName = keyof ControlCommands
export type ControlArgs<K extends ControlCommandName> = ControlCommands[K]['args']
export type ControlResult<K extends ControlCommandName> = ControlCommands[K]['result']

function bad(command: string, message: string): NaiadError {
  return new NaiadError('DFD_ERR_BAD_REQUEST', `${command} command: ${message}`)
}

function object(command: string, raw: unknown, shape: string): Record<string, unknown> {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw bad(command, `arguments must be an object ${shape}`)
  return raw as Record<string, unknown>
}

function optionalString(command: string, a: Record<string, unknown>, key: string): string | undefined {
  const v = a[key]
  if (v === undefined || v === null) return undefined
  if (typeof v !== 'string') throw bad(command, `${key} must be a string`)
  return v
}

/** Checks the shape of `download` arguments (the daemon's task manager checks their values). */
export function parseDownloadArgs(raw: unknown): DownloadCommandArgs {
  const a = object('download', raw, '{url, headers?, digest?, range?, filter?, priority?}')
  if (typeof a.url !== 'string' || a.url === '') throw bad('download', 'url is required')
  const headers: Record<string, string> = {}
  if (a.headers !== undefined && a.headers !== null) {
    if (typeof a.headers !== 'object' || Array.isArray(a.headers)) throw bad('download', 'headers must be an object of name → value')
    for (const [k, v] of Object.entries(a.headers as Record<string, unknown>)) {
      if (typeof v !== 'string') throw bad('download', `headers.${k} must be a string`)
      headers[k] = v
    }
  }
  let filter: string[] | undefined
  if (a.filter !== undefined && a.filter !== null) {
    if (!Array.isArray(a.filter) || a.filter.some((x) => typeof x !== 'string')) throw bad('download', 'filter must be a list of strings')
    filter = a.filter as string[]
  }
  const priority = optionalString('download', a, 'priority')
  if (priority !== undefined && !isPriority(priority)) throw bad('download', `priority must be one of ${PRIORITIES.join(', ')}`)
  return {
    url: a.url, headers, digest: optionalString('download', a, 'digest'), range: optionalString('download', a, 'range'), filter,
    ...(priority === undefined ? {} : { priority })
  }
}

/** Argument parsers of the core's commands; a plugin's own command brings its parser to `handle`. */
export const CONTROL_ARGS: { readonly [K in ControlCommandName]?: (raw: unknown) => ControlArgs<K> } = {
  download: parseDownloadArgs,
  info: () => undefined,
  'membership.revoke': (raw) => {
    const peers = object('membership.revoke', raw, '{peers: [peer ID, …]}').peers
    if (!Array.isArray(peers) || peers.some((p) => typeof p !== 'string')) throw bad('membership.revoke', '{peers: [peer ID, …]}')
    return { peers: peers as string[] }
  },
  heal: () => ({})
}
