// convert refuses bad input with a typed error and pushes nothing: unsafe paths, hardlinks
// that escape or lead nowhere, truncated archives, and layers whose bytes do not match
// their digest.

import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { CountingProxy, makeOciLayer, makeTar, pushOciImage, startRegistry, LAYER_MEDIA_TYPES, type RegistryHandle } from '@naiad/testkit'

import { manifestStatus, nydusFs, tagsStatus } from './convert-helpers.ts'

let dir: string
let registry: RegistryHandle

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'nfs-bad-'))
  registry = await startRegistry(join(dir, 'registry'))
}, 60_000)

afterAll(async () => {
  await registry?.stop()
  if (dir !== undefined) await rm(dir, { recursive: true, force: true })
})

const good = (): ReturnType<typeof makeOciLayer> => makeOciLayer([{ name: 'ok.txt', content: 'fine' }], 'gzip')

/** Converts `src/<name>:v1` into `out/<name>:lazy` and expects failure with `code`; nothing may reach out/<name>. */
async function expectRefused(name: string, code: string, extra: string[] = [], registryHost = registry.host): Promise<string> {
  const res = await nydusFs(['convert', `${registryHost}/src/${name}:v1`, `${registry.host}/out/${name}:lazy`, '--plain-http', ...extra])
  expect(res.code, res.stderr).toBe(1)
  expect(res.stderr).toContain(`[${code}]`)
  expect(await manifestStatus(registry.url, `out/${name}`, 'lazy')).toBe(404)
  expect(await tagsStatus(registry.url, `out/${name}`)).toBe(404)
  return res.stderr
}

describe('nydus-fs convert on bad input', () => {
  it('refuses an entry with a .. component', async () => {
    await pushOciImage(registry.url, 'src/dotdot', 'v1', [await good(), await makeOciLayer([{ name: 'a/../../escape', content: 'x' }])])
    const err = await expectRefused('dotdot', 'NFS_ERR_UNSAFE_PATH')
    expect(err).toContain('a/../../escape')
  })

  it('refuses an absolute path', async () => {
    await pushOciImage(registry.url, 'src/abs', 'v1', [await makeOciLayer([{ name: '/etc/evil', content: 'x' }])])
    await expectRefused('abs', 'NFS_ERR_UNSAFE_PATH')
  })

  it('refuses hardlinks that escape the root or lead nowhere', async () => {
    await pushOciImage(registry.url, 'src/hl-escape', 'v1', [await makeOciLayer([
      { name: 'a', content: 'x' }, { name: 'b', type: 'link', linkname: '../../etc/shadow' }
    ])])
    await expectRefused('hl-escape', 'NFS_ERR_UNSAFE_PATH')
    await pushOciImage(registry.url, 'src/hl-missing', 'v1', [await makeOciLayer([
      { name: 'a', content: 'x' }, { name: 'b', type: 'link', linkname: 'nope' }
    ])])
    const err = await expectRefused('hl-missing', 'NFS_ERR_BAD_LAYER')
    expect(err).toContain('"nope"')
  })

  it('refuses truncated layers: gzip, zstd and plain tar cut short', async () => {
    const full = await makeOciLayer([{ name: 'big.bin', content: Buffer.alloc(200_000, 7) }, { name: 'small', content: 'x' }], 'gzip')
    const cut = full.data.subarray(0, Math.floor(full.data.length / 2))
    await pushOciImage(registry.url, 'src/trunc-gz', 'v1', [{ data: cut, mediaType: full.mediaType }])
    await expectRefused('trunc-gz', 'NFS_ERR_BAD_LAYER')

    // Plain tar cut inside the second entry's data, at a block boundary.
    const tar = await makeTar([{ name: 'one', content: Buffer.alloc(1024, 1) }, { name: 'two', content: Buffer.alloc(4096, 2) }])
    await pushOciImage(registry.url, 'src/trunc-tar', 'v1', [{ data: tar.subarray(0, 512 + 1024 + 512 + 1024), mediaType: LAYER_MEDIA_TYPES.none }])
    await expectRefused('trunc-tar', 'NFS_ERR_BAD_LAYER')
    // zstd frame cut short.
    const zst = await makeOciLayer([{ name: 'z', content: Buffer.alloc(50_000, 9) }], 'zstd')
    await pushOciImage(registry.url, 'src/trunc-zst', 'v1', [{ data: zst.data.subarray(0, zst.data.length - 8), mediaType: zst.mediaType }])
    await expectRefused('trunc-zst', 'NFS_ERR_BAD_LAYER')
  })

  it('refuses a layer that is not an archive', async () => {
    await pushOciImage(registry.url, 'src/garbage', 'v1', [{ data: Buffer.alloc(4096, 0x41), mediaType: LAYER_MEDIA_TYPES.none }])
    await expectRefused('garbage', 'NFS_ERR_BAD_LAYER')
  })

  it('refuses layer bytes that do not match the layer digest', async () => {
    const layer = await makeOciLayer([{ name: 'data.bin', content: Buffer.alloc(100_000, 3) }], 'gzip')
    const img = await pushOciImage(registry.url, 'src/corrupt', 'v1', [layer])
    // The proxy flips the first byte of the layer blob: the gzip magic no longer matches
    // either, but the digest is what must be reported.
    const proxy = await new CountingProxy(registry.url).start()
    try {
      proxy.faults.set(img.layers[0].digest, { corrupt: true })
      const err = await expectRefused('corrupt', 'OCI_ERR_DIGEST', [], proxy.host)
      expect(err).toContain(img.layers[0].digest)
    } finally {
      await proxy.stop()
    }
  })

  it('refuses a source that does not exist, naming the registry status', async () => {
    const res = await nydusFs(['convert', `${registry.host}/src/none:v1`, `${registry.host}/out/none:lazy`, '--plain-http'])
    expect(res.code).toBe(1)
    expect(res.stderr).toContain('[OCI_ERR_REGISTRY]')
    expect(res.stderr).toContain('404')
  })

  it('refuses a malformed reference, and a target that would replace the source', async () => {
    const res = await nydusFs(['convert', `${registry.host}/src/UPPER:v1`, `${registry.host}/out/x:lazy`, '--plain-http'])
    expect(res.code).toBe(1)
    expect(res.stderr).toContain('[OCI_ERR_BAD_REF]')
    const same = await nydusFs(['convert', `${registry.host}/src/app`, `${registry.host}/src/app:latest`, '--plain-http'])
    expect(same.code).toBe(1)
    expect(same.stderr).toContain('would replace the source')
  })
})
