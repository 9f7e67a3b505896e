// Fixtures for dfget's tests: a real supernode + dfdaemon pair with a TestOrigin, and a
// scratch directory whose contents tell whether dfget left anything behind.

import { mkdir, mkdtemp, readdir, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { startDaemon, startSupernode, TestOrigin, type DaemonHandle, type SupernodeHandle } from '@naiad/testkit'

export interface Cluster {
  dir: string
  origin: TestOrigin
  supernode: SupernodeHandle
  daemon: DaemonHandle
  /** A fresh, empty directory for one test's output. */
  outDir(name: string): Promise<string>
  stop(): Promise<void>
}

export async function startCluster(prefix: string): Promise<Cluster> {
  const dir = await mkdtemp(join(tmpdir(), `${prefix}-`))
  const origin = await new TestOrigin().start()
  let supernode: SupernodeHandle | undefined
  try {
    supernode = await startSupernode(join(dir, 'sn'))
    const daemon = await startDaemon(join(dir, 'd1'), supernode.url)
    return {
      dir,
      origin,
      supernode,
      daemon,
      async outDir(name) {
        const d = join(dir, 'out', name)
        await mkdir(d, { recursive: true })
        return d
      },
      async stop() {
        await daemon.process.stop()
        await supernode?.process.stop()
        await origin.stop()
        await rm(dir, { recursive: true, force: true })
      }
    }
  } catch (err) {
    await supernode?.process.stop()
    await origin.stop()
    await rm(dir, { recursive: true, force: true })
    throw err
  }
}

/** Names in `dir`; a failed dfget must leave it empty (no FILE, no temporary file). */
export async function leftovers(dir: string): Promise<string[]> {
  return (await readdir(dir)).sort()
}

/** Lines a command wrote, without the empty one after the final newline. */
export function lines(text: string): string[] {
  return text.split('\n').filter((l) => l !== '')
}
