// The opt-in plain-TCP data channel for piece bytes: downloads stay correct, and a peer
// that corrupts bytes on that channel is caught exactly as on the fabric.

import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  downloadVia, metric, startDaemon, startSupernode, TestOrigin, writeBlob,
  type DaemonHandle, type DoneEvent, type SupernodeHandle
} from '@naiad/testkit'

const MISBEHAVING_DAEMON = fileURLToPath(new URL('./fixtures/misbehaving-daemon.ts', import.meta.url))
const SIZE = 64 * 1024 * 1024

describe('piece data channel', () => {
  let dir: string
  let origin: TestOrigin
  let sn: SupernodeHandle
  const daemons: DaemonHandle[] = []
  let expected: string
  let url: string
  let config: string

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'naiad-datachannel-'))
    expected = await writeBlob(join(dir, 'blob'), SIZE, 'data-channel')
    origin = await new TestOrigin().start()
    origin.files.set('/blob', { path: join(dir, 'blob') })
    url = `${origin.url}/blob`
    config = join(dir, 'naiad.yaml')
    await writeFile(config, 'piece:\n  data-channel: true\n')
    sn = await startSupernode(join(dir, 'sn'), { args: ['--config', config] })
  })

  afterAll(async () => {
    await Promise.all(daemons.map((d) => d.process.stop()))
    await sn?.process.stop()
    await origin?.stop()
    await rm(dir, { recursive: true, force: true })
  })

  it('moves pieces between daemons and the seed with the right bytes', async () => {
    const pair = await Promise.all([1, 2].map((i) => startDaemon(join(dir, `d${i}`), sn.url, { args: ['--config', config] })))
    daemons.push(...pair)
    const results = await Promise.all(pair.map((d) => downloadVia(d.apiUrl, { url })))
    for (const r of results) {
      expect(r.event, JSON.stringify(r)).toBe('done')
      expect((r as DoneEvent).sha256).toBe(expected)
      expect((r as DoneEvent).fromOrigin).toBe(0)
    }
    expect(origin.bytesServed('/blob')).toBeLessThanOrEqual(1.1 * SIZE)
  })

  it('catches corrupted bytes on the data channel', async () => {
    const liar = await startDaemon(join(dir, 'liar'), sn.url, { bin: MISBEHAVING_DAEMON, env: { MISBEHAVE: 'corrupt' }, args: ['--config', config] })
    daemons.push(liar)
    expect((await downloadVia(liar.apiUrl, { url })).event).toBe('done')
    const honest = await Promise.all([3, 4].map((i) => startDaemon(join(dir, `d${i}`), sn.url, { args: ['--config', config] })))
    daemons.push(...honest)
    const results = await Promise.all(honest.map((d) => downloadVia(d.apiUrl, { url })))
    let caught = 0
    for (const [i, r] of results.entries()) {
      expect(r.event, JSON.stringify(r)).toBe('done')
      expect((r as DoneEvent).sha256).toBe(expected)
      caught += await metric(honest[i].apiUrl, 'naiad_piece_failures_total', { code: 'DFD_ERR_PIECE_DIGEST' })
    }
    expect(caught).toBeGreaterThan(0)
  })
})
