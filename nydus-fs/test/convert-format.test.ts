// The format's pieces in-process: the Merkle vectors of docs/lazy-image-format.md, the
// bootstrap round trip and the checks a reader makes before trusting one, and the layer
// merge rules on their edge cases.

import { createHash } from 'node:crypto'

import { describe, expect, it } from 'vitest'
import { directoryContent, fileDigest, inodeDigest, type Bootstrap, type Inode } from '@naiad/proto/contracts'

import { MergeTree, newDir, safeComponents, type MergeNode } from '../src/convert/merge-tree.ts'
import { computeDigests, decodeBootstrap, encodeBootstrap, lookupPath, resolvePath, validateBootstrap, walk } from '../src/index.ts'

const sha = (b: Buffer | string): Buffer => createHash('sha256').update(b).digest()

function inode(partial: Partial<Inode> & Pick<Inode, 'ino' | 'type'>): Inode {
  return {
    mode: partial.type === 'dir' ? 0o755 : 0o644, uid: 0, gid: 0, mtime: 1_700_000_000, size: 0, nlink: partial.type === 'dir' ? 2 : 1,
    rdev: 0, xattrs: [], symlink: '', chunks: [], entries: [], digest: new Uint8Array(32), ...partial
  }
}

/** `/hello.txt` = "hello\n", `/sub/` empty, `/link` → hello.txt. */
function sample(): Bootstrap {
  const content = Buffer.from('hello\n')
  const b: Bootstrap = {
    superblock: { version: 1, chunkSize: 1 << 20, compressor: 'none', rootIno: 0, inodeCount: 4, createdAt: 0 },
    inodes: [
      inode({ ino: 0, type: 'dir', nlink: 3, entries: [{ name: 'hello.txt', ino: 1 }, { name: 'link', ino: 3 }, { name: 'sub', ino: 2 }] }),
      inode({ ino: 1, type: 'file', size: 6, chunks: [0] }),
      inode({ ino: 2, type: 'dir' }),
      inode({ ino: 3, type: 'symlink', symlink: 'hello.txt', size: 9, mode: 0o777 })
    ],
    chunks: [{ digest: sha(content), blob: 0, offset: 0, storedSize: 6, size: 6 }],
    blobs: [{ digest: `sha256:${sha(content).toString('hex')}`, size: 6 }],
    prefetch: [1]
  }
  const d = computeDigests(b)
  for (const i of b.inodes) i.digest = d[i.ino]
  return b
}

describe('lazy-image format', () => {
  it('matches the worked Merkle example of the documentation', () => {
    const chunk = sha('hello\n')
    expect(chunk.toString('hex')).toBe('5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03')
    expect(fileDigest([chunk]).toString('hex')).toBe('ecb65bb98f9d905b70458986c39fcbad7715e5f2fcc3b1f07767d7c83e2438cc')
    const file = inode({ ino: 1, type: 'file', size: 6, chunks: [0] })
    const fileD = inodeDigest(file, fileDigest([chunk]))
    expect(fileD.toString('hex')).toBe('d208661867772e9ee309247a85655ac94222abb903e2592479d3e5dc5bf02e0a')
    const root = inode({ ino: 0, type: 'dir', entries: [{ name: 'hello.txt', ino: 1 }] })
    expect(inodeDigest(root, directoryContent([{ name: 'hello.txt', digest: fileD }])).toString('hex'))
      .toBe('43381fdf273c2ef30d529f17048121772fbb9246d943642a2e7e0143279c66a2')
    expect(inodeDigest(inode({ ino: 1, type: 'file' }), fileDigest([])).toString('hex'))
      .toBe('a46843da32a9cdec7ab02e33ef29d50dc69d5c6abffe904abc9fb180ab6478a9')
  })

  it('round-trips a bootstrap and walks, looks up and resolves paths', () => {
    const b = sample()
    const back = decodeBootstrap(encodeBootstrap(b))
    expect(back.superblock).toEqual(b.superblock)
    expect(back.prefetch).toEqual([1])
    expect(back.inodes.map((i) => Buffer.from(i.digest).toString('hex'))).toEqual(b.inodes.map((i) => Buffer.from(i.digest).toString('hex')))
    expect([...walk(back)].map((e) => e.path)).toEqual(['/', '/hello.txt', '/link', '/sub'])
    expect(lookupPath(back, '/link')).toBe(3)
    expect(resolvePath(back, '/link')).toBe(1)
    expect(resolvePath(back, '/sub/../link')).toBe(1)
    expect(lookupPath(back, '/hello.txt/x')).toBeUndefined()
    expect(() => computeDigests(back, { verify: true })).not.toThrow()
  })

  it('names the inode whose stored digest is wrong', () => {
    const b = sample()
    b.inodes[2].mode = 0o700
    expect(() => computeDigests(b, { verify: true })).toThrow(/directory \/sub does not match/)
  })

  it('refuses malformed bootstraps before anything trusts their indexes', () => {
    const cases: Array<[string, (b: Bootstrap) => void, RegExp]> = [
      ['chunk out of range', (b) => { b.inodes[1].chunks = [5] }, /names chunk 5/],
      ['size mismatch', (b) => { b.inodes[1].size = 7 }, /differs from its chunks/],
      ['unsorted entries', (b) => { b.inodes[0].entries.reverse() }, /not sorted/],
      ['directory linked twice', (b) => { b.inodes[0].entries.push({ name: 'twice', ino: 2 }) }, /linked twice/],
      ['entry naming the root', (b) => { b.inodes[2].entries = [{ name: 'up', ino: 0 }] }, /names inode 0/],
      ['bad name', (b) => { b.inodes[0].entries[0].name = 'a/b' }, /invalid entry name/],
      ['orphan inode', (b) => { b.inodes[0].entries.pop(); b.inodes[0].nlink = 2 }, /not reachable/],
      ['chunk past its blob', (b) => { b.chunks[0].offset = 3 }, /outside its blob/],
      ['file-type bits in mode', (b) => { b.inodes[1].mode = 0o100644 }, /file-type bits/],
      ['bad chunk size', (b) => { b.superblock!.chunkSize = 3000 }, /chunk size/]
    ]
    for (const [what, spoil, message] of cases) {
      const b = sample()
      spoil(b)
      expect(() => validateBootstrap(b), what).toThrow(message)
    }
    const newer = sample()
    newer.superblock!.version = 2
    expect(() => validateBootstrap(newer)).toThrow(expect.objectContaining({ code: 'NFS_ERR_NOT_LAZY' }))
    expect(() => decodeBootstrap(Buffer.from('not zstd'))).toThrow(expect.objectContaining({ code: 'NFS_ERR_BAD_IMAGE' }))
  })
})

describe('layer merge rules', () => {
  const file = (layer: number): MergeNode => ({ ...newDir({}, layer), type: 'file', children: undefined })
  const names = (n: MergeNode | undefined): string[] => [...(n?.children?.keys() ?? [])].sort()

  it('refuses absolute paths and .. but accepts ./ prefixes', () => {
    expect(safeComponents('./a//b/./c/')).toEqual(['a', 'b', 'c'])
    expect(safeComponents('./')).toEqual([])
    expect(safeComponents('/')).toEqual([]) // umoci's name for the root directory
    expect(() => safeComponents('/..')).toThrow(expect.objectContaining({ code: 'NFS_ERR_UNSAFE_PATH' }))
    expect(() => safeComponents('/etc/passwd')).toThrow(expect.objectContaining({ code: 'NFS_ERR_UNSAFE_PATH' }))
    expect(() => safeComponents('a/../../b')).toThrow(expect.objectContaining({ code: 'NFS_ERR_UNSAFE_PATH' }))
    expect(() => safeComponents(`${'x'.repeat(256)}`)).toThrow(expect.objectContaining({ code: 'NFS_ERR_BAD_LAYER' }))
  })

  it('hides only lower-layer content behind an opaque marker, wherever it comes in the layer', () => {
    const t = new MergeTree()
    t.layer = 1
    t.put(['d', 'old'], file(1), 'd/old')
    t.put(['d', 'sub', 'old2'], file(1), 'd/sub/old2')
    t.layer = 2
    t.put(['d', 'sub', 'new'], file(2), 'd/sub/new') // before the marker
    expect(t.applyWhiteout(['d', '.wh..wh..opq'], 'd/.wh..wh..opq')).toBe(true)
    t.put(['d', 'after'], file(2), 'd/after')
    const d = t.root.children!.get('d')
    expect(names(d)).toEqual(['after', 'sub'])
    expect(names(d!.children!.get('sub'))).toEqual(['new'])
  })

  it('applies a whiteout to lower layers only, and follows symlinked parents inside the root', () => {
    const t = new MergeTree()
    t.layer = 1
    t.put(['usr', 'bin', 'tool'], file(1), 'usr/bin/tool')
    t.put(['bin'], { ...file(1), type: 'symlink', symlink: '/usr/bin' }, 'bin')
    t.put(['up'], { ...file(1), type: 'symlink', symlink: '../../../..' }, 'up')
    t.layer = 2
    t.put(['x'], file(2), 'x')
    t.applyWhiteout(['.wh.x'], '.wh.x') // same layer: stays
    t.applyWhiteout(['bin', '.wh.tool'], 'bin/.wh.tool') // through the symlink
    t.put(['up', 'escaped'], file(2), 'up/escaped') // resolves to the root, not above it
    expect(names(t.root)).toEqual(['bin', 'escaped', 'up', 'usr', 'x'])
    expect(names(t.root.children!.get('usr')!.children!.get('bin'))).toEqual([])
  })

  it('keeps hardlinks as one node and refuses links to nothing or to directories', () => {
    const t = new MergeTree()
    t.layer = 1
    const orig = file(1)
    t.put(['a'], orig, 'a')
    t.link(['b'], ['a'], 'b', 'a')
    expect(t.root.children!.get('b')).toBe(orig)
    t.put(['d'], newDir({}, 1), 'd')
    expect(() => t.link(['c'], ['missing'], 'c', 'missing')).toThrow(expect.objectContaining({ code: 'NFS_ERR_BAD_LAYER' }))
    expect(() => t.link(['c'], ['d'], 'c', 'd')).toThrow(expect.objectContaining({ code: 'NFS_ERR_BAD_LAYER' }))
  })
})
