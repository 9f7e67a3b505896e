// convert streams: a large layer (512 MiB of incompressible data by default, written to a
// file and uploaded without ever being held in memory) converts with the converter's peak
// RSS under 300 MiB, as the CLI reports it under NAIAD_REPORT_MAXRSS=1 (VmHWM of the process
// that converts; getrusage would report the test runner's peak, see peakRssKiB). The peak does not
// grow with the layer (one chunk in memory at a time), so 512 MiB stands for the 1 GiB
// target while keeping CI time and disk modest; NAIAD_TEST_BIG_LAYER_MIB=1024 runs the
// full size.

import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { LAYER_MEDIA_TYPES, pushBlobFile, pushOciImage, startRegistry, writeLargeTarLayer, type RegistryHandle } from '@naiad/testkit'

import { lookupInode } from '../src/index.ts'
import { nydusFs, openLazy } from './convert-helpers.ts'

const MiB = 1024 * 1024
const SIZE = Number(process.env.NAIAD_TEST_BIG_LAYER_MIB ?? 512) * MiB
const RSS_LIMIT_KIB = 300 * 1024

let dir: string
let registry: RegistryHandle

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'nfs-mem-'))
  registry = await startRegistry(join(dir, 'registry'))
  const layerPath = join(dir, 'layer.tar')
  const layer = await writeLargeTarLayer(layerPath, 'big.bin', SIZE, 'big-layer')
  await pushBlobFile(registry.url, 'src/big', layerPath, layer.digest)
  await rm(layerPath)
  await pushOciImage(registry.url, 'src/big', 'v1', [{ digest: layer.digest, size: layer.size, mediaType: LAYER_MEDIA_TYPES.none }])
}, 600_000)

afterAll(async () => {
  await registry?.stop()
  if (dir !== undefined) await rm(dir, { recursive: true, force: true })
})

describe('nydus-fs convert memory', () => {
  it(`converts a ${SIZE / MiB} MiB layer in under 300 MiB RSS`, async () => {
    const res = await nydusFs(['convert', `${registry.host}/src/big:v1`, `${registry.host}/src/big:lazy`, '--plain-http'],
      { NAIAD_REPORT_MAXRSS: '1', TMPDIR: dir }, 600_000)
    expect(res.code, res.stderr).toBe(0)
    const m = /maxrss (\d+) KiB/.exec(res.stderr)
    expect(m, res.stderr).not.toBeNull()
    const rss = Number(m![1])
    process.stderr.write(`convert of a ${SIZE / MiB} MiB layer: max RSS ${(rss / 1024).toFixed(0)} MiB\n`)
    expect(rss).toBeLessThan(RSS_LIMIT_KIB)

    const { client, image } = await openLazy(`${registry.host}/src/big:lazy`)
    try {
      const big = lookupInode(image.bootstrap, '/big.bin')!
      expect(big.size).toBe(SIZE)
      expect(big.chunks).toHaveLength(SIZE / MiB)
    } finally {
      await client.close()
    }
  }, 600_000)
})
