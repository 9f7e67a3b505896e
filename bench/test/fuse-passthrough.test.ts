// The bare passthrough FUSE file system of the fuse-read benchmark serves the bytes, tree and
// metadata of its source directory, refuses writes, and the benchmark's read worker reads the
// same bytes through it as from the source. The mount runs in its own process (the test
// process reads it, which would deadlock if it also served it).

import { spawn, type ChildProcess } from 'node:child_process'
import { lstat, mkdir, mkdtemp, readdir, readFile, readlink, rm, symlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { makeBlob, run, runTool, sha256Hex } from '@naiad/testkit'

const PASSTHROUGH = fileURLToPath(new URL('../fuse/passthrough.ts', import.meta.url))
const READ_WORKER = fileURLToPath(new URL('../fuse/read-worker.ts', import.meta.url))

let dir: string
let src: string
let mnt: string
let server: ChildProcess
let exited: Promise<number | null>
const blob = makeBlob(5 * 1024 * 1024 + 123, 'passthrough-test')

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bench-passthrough-'))
  src = join(dir, 'src')
  mnt = join(dir, 'mnt')
  await mkdir(join(src, 'sub', 'deeper'), { recursive: true })
  await writeFile(join(src, 'blob.bin'), blob)
  await writeFile(join(src, 'sub', 'deeper', 'hello.txt'), 'hello\n', { mode: 0o640 })
  await symlink('sub/deeper/hello.txt', join(src, 'link'))
  server = spawn(process.execPath, [PASSTHROUGH, src, mnt], { stdio: ['pipe', 'pipe', 'pipe'] })
  exited = new Promise((resolve) => server.once('exit', (code) => resolve(code)))
  let stderr = ''
  server.stderr!.on('data', (d: Buffer) => { stderr += d.toString() })
  await new Promise<void>((resolve, reject) => {
    createInterface({ input: server.stdout! }).on('line', (line) => { if (line.includes('"ready":true')) resolve() })
    void exited.then((code) => reject(new Error(`passthrough exited with ${code}: ${stderr}`)))
  })
}, 60_000)

afterAll(async () => {
  if (server !== undefined && server.exitCode === null) {
    server.kill('SIGTERM')
    const t = setTimeout(() => server.kill('SIGKILL'), 10_000)
    await exited
    clearTimeout(t)
  }
  if (mnt !== undefined) await runTool('fusermount', ['-uz', mnt]).catch(() => {})
  if (dir !== undefined) await rm(dir, { recursive: true, force: true })
})

describe('bench/fuse/passthrough.ts', () => {
  it('serves the source tree: names, contents, modes, sizes and symlinks', async () => {
    expect((await readdir(mnt)).sort()).toEqual(['blob.bin', 'link', 'sub'])
    expect(sha256Hex(await readFile(join(mnt, 'blob.bin')))).toBe(sha256Hex(blob))
    expect(await readFile(join(mnt, 'sub', 'deeper', 'hello.txt'), 'utf8')).toBe('hello\n')
    expect(await readlink(join(mnt, 'link'))).toBe('sub/deeper/hello.txt')
    expect(await readFile(join(mnt, 'link'), 'utf8')).toBe('hello\n')
    for (const p of ['blob.bin', 'sub/deeper/hello.txt', 'sub']) {
      const [a, b] = await Promise.all([lstat(join(src, p)), lstat(join(mnt, p))])
      expect({ mode: b.mode, size: b.size, uid: b.uid, ino: b.ino }, p).toEqual({ mode: a.mode, size: a.size, uid: a.uid, ino: a.ino })
    }
    await expect(readFile(join(mnt, 'missing'))).rejects.toMatchObject({ code: 'ENOENT' })
  })

  it('refuses writes', async () => {
    await expect(writeFile(join(mnt, 'blob.bin'), 'x')).rejects.toMatchObject({ code: 'EROFS' })
    await expect(writeFile(join(mnt, 'new.txt'), 'x')).rejects.toMatchObject({ code: 'EROFS' })
    expect(sha256Hex(await readFile(join(src, 'blob.bin')))).toBe(sha256Hex(blob))
  })

  it('gives the read worker the same bytes as the source file, sequentially and at random offsets', async () => {
    const seq = await run(READ_WORKER, ['seq', join(mnt, 'blob.bin'), '--hash', '--block', String(256 * 1024)])
    expect(seq.code, seq.stderr).toBe(0)
    expect(JSON.parse(seq.stdout)).toMatchObject({ bytes: blob.length, sha256: sha256Hex(blob) })
    const [viaMount, direct] = await Promise.all([
      run(READ_WORKER, ['random', join(mnt, 'blob.bin'), '--count', '500', '--seed', 's1']),
      run(READ_WORKER, ['random', join(src, 'blob.bin'), '--count', '500', '--seed', 's1'])
    ])
    expect(viaMount.code, viaMount.stderr).toBe(0)
    const a = JSON.parse(viaMount.stdout) as { reads: number; bytes: number; sha256: string }
    const b = JSON.parse(direct.stdout) as { sha256: string }
    expect(a).toMatchObject({ reads: 500, bytes: 500 * 4096 })
    expect(a.sha256).toBe(b.sha256)
    const other = await run(READ_WORKER, ['random', join(src, 'blob.bin'), '--count', '500', '--seed', 's2'])
    expect((JSON.parse(other.stdout) as { sha256: string }).sha256).not.toBe(b.sha256)
  })

  it('unmounts when told to stop', async () => {
    server.kill('SIGTERM')
    expect(await exited).toBe(0)
    const mounts = await readFile('/proc/self/mountinfo', 'utf8')
    expect(mounts).not.toContain(` ${mnt} `)
  })
})
