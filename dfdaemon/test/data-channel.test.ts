// The data channel between real daemons: piece bytes over TLS (the default) or, by the
// operator's choice, plain TCP; a parent that serves corrupt bytes is caught as ever; and a
// parent whose announced data channel belongs to another node is refused (the other
// node's certificate key is not the peer ID the scheduler named), while the download
// completes from the seed.

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
const SIZE = 48 * 1024 * 1024

describe.each(['tls', 'tcp'] as const)('piece data channel over %s', (transport) => {
  let dir: string
  let origin: TestOrigin
  let sn: SupernodeHandle
  const daemons: DaemonHandle[] = []
  let expected: string
  let url: string
  let config: string
  const start = async (name: string, options: { bin?: string; env?: Record<string, string> } = {}): Promise<DaemonHandle> => {
    const d = await startDaemon(join(dir, name), sn.url, { args: ['--config', config], ...options })
    daemons.push(d)
    return d
  }

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), `naiad-datachannel-${transport}-`))
    expected = await writeBlob(join(dir, 'blob'), SIZE, 'data-channel')
    origin = await new TestOrigin().start()
    origin.files.set('/blob', { path: join(dir, 'blob') })
    url = `${origin.url}/blob`
    config = join(dir, 'naiad.yaml')
    await writeFile(config, `piece:\n  transport: ${transport}\n`)
    sn = await startSupernode(join(dir, 'sn'), { args: ['--config', config] })
  })

  afterAll(async () => {
    await Promise.all(daemons.map((d) => d.process.stop()))
    await sn?.process.stop()
    await origin?.stop()
    await rm(dir, { recursive: true, force: true })
  })

  it('moves pieces between daemons and the seed with the right bytes', async () => {
    const pair = await Promise.all([start('d1'), start('d2')])
    const results = await Promise.all(pair.map((d) => downloadVia(d.apiUrl, { url })))
    for (const r of results) {
      expect(r.event, JSON.stringify(r)).toBe('done')
      expect((r as DoneEvent).sha256).toBe(expected)
      expect((r as DoneEvent).fromOrigin).toBe(0)
    }
    expect(origin.bytesServed('/blob')).toBeLessThanOrEqual(1.1 * SIZE)
  })

  it('catches corrupted bytes on the data channel', async () => {
    const liar = await start('liar', { bin: MISBEHAVING_DAEMON, env: { MISBEHAVE: 'corrupt' } })
    expect((await downloadVia(liar.apiUrl, { url })).event).toBe('done')
    const honest = await Promise.all([start('d3'), start('d4')])
    const results = await Promise.all(honest.map((d) => downloadVia(d.apiUrl, { url })))
    let caught = 0
    for (const [i, r] of results.entries()) {
      expect(r.event, JSON.stringify(r)).toBe('done')
      expect((r as DoneEvent).sha256).toBe(expected)
      caught += await metric(honest[i].apiUrl, 'naiad_piece_failures_total', { code: 'DFD_ERR_PIECE_DIGEST' })
    }
    expect(caught).toBeGreaterThan(0)
  })

  it('refuses a parent whose data channel answers with another node\'s identity', async () => {
    const other = `${origin.url}/other`
    origin.files.set('/other', { path: join(dir, 'blob') })
    // A bystander that never fetches the blob, and an impostor that holds it but announces
    // the bystander's data channel as its own.
    const bystander = await start('bystander')
    const impostor = await start('impostor', { bin: MISBEHAVING_DAEMON, env: { MISBEHAVE: 'impostor', IMPOSTOR_PORT: String(bystander.dataPort) } })
    expect((await downloadVia(impostor.apiUrl, { url: other })).event).toBe('done')
    const victim = await start('victim')
    const r = await downloadVia(victim.apiUrl, { url: other })
    expect(r.event, JSON.stringify(r)).toBe('done')
    expect((r as DoneEvent).sha256).toBe(expected)
    expect(await metric(victim.apiUrl, 'naiad_piece_failures_total', { code: 'PROTO_ERR_IDENTITY' })).toBeGreaterThan(0)
    expect(await metric(bystander.apiUrl, 'naiad_upload_bytes_total')).toBe(0)
  })
})
