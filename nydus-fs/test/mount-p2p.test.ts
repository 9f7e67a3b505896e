// nydus-fs mount with --daemon: lazy reads go through the local dfdaemon in aligned windows,
// so a second node reading the same files gets them from its peers, not the registry; with
// the daemon unreachable, reads fall back to the registry.

import { createHash } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  CountingProxy, makeBlob, REFUSED_URL, makeOciLayer, metric, pushOciImage, startDaemon, startRegistry, startSupernode,
  type DaemonHandle, type RegistryHandle, type SupernodeHandle
} from '@naiad/testkit'

import { openLazy } from './convert-helpers.ts'
import { convert, readFiles, TestMount } from './fixtures/mount-helpers.ts'

const MiB = 1024 * 1024
const sha = (b: Buffer | string): string => createHash('sha256').update(b).digest('hex')
const BIG = makeBlob(6 * MiB + 777, 'p2p-big')
const SMALL = Array.from({ length: 8 }, (_, i) => makeBlob(40 * 1024 + i, `p2p-small-${i}`))

let dir: string
let registry: RegistryHandle
let proxy: CountingProxy
let sn: SupernodeHandle
let daemons: DaemonHandle[]
let ref: string
let blobDigest: string
const mounts: TestMount[] = []

async function mount(name: string, daemon: string): Promise<TestMount> {
  const m = await TestMount.start(ref, join(dir, `mnt-${name}`), { cacheDir: join(dir, `cache-${name}`), runDir: join(dir, 'run'), args: ['--daemon', daemon, '--no-prefetch'] })
  mounts.push(m)
  return m
}

const files = (m: TestMount): string[] => [m.path('big.bin'), ...SMALL.map((_, i) => m.path(`small/${i}.bin`))]
const want = [sha(BIG), ...SMALL.map(sha)]

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'nfs-mount-p2p-'))
  registry = await startRegistry(join(dir, 'registry'))
  proxy = await new CountingProxy(registry.url).start()
  const layer = await makeOciLayer([
    { name: 'big.bin', content: BIG },
    { name: 'small/', type: 'directory' },
    ...SMALL.map((data, i) => ({ name: `small/${i}.bin`, content: data }))
  ])
  await pushOciImage(registry.url, 'src/p2p', 'v1', [layer])
  await convert(`${registry.host}/src/p2p:v1`, `${registry.host}/src/p2p:lazy`)
  ref = `${proxy.host}/src/p2p:lazy`
  const { client, image } = await openLazy(`${registry.host}/src/p2p:lazy`)
  await client.close()
  blobDigest = image.blobs[0].digest
  sn = await startSupernode(join(dir, 'sn'))
  daemons = await Promise.all([1, 2].map((i) => startDaemon(join(dir, `d${i}`), sn.url)))
}, 120_000)

afterAll(async () => {
  for (const m of mounts) await m.cleanup()
  await Promise.all((daemons ?? []).map((d) => d.process.stop()))
  await sn?.process.stop()
  await proxy?.stop()
  await registry?.stop()
  if (dir !== undefined) await rm(dir, { recursive: true, force: true })
})

describe('nydus-fs mount through dfdaemon', () => {
  it('reads through the daemon, and a second node gets the same windows from its peers', async () => {
    const a = await mount('a', daemons[0].apiUrl)
    const readA = await readFiles(files(a))
    expect(readA.map((r) => r.sha256)).toEqual(want)
    const sa = await a.stats()
    expect(sa.fetch.bytesBySource.registry).toBe(0)
    expect(sa.fetch.bytesBySource.daemon).toBe(sa.fetch.bytes)
    expect(sa.fetch.daemon!.windows).toBeGreaterThanOrEqual(7)
    expect(await metric(daemons[0].apiUrl, 'naiad_download_bytes_total')).toBeGreaterThanOrEqual(sa.fetch.bytes)
    const fromRegistry = proxy.bytesServed(blobDigest)
    // Each window came from the registry about once (the seed's copy); nothing else did.
    expect(fromRegistry).toBeGreaterThan(0)
    expect(fromRegistry).toBeLessThanOrEqual(1.25 * sa.fetch.daemon!.windowBytes)

    const b = await mount('b', daemons[1].apiUrl)
    const readB = await readFiles(files(b))
    expect(readB.map((r) => r.sha256)).toEqual(want)
    const sb = await b.stats()
    expect(sb.fetch.bytesBySource.daemon).toBe(sb.fetch.bytes)
    expect(await metric(daemons[1].apiUrl, 'naiad_download_bytes_total', { source: 'peer' })).toBeGreaterThan(0)
    // The second node cost the registry (almost) nothing more.
    expect(proxy.bytesServed(blobDigest) - fromRegistry).toBeLessThan(0.1 * sb.fetch.daemon!.windowBytes)
    console.log(`p2p: node A fetched ${(sa.fetch.bytes / MiB).toFixed(2)} MiB in ${sa.fetch.daemon!.windows} windows ` +
      `(${(sa.fetch.daemon!.windowBytes / MiB).toFixed(2)} MiB), registry served ${(fromRegistry / MiB).toFixed(2)} MiB; ` +
      `node B: registry served ${((proxy.bytesServed(blobDigest) - fromRegistry) / MiB).toFixed(2)} MiB more`)
  })

  it('falls back to the registry when the daemon cannot be reached', async () => {
    const c = await mount('c', REFUSED_URL)
    const read = await readFiles(files(c))
    expect(read.map((r) => r.sha256)).toEqual(want)
    const s = await c.stats()
    expect(s.fetch.bytesBySource.registry).toBe(s.fetch.bytes)
    expect(s.reads.errors).toBe(0)
  })
})
