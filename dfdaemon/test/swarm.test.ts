// A supernode and four dfdaemons as separate processes: dfget through all four at once
// gets the right bytes while the origin serves the file about once.

import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  BINS, getJson, run, startDaemon, startSupernode, TestOrigin, writeBlob, sha256Hex,
  type DaemonHandle, type SupernodeHandle
} from '@naiad/testkit'

const SIZE = 256 * 1024 * 1024

describe('swarm download', () => {
  let dir: string
  let origin: TestOrigin
  let sn: SupernodeHandle
  let daemons: DaemonHandle[] = []
  let expected: string

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'naiad-swarm-'))
    expected = await writeBlob(join(dir, 'blob'), SIZE, 'swarm')
    origin = await new TestOrigin().start()
    origin.files.set('/blob', { path: join(dir, 'blob') })
    sn = await startSupernode(join(dir, 'sn'))
    daemons = await Promise.all([1, 2, 3, 4].map((i) => startDaemon(join(dir, `d${i}`), sn.url)))
  })

  afterAll(async () => {
    await Promise.all(daemons.map((d) => d.process.stop()))
    await sn?.process.stop()
    await origin?.stop()
    await rm(dir, { recursive: true, force: true })
  })

  it('delivers a 256 MiB file through four daemons at once with the origin serving it about once', async () => {
    const url = `${origin.url}/blob`
    const results = await Promise.all(daemons.map((d, i) =>
      run(BINS.dfget, [url, '-O', join(dir, `out${i}`), '--daemon', d.apiUrl, '--no-progress', '--json'], { timeoutMs: 180_000 })))
    for (const [i, r] of results.entries()) {
      expect(r.code, `dfget ${i}: ${r.stderr}`).toBe(0)
      expect(sha256Hex(await readFile(join(dir, `out${i}`)))).toBe(expected)
    }
    const served = origin.bytesServed('/blob')
    expect(served).toBeGreaterThanOrEqual(SIZE)
    expect(served).toBeLessThanOrEqual(1.1 * SIZE)

    // The daemons fetched from each other, not only from the seed.
    const task = (await getJson<Array<{ id: string; url: string; state: string }>>(`${sn.url}/api/v1/tasks`)).find((t) => t.url === url)
    expect(task?.state).toBe('succeeded')
    const detail = await getJson<{ peers: Array<{ hostId: string; state: string; pieces: number }> }>(`${sn.url}/api/v1/tasks/${task!.id}`)
    const finished = detail.peers.filter((p) => p.state === 'succeeded')
    expect(finished.length).toBe(5) // the seed and four daemons
    const peers = await getJson<Array<{ id: string; isSeed: boolean; goodPieces: number }>>(`${sn.url}/api/v1/peers`)
    const servedByDaemons = peers.filter((p) => !p.isSeed).reduce((n, p) => n + p.goodPieces, 0)
    expect(servedByDaemons).toBeGreaterThan(0)
  })
})
