// The output file: created beside FILE under a temporary name, renamed only on commit,
// removed on discard.

import { chown, mkdir, mkdtemp, readdir, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { fileIdentity, NaiadError } from '@naiad/proto'

import { AtomicFile } from '../src/index.ts'

let dir: string

beforeEach(async () => { dir = await mkdtemp(join(tmpdir(), 'dfget-atomic-')) })
afterEach(async () => { await rm(dir, { recursive: true, force: true }) })

async function* chunks(...parts: string[]): AsyncGenerator<Buffer> {
  for (const p of parts) yield Buffer.from(p)
}

describe('dfget atomic output file', () => {
  it('writes under a hidden temporary name and renames on commit', async () => {
    const f = await AtomicFile.create(join(dir, 'out.bin'))
    expect(await readdir(dir)).toEqual([expect.stringMatching(/^\.out\.bin\.dfget-[0-9a-f]{12}$/)])
    const seen: number[] = []
    const r = await f.write(chunks('hello ', 'world'), (n) => seen.push(n))
    expect(r).toEqual({ bytes: 11, sha256: 'b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9' })
    expect(seen).toEqual([6, 11])
    expect(await readdir(dir)).not.toContain('out.bin')
    await f.commit()
    expect(await readdir(dir)).toEqual(['out.bin'])
    expect(await readFile(join(dir, 'out.bin'), 'utf8')).toBe('hello world')
    await f.discard() // after commit: a no-op, the file stays
    expect(await readdir(dir)).toEqual(['out.bin'])
  })

  it('writes many chunks in order, across batches', async () => {
    const parts = Array.from({ length: 300 }, (_, i) => Buffer.alloc(10_000 + i, i % 251))
    async function* gen(): AsyncGenerator<Buffer> { for (const p of parts) yield p }
    const f = await AtomicFile.create(join(dir, 'big'))
    const r = await f.write(gen())
    await f.commit()
    const want = Buffer.concat(parts)
    expect(r.bytes).toBe(want.length)
    expect((await readFile(join(dir, 'big'))).equals(want)).toBe(true)
  })

  it('leaves nothing behind on discard, and keeps an existing FILE', async () => {
    await writeFile(join(dir, 'out'), 'old')
    const f = await AtomicFile.create(join(dir, 'out'))
    await f.write(chunks('partial'))
    await f.discard()
    await f.discard()
    expect(await readdir(dir)).toEqual(['out'])
    expect(await readFile(join(dir, 'out'), 'utf8')).toBe('old')
  })

  it('refuses a directory as FILE', async () => {
    await mkdir(join(dir, 'sub'))
    await expect(AtomicFile.create(join(dir, 'sub'))).rejects.toMatchObject({ code: 'DFGET_ERR_OUTPUT' })
  })

  it('fails with DFGET_ERR_OUTPUT when the file cannot be created', async () => {
    // A file where a directory should be: fails for every user, root included.
    await writeFile(join(dir, 'plain'), '')
    const err = await AtomicFile.create(join(dir, 'plain', 'f')).then(() => undefined, (e: unknown) => e)
    expect(err).toBeInstanceOf(NaiadError)
    expect((err as NaiadError).code).toBe('DFGET_ERR_OUTPUT')
    expect((err as NaiadError).message).toMatch(/ENOTDIR/)
  })
})

// On the daemon's host: the daemon's verified data file becomes FILE by a hard link, or by
// a kernel copy where a link cannot be made.
describe('dfget atomic output file from the daemon\'s file', () => {
  const content = Buffer.from('verified content of a complete task\n')

  async function daemonFile(at = dir): Promise<{ path: string; file: string }> {
    const path = join(at, 'daemon-data')
    await writeFile(path, content, { mode: 0o600 })
    return { path, file: fileIdentity(await stat(path, { bigint: true })) }
  }

  it('links the file beside FILE and renames the link into place: one inode, the mode of a new file', async () => {
    const src = await daemonFile()
    const f = await AtomicFile.create(join(dir, 'out'))
    const { mode } = await stat(f.tempPath)
    expect(await f.takeFrom(src.path, { length: content.length, file: src.file })).toBe('link')
    expect((await readdir(dir)).filter((n) => n.startsWith('.out.dfget-'))).toHaveLength(1)
    await f.commit()
    expect((await readdir(dir)).sort()).toEqual(['daemon-data', 'out'])
    const out = await stat(join(dir, 'out'))
    expect(out.ino).toBe((await stat(src.path)).ino)
    expect(out.mode & 0o777).toBe(mode & 0o777)
    expect(await readFile(join(dir, 'out'))).toEqual(content)
    // A link or a chmod leaves the identity the daemon checks as it was.
    expect(fileIdentity(await stat(src.path, { bigint: true }))).toBe(src.file)
  })

  it('discarding a linked output removes only its own name', async () => {
    const src = await daemonFile()
    const f = await AtomicFile.create(join(dir, 'out'))
    expect(await f.takeFrom(src.path, { length: content.length, file: src.file })).toBe('link')
    await f.discard()
    expect(await readdir(dir)).toEqual(['daemon-data'])
    expect(await readFile(src.path)).toEqual(content)
  })

  it('refuses a file that is not the one the daemon verified (DFD_ERR_TASK_NOT_FOUND), linking nothing', async () => {
    const src = await daemonFile()
    const later = new Date(Date.now() + 5000)
    await utimes(src.path, later, later) // written to since the daemon recorded it
    const f = await AtomicFile.create(join(dir, 'out'))
    await expect(f.takeFrom(src.path, { length: content.length, file: src.file })).rejects.toMatchObject({ code: 'DFD_ERR_TASK_NOT_FOUND' })
    await expect(f.takeFrom(src.path, { length: content.length + 1 })).rejects.toMatchObject({ code: 'DFD_ERR_TASK_NOT_FOUND' })
    await f.discard()
    expect(await readdir(dir)).toEqual(['daemon-data'])
  })

  it('copies from another file system, and from a file of another user', async () => {
    // /dev/shm is a tmpfs: a link from it to the temp dir fails with EXDEV.
    const shm = await mkdtemp('/dev/shm/dfget-atomic-')
    try {
      const src = await daemonFile(shm)
      const f = await AtomicFile.create(join(dir, 'out'))
      expect(await f.takeFrom(src.path, { length: content.length, file: src.file })).toBe('copy')
      await f.commit()
      expect(await readFile(join(dir, 'out'))).toEqual(content)
    } finally {
      await rm(shm, { recursive: true, force: true })
    }
    // Linked, FILE would belong to (and be writable by) that user. Tests run as root.
    const other = await daemonFile()
    await chown(other.path, 65534, 65534)
    const g = await AtomicFile.create(join(dir, 'out2'))
    expect(await g.takeFrom(other.path, { length: content.length, file: other.file })).toBe('copy')
    await g.commit()
    expect((await stat(join(dir, 'out2'))).ino).not.toBe((await stat(other.path)).ino)
    expect((await stat(join(dir, 'out2'))).uid).toBe(process.getuid!())
    expect(await readFile(join(dir, 'out2'))).toEqual(content)
  })

  it('answers undefined, writing nothing, when the file cannot be opened here', async () => {
    const f = await AtomicFile.create(join(dir, 'out'))
    expect(await f.takeFrom(join(dir, 'missing'), { length: 1 })).toBeUndefined()
    await f.discard()
    expect(await readdir(dir)).toEqual([])
  })
})
