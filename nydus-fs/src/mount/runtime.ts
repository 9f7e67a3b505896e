// What a running mount leaves for other processes: a state file per mountpoint in the run
// directory (`<run-dir>/<id>.json`, id = first 16 hex digits of SHA-256 of the absolute
// mountpoint) naming the mount process, its stats socket (`<id>.sock`) and its log
// (`<id>.log`). `umount` finds the process there; tests find the stats socket there.

import { spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises'
import { join, resolve } from 'node:path'

import { NaiadError } from '@naiad/proto/contracts'

export interface MountState {
  pid: number
  mountpoint: string
  ref: string
  imageDigest: string
  /** Unix socket serving GET /stats (JSON) and GET /metrics (Prometheus text). */
  socket: string
  /** Stats JSON rewritten while mounted and on exit. */
  statsFile: string
  cacheDir: string
  startedAt: string
}

export function mountId(mountpoint: string): string {
  return createHash('sha256').update(resolve(mountpoint)).digest('hex').slice(0, 16)
}

export function runPaths(runDir: string, mountpoint: string): { state: string; socket: string; log: string } {
  const id = mountId(mountpoint)
  return { state: join(runDir, `${id}.json`), socket: join(runDir, `${id}.sock`), log: join(runDir, `${id}.log`) }
}

export async function writeState(runDir: string, state: MountState): Promise<void> {
  await mkdir(runDir, { recursive: true, mode: 0o700 })
  const file = runPaths(runDir, state.mountpoint).state
  await writeFile(`${file}.tmp`, JSON.stringify(state, null, 2))
  await rename(`${file}.tmp`, file)
}

export async function readState(runDir: string, mountpoint: string): Promise<MountState | undefined> {
  try {
    return JSON.parse(await readFile(runPaths(runDir, mountpoint).state, 'utf8')) as MountState
  } catch {
    return undefined
  }
}

export async function removeState(runDir: string, mountpoint: string, pid: number): Promise<void> {
  const state = await readState(runDir, mountpoint)
  // Only the owner removes it: a newer mount on the same path may have replaced it.
  if (state !== undefined && state.pid !== pid) return
  const p = runPaths(runDir, mountpoint)
  await rm(p.state, { force: true })
  await rm(p.socket, { force: true })
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/** Whether `pid` is (still) the process that mounted `mountpoint`, not a recycled pid. */
export async function isMountProcess(pid: number, mountpoint: string): Promise<boolean> {
  if (!isAlive(pid)) return false
  try {
    const cmdline = (await readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0')
    return cmdline.some((a) => a !== '' && resolve(a) === resolve(mountpoint))
  } catch {
    // No /proc (or not ours to read): trust the pid.
    return true
  }
}

function unescapeMountinfo(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)))
}

/** The file system type mounted at `mountpoint` (e.g. `fuse`), or undefined when none is. */
export async function mountType(mountpoint: string): Promise<string | undefined> {
  const want = resolve(mountpoint)
  let text: string
  try {
    text = await readFile('/proc/self/mountinfo', 'utf8')
  } catch {
    return undefined
  }
  let type: string | undefined
  for (const line of text.split('\n')) {
    const fields = line.split(' ')
    if (fields.length < 10) continue
    if (unescapeMountinfo(fields[4]) !== want) continue
    const dash = fields.indexOf('-')
    // The last mount on a path is the visible one.
    type = dash >= 0 ? fields[dash + 1] : undefined
  }
  return type
}

/** Detaches a FUSE mount (`fusermount -uz`), without blocking the event loop. */
export function detachFuse(mountpoint: string): Promise<void> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn('fusermount', ['-uz', mountpoint], { stdio: ['ignore', 'ignore', 'pipe'] })
    let err = ''
    child.stderr.on('data', (d: Buffer) => { err += d.toString() })
    child.on('error', (e) => reject(new NaiadError('NFS_ERR_MOUNT', `cannot run fusermount: ${e.message}`, { cause: e })))
    child.on('exit', (code) => code === 0
      ? resolvePromise()
      : reject(new NaiadError('NFS_ERR_MOUNT', `fusermount -uz ${mountpoint} failed: ${err.trim() || `exit ${code}`}`)))
  })
}
