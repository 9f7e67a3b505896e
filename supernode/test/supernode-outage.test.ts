// The supernode is not a single point of failure: with it gone a daemon fetches from the
// origin, reconnects when it returns, and a restarted supernode still knows its tasks.

import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  downloadVia, getJson, makeBlob, sha256Hex, startDaemon, startSupernode, TestOrigin, waitFor,
  type DaemonHandle, type DoneEvent, type SupernodeHandle
} from '@naiad/testkit'

const SIZE = 24 * 1024 * 1024

describe('supernode outage', () => {
  let dir: string
  let origin: TestOrigin
  let sn: SupernodeHandle
  let daemon: DaemonHandle
  const blobs = { '/one': makeBlob(SIZE, 'one'), '/two': makeBlob(SIZE, 'two') }

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'naiad-outage-'))
    origin = await new TestOrigin().start()
    for (const [path, data] of Object.entries(blobs)) origin.files.set(path, { data })
    sn = await startSupernode(join(dir, 'sn'))
    daemon = await startDaemon(join(dir, 'd1'), sn.url)
  })

  afterAll(async () => {
    await daemon?.process.stop()
    await sn?.process.stop()
    await origin?.stop()
    await rm(dir, { recursive: true, force: true })
  })

  it('falls back to the origin while the supernode is down, then reconnects, and the restarted supernode knows its tasks', async () => {
    const first = await downloadVia(daemon.apiUrl, { url: `${origin.url}/one` }) as DoneEvent
    expect(first.event).toBe('done')
    expect(first.fromOrigin).toBe(0) // it came from the seed
    await new Promise((r) => setTimeout(r, 600)) // let the supernode's write-behind persist the state
    await sn.process.kill('SIGKILL')

    const started = Date.now()
    const second = await downloadVia(daemon.apiUrl, { url: `${origin.url}/two` }) as DoneEvent
    expect(second.event, JSON.stringify(second)).toBe('done')
    expect(second.sha256).toBe(sha256Hex(blobs['/two']))
    expect(second.fromOrigin).toBe(SIZE)
    expect(Date.now() - started).toBeLessThan(10_000)

    sn = await startSupernode(join(dir, 'sn'), { port: sn.port })
    // The daemon announces itself again on its own.
    await waitFor(async () => {
      const peers = await getJson<Array<{ id: string; gone: boolean; lastSeen: string }>>(`${sn.url}/api/v1/peers`)
      const me = peers.find((p) => p.id === daemon.peerId)
      return me !== undefined && Date.parse(me.lastSeen) > started
    }, 20_000, 'the daemon to reconnect')

    const tasks = await getJson<Array<{ id: string; state: string; url: string }>>(`${sn.url}/api/v1/tasks`)
    const known = tasks.find((t) => t.id === first.taskId)
    expect(known?.state).toBe('succeeded')

    // A new daemon gets the first file from the swarm, without the origin.
    const servedBefore = origin.bytesServed('/one')
    const other = await startDaemon(join(dir, 'd2'), sn.url)
    try {
      const again = await downloadVia(other.apiUrl, { url: `${origin.url}/one` }) as DoneEvent
      expect(again.event, JSON.stringify(again)).toBe('done')
      expect(again.sha256).toBe(sha256Hex(blobs['/one']))
      if (again.fromOrigin !== 0) console.log(other.process.logs.join('\n'))
      expect(again.fromOrigin).toBe(0)
      expect(origin.bytesServed('/one')).toBe(servedBefore)
    } finally {
      await other.process.stop()
    }
  })
})
