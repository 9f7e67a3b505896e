// convert --chunk-dict: a second image that shares most files with the first adds only the
// chunks that differ; the dictionary's blob is mounted into the target repository so the
// new image is self-contained, and it reads back and checks clean.

import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { makeBlob, makeOciLayer, pushOciImage, startRegistry, type LayerEntry, type RegistryHandle } from '@naiad/testkit'

import { nydusFs, openLazy, readFile } from './convert-helpers.ts'

const KiB = 1024
const CHUNK = 64 * KiB
let dir: string
let registry: RegistryHandle

const shared = Array.from({ length: 8 }, (_, i) => makeBlob(256 * KiB, `shared-${i}`))
const edited = Buffer.from(shared[6])
edited[130_000] ^= 0xff // one byte: one 64 KiB chunk differs
const changed = makeBlob(256 * KiB, 'changed')
const extra = makeBlob(100 * KiB, 'extra')
/** Content of B that A does not have, in chunks: f7 (256 KiB), extra (100 KiB), one chunk of f6. */
const DIFFERING = 256 * KiB + 100 * KiB + CHUNK

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'nfs-dict-'))
  registry = await startRegistry(join(dir, 'registry'))
  const a: LayerEntry[] = shared.map((content, i) => ({ name: `opt/f${i}`, content }))
  const b: LayerEntry[] = [
    ...shared.slice(0, 6).map((content, i) => ({ name: `opt/f${i}`, content })),
    { name: 'opt/f6', content: edited },
    { name: 'opt/f7', content: changed },
    { name: 'opt/extra', content: extra }
  ]
  await pushOciImage(registry.url, 'base/a', 'v1', [await makeOciLayer(a)])
  await pushOciImage(registry.url, 'app/b', 'v1', [await makeOciLayer(b, 'zstd')])
}, 120_000)

afterAll(async () => {
  await registry?.stop()
  if (dir !== undefined) await rm(dir, { recursive: true, force: true })
})

describe('nydus-fs convert --chunk-dict', () => {
  it('stores only the chunks the dictionary image does not hold', async () => {
    const ra = await nydusFs(['convert', `${registry.host}/base/a:v1`, `${registry.host}/base/a:lazy`, '--plain-http', '--chunk-size', '64KiB'])
    expect(ra.code, ra.stderr).toBe(0)
    const rb = await nydusFs(['convert', `${registry.host}/app/b:v1`, `${registry.host}/app/b:lazy`, '--plain-http', '--chunk-size', '64KiB',
      '--chunk-dict', `${registry.host}/base/a:lazy`])
    expect(rb.code, rb.stderr).toBe(0)
    expect(rb.stderr).toMatch(/mounted from base\/a/)

    const A = await openLazy(`${registry.host}/base/a:lazy`)
    const B = await openLazy(`${registry.host}/app/b:lazy`)
    try {
      const dictBlobs = new Set(A.image.blobs.map((x) => x.digest))
      const reused = B.image.blobs.filter((x) => dictBlobs.has(x.digest))
      const added = B.image.blobs.filter((x) => !dictBlobs.has(x.digest))
      expect(reused).toHaveLength(1)
      const addedBytes = added.reduce((s, x) => s + x.size, 0)
      // Random content barely compresses: what was added is the differing content plus zstd framing.
      expect(addedBytes).toBeGreaterThanOrEqual(DIFFERING)
      expect(addedBytes).toBeLessThan(DIFFERING * 1.01 + 4 * KiB)
      // 7 new chunks: 4 of f7, 2 of extra, 1 of f6.
      const newChunks = B.image.bootstrap.chunks.filter((c) => !dictBlobs.has(B.image.blobs[c.blob].digest))
      expect(newChunks).toHaveLength(7)

      // The target repository alone holds every blob the image needs.
      for (const blob of B.image.blobs) expect(await B.client.blobExists('app/b', blob.digest)).toBe(true)
      expect(await readFile(B.client, B.repository, B.image, '/opt/f0')).toEqual(shared[0])
      expect(await readFile(B.client, B.repository, B.image, '/opt/f6')).toEqual(edited)
      expect(await readFile(B.client, B.repository, B.image, '/opt/f7')).toEqual(changed)
      expect(await readFile(B.client, B.repository, B.image, '/opt/extra')).toEqual(extra)
    } finally {
      await A.client.close()
      await B.client.close()
    }
    const check = await nydusFs(['check', `${registry.host}/app/b:lazy`, '--plain-http'])
    expect(check.code, check.stderr).toBe(0)
  })

  it('refuses a dictionary whose chunks are stored with another compressor', async () => {
    const res = await nydusFs(['convert', `${registry.host}/app/b:v1`, `${registry.host}/app/b:raw`, '--plain-http', '--compressor', 'none',
      '--chunk-dict', `${registry.host}/base/a:lazy`])
    expect(res.code).toBe(1)
    expect(res.stderr).toContain('[NFS_ERR_BAD_IMAGE]')
  })
})
