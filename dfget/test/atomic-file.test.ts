// The output file: created beside FILE under a temporary name, renamed only on commit,
// removed on discard.

import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { NaiadError } from '@naiad/proto'

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
