// A registry, a counting proxy in front of it, a supernode and daemons whose mirrors point
// at the proxy: the setup of every registry-mirror test.

import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { startDaemon, startSupernode, type DaemonHandle, type SupernodeHandle } from './processes.ts'
import { CountingProxy, startRegistry, type RegistryHandle } from './registry.ts'

export interface MirrorCluster {
  dir: string
  registry: RegistryHandle
  proxy: CountingProxy
  supernode: SupernodeHandle
  daemons: DaemonHandle[]
  /** Arguments that point a daemon's mirror at the proxy. */
  daemonArgs: string[]
  stop(): Promise<void>
}

export async function startMirrorCluster(name: string, options: { daemons: number; htpasswd?: (dir: string) => Promise<string> }): Promise<MirrorCluster> {
  const dir = await mkdtemp(join(tmpdir(), `naiad-${name}-`))
  const registry = await startRegistry(join(dir, 'registry'), { htpasswd: options.htpasswd === undefined ? undefined : await options.htpasswd(dir) })
  const proxy = await new CountingProxy(registry.url).start()
  const supernode = await startSupernode(join(dir, 'sn'))
  const daemonArgs = ['--insecure-registry', proxy.host, '--default-registry', proxy.url]
  const daemons = await Promise.all(Array.from({ length: options.daemons }, (_, i) => startDaemon(join(dir, `d${i + 1}`), supernode.url, { args: daemonArgs })))
  return {
    dir, registry, proxy, supernode, daemons, daemonArgs,
    stop: async () => {
      await Promise.all(daemons.map((d) => d.process.stop()))
      await supernode.process.stop()
      await proxy.stop()
      await registry.stop()
      await rm(dir, { recursive: true, force: true })
    }
  }
}
