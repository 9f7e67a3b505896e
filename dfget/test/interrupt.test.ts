// dfget and the daemon going away from each other mid-download. Ctrl-C on dfget takes its
// interest with it: the daemon stops fetching a task nobody else waits for, and goes on
// with one that another dfget or a mirror client still waits for. A daemon killed under
// dfget is exit 3 ("the daemon broke off"), never 130, and leaves no file behind.
//
// The supernode runs without a seed, so the daemon is the only one fetching from the origin
// and the origin's byte count shows exactly what the daemon does. The origin sends slowly
// (a throttle the tests lift when they want a download to end).

import { spawn, type ChildProcess } from 'node:child_process'
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { taskIdOf } from '@naiad/proto/contracts'
import {
  BINS, getJson, makeBlob, sha256Hex, startDaemon, startSupernode, TestOrigin, waitFor,
  type DaemonHandle, type SupernodeHandle
} from '@naiad/testkit'

import { EXIT } from '../src/index.ts'
import { leftovers, lines } from './fixtures.ts'

const MiB = 1024 * 1024
/** Slow enough that no download here ends before the test lets it. */
const SLOW = 128 * 1024

interface TaskView { running: boolean; clients: number; complete?: boolean }

interface Dfget {
  child: ChildProcess
  exited: Promise<number | null>
  stderr: () => string
}

function dfget(args: string[]): Dfget {
  const child = spawn(process.execPath, [BINS.dfget, ...args], { stdio: ['ignore', 'ignore', 'pipe'] })
  let stderr = ''
  child.stderr!.on('data', (d: Buffer) => { stderr += d.toString() })
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
  return { child, exited, stderr: () => stderr }
}

describe('dfget interrupted, and its daemon gone', () => {
  let dir: string
  let origin: TestOrigin
  let sn: SupernodeHandle
  let daemon: DaemonHandle
  let n = 0

  const outDir = async (): Promise<string> => {
    const d = join(dir, 'out', String(++n))
    await mkdir(d, { recursive: true })
    return d
  }
  const task = (url: string, digest?: string): Promise<TaskView> => getJson<TaskView>(`${daemon.apiUrl}/api/v1/tasks/${taskIdOf({ url, digest })}`)
  /** The origin's byte count once it has not moved for a second (at most 20 s). */
  const settled = async (path: string): Promise<number> => {
    let last = -1
    await waitFor(async () => {
      const now = origin.bytesServed(path)
      if (now === last) return true
      last = now
      await new Promise((r) => setTimeout(r, 1000))
      return false
    }, 20_000, `the origin to stop sending ${path}`)
    return last
  }

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'dfget-interrupt-'))
    origin = await new TestOrigin().start()
    sn = await startSupernode(join(dir, 'sn'), { args: ['--no-seed'] })
    daemon = await startDaemon(join(dir, 'd1'), sn.url, { args: ['--insecure-registry', new URL(origin.url).host] })
  })

  afterAll(async () => {
    await daemon?.process.stop()
    await sn?.process.stop()
    await origin?.stop()
    await rm(dir, { recursive: true, force: true })
  })

  it('Ctrl-C cancels the download nobody else waits for: the daemon stops fetching', async () => {
    const size = 16 * MiB
    origin.files.set('/alone', { data: makeBlob(size, 'alone') })
    origin.faults.set('/alone', { bytesPerSec: SLOW })
    const out = await outDir()
    const url = `${origin.url}/alone`
    const a = dfget([url, '-O', join(out, 'f'), '--daemon', daemon.apiUrl])
    await waitFor(() => origin.bytesServed('/alone') >= 64 * 1024, 30_000, 'the daemon to start fetching')
    expect((await task(url)).clients).toBe(1)
    a.child.kill('SIGINT')
    expect(await a.exited).toBe(EXIT.SIGINT)
    expect(lines(a.stderr())).toEqual(['dfget: interrupted by SIGINT [PROTO_ERR_ABORTED]'])
    expect(await leftovers(out)).toEqual([])
    const stopped = await settled('/alone')
    // Lifting the throttle would let a download still running finish in well under a second.
    origin.faults.delete('/alone')
    await new Promise((r) => setTimeout(r, 1500))
    expect(origin.bytesServed('/alone')).toBe(stopped)
    expect(stopped).toBeLessThan(size / 2)
    const t = await task(url)
    expect({ running: t.running, complete: t.complete === true }).toEqual({ running: false, complete: false })
  })

  it('Ctrl-C on one dfget leaves the download to a second dfget waiting for it, which gets the right bytes', async () => {
    const data = makeBlob(8 * MiB, 'shared')
    origin.files.set('/shared', { data })
    origin.faults.set('/shared', { bytesPerSec: SLOW })
    const out = await outDir()
    const url = `${origin.url}/shared`
    const a = dfget([url, '-O', join(out, 'a'), '--daemon', daemon.apiUrl])
    const b = dfget([url, '-O', join(out, 'b'), '--daemon', daemon.apiUrl])
    await waitFor(async () => (await task(url)).clients === 2, 30_000, 'both dfgets to wait for the task')
    a.child.kill('SIGINT')
    expect(await a.exited).toBe(EXIT.SIGINT)
    await waitFor(async () => (await task(url)).clients === 1, 10_000, 'the first dfget to let go')
    const before = origin.bytesServed('/shared')
    await waitFor(() => origin.bytesServed('/shared') > before, 10_000, 'the daemon to go on fetching')
    origin.faults.delete('/shared')
    expect(await b.exited, b.stderr()).toBe(EXIT.OK)
    expect(sha256Hex(await readFile(join(out, 'b')))).toBe(sha256Hex(data))
    expect(await leftovers(out)).toEqual(['b'])
  })

  it('Ctrl-C on dfget leaves the download to a mirror client waiting for the same blob', async () => {
    const data = makeBlob(8 * MiB, 'mirror-blob')
    const digest = `sha256:${sha256Hex(data)}`
    const path = `/v2/app/blobs/${digest}`
    origin.files.set(path, { data })
    origin.faults.set(path, { bytesPerSec: SLOW })
    const out = await outDir()
    // The mirror's task for this blob is the registry URL with its digest: dfget asks for the same one.
    const url = `${origin.url}${path}`
    const pull = fetch(`${daemon.proxyUrl}${path}?ns=${new URL(origin.url).host}`).then(async (r) => ({ status: r.status, body: Buffer.from(await r.arrayBuffer()) }))
    await waitFor(async () => (await task(url, digest)).clients === 1, 30_000, 'the mirror to start the blob')
    const a = dfget([url, '-O', join(out, 'f'), '--digest', digest, '--daemon', daemon.apiUrl])
    await waitFor(async () => (await task(url, digest)).clients === 2, 30_000, 'dfget to join the mirror download')
    a.child.kill('SIGINT')
    expect(await a.exited).toBe(EXIT.SIGINT)
    await waitFor(async () => (await task(url, digest)).clients === 1, 10_000, 'dfget to let go')
    origin.faults.delete(path)
    const got = await pull
    expect(got.status).toBe(200)
    expect(sha256Hex(got.body)).toBe(sha256Hex(data))
    expect(await leftovers(out)).toEqual([])
  })

  // Last: they stop the daemon (the first one, then a fresh one).
  for (const signal of ['SIGTERM', 'SIGKILL'] as const) {
    it(`the daemon stopped under a download (${signal}): exit 3, one line, no file`, async () => {
      if (daemon.process.proc.exitCode !== null || daemon.process.proc.signalCode !== null) daemon = await startDaemon(join(dir, `d-${signal}`), sn.url)
      const path = `/stopped-${signal}`
      origin.files.set(path, { data: makeBlob(16 * MiB, path) })
      origin.faults.set(path, { bytesPerSec: SLOW })
      const out = await outDir()
      const a = dfget([`${origin.url}${path}`, '-O', join(out, 'f'), '--daemon', daemon.apiUrl])
      await waitFor(() => origin.bytesServed(path) >= 64 * 1024, 30_000, 'the daemon to start fetching')
      await daemon.process.kill(signal)
      expect(await a.exited, a.stderr()).toBe(EXIT.DAEMON)
      const errLines = lines(a.stderr())
      expect(errLines, a.stderr()).toHaveLength(1)
      expect(errLines[0]).toMatch(/^dfget: .*daemon.* \[DFGET_ERR_DAEMON_UNREACHABLE\]$/)
      expect(await leftovers(out)).toEqual([])
    })
  }
})
