// `nydus-fs mount` without --foreground: start the same command again, detached, with
// --foreground, and return once it reports the mount ready (or why it failed). The child
// reports on an extra pipe (fd 3, named by NAIAD_NYDUS_READY_FD) one JSON line:
//   {"ready":true,"pid":…,"mountpoint":…,"socket":…}  or  {"error":{"code":…,"message":…}}
// Its logs go to `<run-dir>/<id>.log`.

import { spawn } from 'node:child_process'
import { close, write } from 'node:fs'
import { mkdir, open, readFile } from 'node:fs/promises'
import type { Readable } from 'node:stream'
import { createInterface } from 'node:readline'

import { NaiadError, isErrorCode, parseDuration } from '@naiad/proto/contracts'

import { MOUNT_DEFAULTS, type MountCliOptions } from './config.ts'
import { runPaths } from './runtime.ts'

export const READY_FD_ENV = 'NAIAD_NYDUS_READY_FD'

export type ReadyMessage =
  | { ready: true; pid: number; mountpoint: string; socket: string }
  | { error: { code: string; message: string } }

export interface DaemonizeOptions {
  mountpoint: string
  runDir: string
  /** The command line to run again (without the node binary), e.g. [bin, 'mount', ref, mnt, ...]. */
  args: string[]
  readyTimeoutMs: number
  /** Variables added to this process's environment for the mount process. */
  env?: Record<string, string>
}

/** Starts the detached mount process; resolves its pid once the mount is ready. */
export async function daemonize(options: DaemonizeOptions): Promise<{ pid: number; logFile: string }> {
  await mkdir(options.runDir, { recursive: true, mode: 0o700 })
  const logFile = runPaths(options.runDir, options.mountpoint).log
  const log = await open(logFile, 'a')
  const child = spawn(process.execPath, [...process.execArgv, ...options.args, '--foreground'], {
    detached: true,
    stdio: ['ignore', log.fd, log.fd, 'pipe'],
    env: { ...process.env, ...options.env, [READY_FD_ENV]: '3' }
  })
  await log.close()
  const pipe = child.stdio[3] as Readable
  const lines = createInterface({ input: pipe })
  try {
    const msg = await new Promise<ReadyMessage>((resolve, reject) => {
      const timer = setTimeout(() => {
        child.kill('SIGKILL')
        reject(new NaiadError('NFS_ERR_MOUNT', `the mount did not become ready within ${options.readyTimeoutMs} ms (log: ${logFile})`))
      }, options.readyTimeoutMs)
      lines.once('line', (line) => {
        clearTimeout(timer)
        try {
          resolve(JSON.parse(line) as ReadyMessage)
        } catch {
          reject(new NaiadError('NFS_ERR_MOUNT', `the mount process said something unexpected: ${line.slice(0, 200)}`))
        }
      })
      child.once('error', (err) => { clearTimeout(timer); reject(new NaiadError('NFS_ERR_MOUNT', `cannot start the mount process: ${err.message}`, { cause: err })) })
      child.once('exit', (code, signal) => {
        clearTimeout(timer)
        // A ready line may still be on its way; give it the turn.
        setImmediate(() => {
          void readFile(logFile, 'utf8').catch(() => '').then((text) => {
            const tail = text.trim().split('\n').slice(-5).join('\n')
            reject(new NaiadError('NFS_ERR_MOUNT', `the mount process exited (${signal ?? `code ${code}`}) before the mount was ready${tail === '' ? '' : `:\n${tail}`}`))
          })
        })
      })
    })
    if ('error' in msg) {
      throw new NaiadError(isErrorCode(msg.error.code) ? msg.error.code : 'NFS_ERR_MOUNT', msg.error.message)
    }
    child.unref()
    return { pid: msg.pid, logFile }
  } finally {
    lines.close()
    pipe.destroy()
  }
}

/**
 * `mount` without --foreground: runs the same command line again, detached, and returns 0
 * once that mount is ready. This module loads none of the mount itself, so the command's
 * start-up (module loading, fuse-native) is paid once, by the child.
 */
export async function mountInBackground(options: MountCliOptions, args: string[] = process.argv.slice(1)): Promise<number> {
  await daemonize({ mountpoint: options.mountpoint, runDir: options.runDir, args, readyTimeoutMs: parseDuration(MOUNT_DEFAULTS.readyTimeout) })
  return 0
}

/** In the child: tells the waiting parent the outcome, once, then closes the pipe. */
export async function reportReady(msg: ReadyMessage): Promise<void> {
  const raw = process.env[READY_FD_ENV]
  if (raw === undefined) return
  delete process.env[READY_FD_ENV]
  const fd = Number(raw)
  if (!Number.isInteger(fd) || fd < 3) return
  await new Promise<void>((resolve) => {
    write(fd, `${JSON.stringify(msg)}\n`, () => close(fd, () => resolve()))
  })
}
