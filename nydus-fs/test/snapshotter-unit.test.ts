// The snapshotter's logic in-process: the containerd wire messages (bytes as protobuf writes
// them), reading a lazy layer out of snapshot labels, List filters, the runtime image's stub
// layer, and the snapshot model (prepare, view, commit, remove, claims of lazy layers, the
// mounts containerd gets) over a real SQLite store, with the lazy mounts stubbed.

import { createHash } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { gunzipSync } from 'node:zlib'

import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { createLogger, Info, labelsFromEntries, PrepareSnapshotRequest, RUNTIME_ANNOTATIONS, SNAPSHOT_KIND, type NaiadError } from '@naiad/proto/contracts'

import { stubLayer } from '../src/convert/runtime-image.ts'
import { readLazyLabels, TARGET_LABEL } from '../src/snapshotter/labels.ts'
import type { LazyMounts } from '../src/snapshotter/lazy-mounts.ts'
import { parseFilter, Snapshotter } from '../src/snapshotter/snapshotter.ts'
import { SnapshotStore } from '../src/snapshotter/store.ts'

const IMAGE = `sha256:${'a'.repeat(64)}`
const REF_LABEL = 'containerd.io/snapshot/remote/stargz.reference'

function lazyLabels(layer: number, layers: number, target: string): Record<string, string> {
  return { [TARGET_LABEL]: target, [RUNTIME_ANNOTATIONS.lazyImage]: IMAGE, [RUNTIME_ANNOTATIONS.layer]: `${layer}/${layers}`, [REF_LABEL]: '127.0.0.1:5000/app:lazy' }
}

describe('snapshots wire messages', () => {
  it('encodes a map<string, string> and strings as protobuf does', () => {
    const bytes = Buffer.from(PrepareSnapshotRequest.encode({ key: 'k', parent: '', labels: [{ key: 'a', value: 'b' }] }))
    // field 2 "k"; field 4 (map entry) { 1: "a", 2: "b" }
    expect(bytes.toString('hex')).toBe('12016b' + '2206' + '0a0161' + '120162')
    const back = PrepareSnapshotRequest.decode(bytes)
    expect(labelsFromEntries(back.labels)).toEqual({ a: 'b' })
  })

  it('round-trips Info with its enum and timestamps', () => {
    const info = { name: 'n', parent: 'p', kind: SNAPSHOT_KIND.committed, createdAt: { seconds: 1_700_000_000, nanos: 5 }, updatedAt: { seconds: 1, nanos: 0 }, labels: [] }
    const back = Info.decode(Info.encode(info))
    expect(back).toEqual({ ...info, updatedAt: { seconds: 1, nanos: 0 } })
  })
})

describe('lazy layer labels', () => {
  it('reads the lazy image, the layer and the repository', () => {
    expect(readLazyLabels(lazyLabels(1, 3, 'sha256:t'))).toEqual({
      kind: 'lazy', layer: { target: 'sha256:t', image: IMAGE, repository: { registry: '127.0.0.1:5000', repository: 'app' }, layer: 1, layers: 3 }
    })
    expect(readLazyLabels({ [TARGET_LABEL]: 'x' }).kind).toBe('none')
  })

  it('says why a lazy layer cannot be served lazily', () => {
    const noRef = lazyLabels(0, 2, 't')
    delete noRef[REF_LABEL]
    expect(readLazyLabels(noRef)).toMatchObject({ kind: 'unusable', why: expect.stringContaining('rpull') as string })
    expect(readLazyLabels({ ...lazyLabels(2, 2, 't') }).kind).toBe('unusable')
    expect(readLazyLabels({ ...lazyLabels(0, 2, 't'), [RUNTIME_ANNOTATIONS.lazyImage]: 'sha256:xyz' }).kind).toBe('unusable')
  })
})

describe('List filters', () => {
  const row = { id: 1, key: 'k', parent: 'p', kind: SNAPSHOT_KIND.committed, labels: { 'containerd.io/snapshot.ref': 'sha256:t' }, createdNs: 0n, updatedNs: 0n, lazyImage: undefined, lazyLayer: 0, lazyLayers: 0, size: 0, inodes: 0 }
  it('matches the filters containerd sends', () => {
    expect(parseFilter('labels."containerd.io/snapshot.ref"==sha256:t,parent=="p"')(row)).toBe(true)
    expect(parseFilter('labels."containerd.io/snapshot.ref"==sha256:t,parent=="q"')(row)).toBe(false)
    expect(parseFilter('kind==committed')(row)).toBe(true)
    expect(parseFilter('name==other')(row)).toBe(false)
    expect(parseFilter('something~=odd')(row)).toBe(true)
  })
})

describe('stub layer', () => {
  it('is a gzip tar of one PAX global header naming the lazy image; its diff_id is the tar digest', () => {
    const stub = stubLayer(IMAGE)
    const tar = gunzipSync(stub.blob)
    expect(tar.length % 512).toBe(0)
    expect(String.fromCharCode(tar[156])).toBe('g')
    expect(tar.subarray(512, 1024).toString()).toContain(`comment=naiad lazy image ${IMAGE}`)
    expect(stub.diffId).toBe(`sha256:${createHash('sha256').update(tar).digest('hex')}`)
    expect(stubLayer(`sha256:${'b'.repeat(64)}`).diffId).not.toBe(stub.diffId)
  })
})

describe('snapshot model', () => {
  let root: string
  let store: SnapshotStore
  let s: Snapshotter
  const ensured: string[] = []
  const released: string[] = []
  const mnt = '/mnt/lazy-image'
  const lazy = {
    ensure: async (image: string) => { ensured.push(image); return mnt },
    release: async (image: string) => { if (store.lazyUsers(image) === 0) released.push(image) },
    noteStart: () => {}
  } as unknown as LazyMounts

  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'nfs-snap-unit-'))
    store = new SnapshotStore(root)
    s = new Snapshotter({ store, lazy, logger: createLogger('test', 'silent') }, root)
    ensured.length = 0
    released.length = 0
  })

  afterEach(async () => {
    store.close()
    await rm(root, { recursive: true, force: true })
  })

  it('prepares, commits and stacks plain layers as containerd overlayfs does', async () => {
    const first = await s.prepare('a', '', {})
    expect(first).toEqual([{ type: 'bind', source: join(root, 'snapshots/1/fs'), target: '', options: ['rw', 'rbind'] }])
    await s.commit('L1', 'a', { x: 'y' })
    expect(s.stat('L1')).toMatchObject({ name: 'L1', kind: SNAPSHOT_KIND.committed })
    const second = await s.prepare('b', 'L1', {})
    expect(second[0].type).toBe('overlay')
    expect(second[0].options).toContain(`lowerdir=${join(root, 'snapshots/1/fs')}`)
    expect(second[0].options).toContain(`upperdir=${join(root, 'snapshots/2/fs')}`)
    const view = await s.view('v', 'L1', {})
    expect(view).toEqual([{ type: 'bind', source: join(root, 'snapshots/1/fs'), target: '', options: ['ro', 'rbind'] }])
    await expect(s.prepare('b', 'L1', {})).rejects.toMatchObject({ code: 'NFS_ERR_SNAPSHOT_EXISTS' })
    await expect(s.prepare('c', 'nope', {})).rejects.toMatchObject({ code: 'NFS_ERR_SNAPSHOT_NOT_FOUND' })
    await expect(s.commit('x', 'v', {})).rejects.toMatchObject({ code: 'NFS_ERR_SNAPSHOT' })
    await expect(s.remove('L1')).rejects.toMatchObject({ code: 'NFS_ERR_SNAPSHOT' })
    expect(s.update({ ...s.stat('L1'), labels: [{ key: 'z', value: '1' }] }, ['labels.z']).labels).toEqual([{ key: 'x', value: 'y' }, { key: 'z', value: '1' }])
    await s.remove('b')
    await s.remove('v')
    await s.remove('L1')
    expect(s.list([])).toEqual([])
  })

  it('claims every layer of a lazy image, answers ALREADY_EXISTS and stacks containers on the lazy mount', async () => {
    const claim = async (i: number, parent: string): Promise<NaiadError> => {
      const err = await s.prepare(`extract-${i}`, parent, lazyLabels(i, 3, `chain-${i}`)).then(() => undefined, (e: NaiadError) => e)
      expect(err?.code).toBe('NFS_ERR_SNAPSHOT_EXISTS')
      return err!
    }
    await claim(0, '')
    await claim(1, 'chain-0')
    await claim(2, 'chain-1')
    expect(ensured).toEqual([IMAGE, IMAGE, IMAGE])
    expect(s.stat('chain-2')).toMatchObject({ parent: 'chain-1', kind: SNAPSHOT_KIND.committed })
    expect(labelsFromEntries(s.stat('chain-2').labels)[TARGET_LABEL]).toBe('chain-2')
    store.putLazyImage({ image: IMAGE, ref: `127.0.0.1:5000/app@${IMAGE}`, mountpoint: mnt })
    const container = await s.prepare('ctr', 'chain-2', {})
    expect(container[0].options).toContain(`lowerdir=${mnt}`)
    // An inner layer holds no tree of its own.
    await expect(s.prepare('bad', 'chain-1', {})).rejects.toMatchObject({ code: 'NFS_ERR_SNAPSHOT' })
    await s.remove('ctr')
    await s.remove('chain-2')
    await s.remove('chain-1')
    expect(released).toEqual([])
    await s.remove('chain-0')
    expect(released).toEqual([IMAGE])
  })

  it('unpacks a lazy image as a plain one when it cannot be mounted before the first claim', async () => {
    const failing = { ...lazy, ensure: async () => { throw new Error('registry down') } } as unknown as LazyMounts
    const s2 = new Snapshotter({ store, lazy: failing, logger: createLogger('test', 'silent') }, root)
    const m = await s2.prepare('extract-0', '', lazyLabels(0, 2, 'chain-0'))
    expect(m[0].type).toBe('bind')
  })
})
