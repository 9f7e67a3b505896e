// check: a good image passes; a chunk corrupted inside the registry's storage makes check
// name the file and the chunk and exit 1; a tampered bootstrap or root annotation is
// caught before any chunk is fetched.

import { open, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ANNOTATIONS } from '@naiad/proto/contracts'
import { makeBlob, makeOciLayer, pushBlobBytes, pushOciImage, startRegistry, type RegistryHandle } from '@naiad/testkit'

import { lookupInode } from '../src/index.ts'
import { nydusFs, openLazy, readFile } from './convert-helpers.ts'

let dir: string
let registry: RegistryHandle
const VICTIM = makeBlob(300 * 1024, 'victim')
const OTHER = makeBlob(150 * 1024, 'other')

function blobPath(digest: string): string {
  const hex = digest.slice('sha256:'.length)
  return join(dir, 'registry', 'data', 'docker', 'registry', 'v2', 'blobs', 'sha256', hex.slice(0, 2), hex, 'data')
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'nfs-check-'))
  registry = await startRegistry(join(dir, 'registry'))
  await pushOciImage(registry.url, 'src/app', 'v1', [await makeOciLayer([
    { name: 'usr/', type: 'directory' },
    { name: 'usr/bin/', type: 'directory' },
    { name: 'usr/bin/other', content: OTHER, mode: 0o755 },
    { name: 'usr/bin/victim', content: VICTIM, mode: 0o755 },
    { name: 'etc/hostname', content: 'box\n' }
  ])])
  const res = await nydusFs(['convert', `${registry.host}/src/app:v1`, `${registry.host}/src/app:lazy`, '--plain-http', '--chunk-size', '64KiB'])
  if (res.code !== 0) throw new Error(res.stderr)
}, 120_000)

afterAll(async () => {
  await registry?.stop()
  if (dir !== undefined) await rm(dir, { recursive: true, force: true })
})

describe('nydus-fs check', () => {
  it('passes a good image and reports what it verified', async () => {
    const res = await nydusFs(['check', `${registry.host}/src/app:lazy`, '--plain-http'])
    expect(res.code, res.stderr).toBe(0)
    expect(res.stdout).toMatch(/^ok: 9 chunks \(.+\) in 1 blobs, 3 files, 4 directories verified; root sha256:[a-f0-9]{64}\n$/)
  })

  it('names the file of a chunk corrupted in the registry storage', async () => {
    const { client, image, repository } = await openLazy(`${registry.host}/src/app:lazy`)
    try {
      const b = image.bootstrap
      const victim = lookupInode(b, '/usr/bin/victim')!
      const chunk = b.chunks[victim.chunks[2]]
      const fh = await open(blobPath(b.blobs[chunk.blob].digest), 'r+')
      try {
        const one = Buffer.alloc(1)
        const at = chunk.offset + Math.floor(chunk.storedSize / 2)
        await fh.read(one, 0, 1, at)
        one[0] ^= 0x5a
        await fh.write(one, 0, 1, at)
      } finally {
        await fh.close()
      }
      const res = await nydusFs(['check', `${registry.host}/src/app:lazy`, '--plain-http'])
      expect(res.code).toBe(1)
      expect(res.stderr).toContain('nydus-fs: chunk 2 of /usr/bin/victim does not match its digest [NFS_ERR_DIGEST]')
      // Other files still read back correctly; the corrupt chunk is refused, never returned.
      expect(await readFile(client, repository, image, '/usr/bin/other')).toEqual(OTHER)
      await expect(readFile(client, repository, image, '/usr/bin/victim')).rejects.toMatchObject({ code: 'NFS_ERR_DIGEST' })
    } finally {
      await client.close()
    }
  })

  it('refuses a manifest whose root digest annotation does not match the bootstrap', async () => {
    const { client, image } = await openLazy(`${registry.host}/src/app:lazy`)
    try {
      const manifest = structuredClone(image.manifest)
      manifest.annotations![ANNOTATIONS.rootDigest] = `sha256:${'0'.repeat(64)}`
      await client.pushManifest('src/app', 'forged-root', manifest.mediaType!, Buffer.from(JSON.stringify(manifest)))
    } finally {
      await client.close()
    }
    const res = await nydusFs(['check', `${registry.host}/src/app:forged-root`, '--plain-http'])
    expect(res.code).toBe(1)
    expect(res.stderr).toContain('Merkle root')
    expect(res.stderr).toContain('[NFS_ERR_DIGEST]')
  })

  it('refuses a bootstrap other than the one the annotation names', async () => {
    const { client, image } = await openLazy(`${registry.host}/src/app:lazy`)
    try {
      const manifest = structuredClone(image.manifest)
      const other = await pushBlobBytes(registry.url, 'src/app', Buffer.from('not a bootstrap'))
      manifest.layers.at(-1)!.digest = other
      manifest.layers.at(-1)!.size = 15
      await client.pushManifest('src/app', 'forged-bootstrap', manifest.mediaType!, Buffer.from(JSON.stringify(manifest)))
    } finally {
      await client.close()
    }
    const res = await nydusFs(['check', `${registry.host}/src/app:forged-bootstrap`, '--plain-http'])
    expect(res.code).toBe(1)
    expect(res.stderr).toContain('[NFS_ERR_DIGEST]')
    expect(res.stderr).toContain('bootstrap')
  })

  it('refuses an image that is not a lazy image', async () => {
    const res = await nydusFs(['check', `${registry.host}/src/app:v1`, '--plain-http'])
    expect(res.code).toBe(1)
    expect(res.stderr).toContain('[NFS_ERR_NOT_LAZY]')
  })
})
