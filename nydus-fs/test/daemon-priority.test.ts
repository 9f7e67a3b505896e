// Background prefetch goes through the local dfdaemon as the `prefetch` QoS class and lazy
// reads as `on-demand`: checked on a real daemon running the qos plugin, whose own
// accounting (GET /api/v1/qos) shows which class the bytes moved in.

import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { makeBlob, sha256Hex, startDaemon, startSupernode, TestOrigin, type DaemonHandle, type SupernodeHandle } from '@naiad/testkit'

import { DaemonSource } from '../src/fetch/daemon-source.ts'
import { RegistryClient } from '@naiad/oci'

const WINDOW = 1024 * 1024

interface QosView { download: { classes: Record<string, { bytes: number }> } }

describe('nydus-fs daemon source priority', () => {
  let dir: string
  let origin: TestOrigin
  let sn: SupernodeHandle
  let daemon: DaemonHandle
  const blob = makeBlob(4 * WINDOW, 'nydus-priority')
  const digest = `sha256:${sha256Hex(blob)}`

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'naiad-nfs-prio-'))
    origin = await new TestOrigin().start()
    origin.files.set(`/v2/lazy/app/blobs/${digest}`, { data: blob })
    sn = await startSupernode(join(dir, 'sn'), { args: ['--no-seed'] })
    await writeFile(join(dir, 'd.yaml'), 'plugins: [metrics, qos]\n')
    daemon = await startDaemon(join(dir, 'd'), sn.url, { args: ['--config', join(dir, 'd.yaml')] })
  })

  afterAll(async () => {
    await daemon?.process.stop()
    await sn?.process.stop()
    await origin?.stop()
    await rm(dir, { recursive: true, force: true })
  })

  it('asks for prefetch windows as prefetch and for read windows as on-demand', async () => {
    const client = new RegistryClient(new URL(origin.url).host, { plainHttp: true })
    const source = new DaemonSource({ daemonUrl: daemon.apiUrl, client, repository: 'lazy/app', windowBytes: WINDOW })
    try {
      const ref = { digest, size: blob.length, mediaType: 'application/octet-stream' }
      const signal = AbortSignal.timeout(60_000)
      const pre = await source.read(ref, 0, 2 * WINDOW - 1, signal, 'prefetch')
      const read = await source.read(ref, 2 * WINDOW + 10, 3 * WINDOW + 9, signal)
      expect(pre.equals(blob.subarray(0, 2 * WINDOW))).toBe(true)
      expect(read.equals(blob.subarray(2 * WINDOW + 10, 3 * WINDOW + 10))).toBe(true)
    } finally {
      await source.close()
    }
    const qos = await (await fetch(`${daemon.apiUrl}/api/v1/qos`)).json() as QosView
    expect(qos.download.classes.prefetch.bytes).toBe(2 * WINDOW)
    expect(qos.download.classes['on-demand'].bytes).toBe(2 * WINDOW)
    expect(qos.download.classes.preheat.bytes).toBe(0)
  })
})
