// Good downloads through a real supernode + dfdaemon: the right bytes land in FILE, --json
// describes them, --range, -H and --filter reach the daemon and the origin as they should;
// a warm FILE is a hard link to the daemon's file, and a write into it does not reach clients.

import { open, readFile, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { BINS, makeBlob, run, sha256Hex } from '@naiad/testkit'

import { EXIT, type JsonResult } from '../src/index.ts'
import { leftovers, lines, startCluster, type Cluster } from './fixtures.ts'

let c: Cluster
const blob = makeBlob(5 * (1 << 20) + 12345, 'dfget-download')
const small = makeBlob(300_000, 'dfget-small')
const linkBlob = makeBlob(3 * (1 << 20) + 777, 'dfget-linked')

beforeAll(async () => {
  c = await startCluster('dfget-download')
  c.origin.files.set('/blob', { data: blob })
  c.origin.files.set('/small', { data: small })
  c.origin.files.set('/linked', { data: linkBlob })
})

afterAll(async () => {
  await c?.stop()
})

function dfget(args: string[]): ReturnType<typeof run> {
  return run(BINS.dfget, [...args, '--daemon', c.daemon.apiUrl], { timeoutMs: 60_000 })
}

describe('dfget downloads', () => {
  it('writes the exact bytes, and nothing else, into FILE', async () => {
    const dir = await c.outDir('plain')
    const out = join(dir, 'blob.bin')
    const r = await dfget([`${c.origin.url}/blob`, '-O', out])
    expect(r.code, r.stderr).toBe(EXIT.OK)
    expect(sha256Hex(await readFile(out))).toBe(sha256Hex(blob))
    expect(await leftovers(dir)).toEqual(['blob.bin'])
    // Without a terminal: plain lines (none unless the download takes over 5 s), then the summary.
    const err = lines(r.stderr)
    expect(err.at(-1)).toMatch(new RegExp(`^dfget: saved .*blob\\.bin \\(5\\.0 MiB, sha256:${sha256Hex(blob)}\\) in `))
    for (const l of err.slice(0, -1)) expect(l).toMatch(/^dfget: (downloading|saving) \d+% /)
    expect(r.stderr).not.toContain('\r')
    expect(r.stdout).toBe('')
  })

  it('--json prints one parseable result object; a second fetch comes from the cache', async () => {
    const dir = await c.outDir('json')
    const first = await dfget([`${c.origin.url}/blob`, '-O', join(dir, 'a'), '--json', '--no-progress'])
    expect(first.code, first.stderr).toBe(EXIT.OK)
    expect(first.stderr).toBe('')
    expect(lines(first.stdout)).toHaveLength(1)
    const a = JSON.parse(first.stdout) as JsonResult
    expect(a).toMatchObject({ ok: true, exitCode: 0, contentLength: blob.length, sha256: sha256Hex(blob), output: join(dir, 'a') })
    expect(a.ok && typeof a.taskId === 'string' && a.taskId.length === 64).toBe(true)

    const second = await dfget([`${c.origin.url}/blob`, '-O', join(dir, 'b'), '--json', '--no-progress'])
    const b = JSON.parse(second.stdout) as JsonResult
    expect(b).toMatchObject({ ok: true, cached: true, sha256: sha256Hex(blob) })
    expect(sha256Hex(await readFile(join(dir, 'b')))).toBe(sha256Hex(blob))
  })

  it('--range gives exactly the bytes START..END inclusive', async () => {
    const dir = await c.outDir('range')
    const out = join(dir, 'part')
    const r = await dfget([`${c.origin.url}/blob`, '-O', out, '--range', '1048570-2097160', '--json', '--no-progress'])
    expect(r.code, r.stderr).toBe(EXIT.OK)
    const want = blob.subarray(1048570, 2097161)
    const got = await readFile(out)
    expect(got.length).toBe(want.length)
    expect(got.equals(want)).toBe(true)
    expect(JSON.parse(r.stdout)).toMatchObject({ contentLength: want.length, sha256: sha256Hex(want) })
  })

  it('-H headers reach the origin', async () => {
    const dir = await c.outDir('headers')
    const before = c.origin.requests.length
    const r = await dfget([`${c.origin.url}/small?h=1`, '-O', join(dir, 'f'), '-H', 'Authorization: Bearer t0ken', '-H', 'X-Naiad-Test:  yes  ', '--no-progress'])
    expect(r.code, r.stderr).toBe(EXIT.OK)
    // The reads (the supernode's access check also asks, without credentials, with HEAD).
    const seen = c.origin.requests.slice(before).filter((q) => q.path === '/small' && q.method === 'GET')
    expect(seen.length).toBeGreaterThan(0)
    for (const q of seen) {
      expect(q.headers.authorization).toBe('Bearer t0ken')
      expect(q.headers['x-naiad-test']).toBe('yes')
    }
  })

  it('--digest that matches passes (hex in either case)', async () => {
    const dir = await c.outDir('digest')
    const r = await dfget([`${c.origin.url}/small?d=1`, '-O', join(dir, 'f'), '--digest', `sha256:${sha256Hex(small).toUpperCase()}`, '--no-progress'])
    expect(r.code, r.stderr).toBe(EXIT.OK)
    expect(sha256Hex(await readFile(join(dir, 'f')))).toBe(sha256Hex(small))
  })

  it('--filter makes URLs that differ only in the filtered parameters share one task', async () => {
    const dir = await c.outDir('filter')
    const a = await dfget([`${c.origin.url}/small?sig=aaa&v=1`, '-O', join(dir, 'a'), '--filter', 'sig,expires', '--json', '--no-progress'])
    const b = await dfget([`${c.origin.url}/small?v=1&sig=bbb&expires=9`, '-O', join(dir, 'b'), '--filter', 'sig,expires', '--json', '--no-progress'])
    const ra = JSON.parse(a.stdout) as JsonResult
    const rb = JSON.parse(b.stdout) as JsonResult
    expect(ra.ok && rb.ok).toBe(true)
    if (!ra.ok || !rb.ok) return
    expect(rb.taskId).toBe(ra.taskId)
    expect(rb.cached).toBe(true)
    // The query, which may carry a signature, is not echoed back.
    expect(rb.url).toBe(`${c.origin.url}/small?…`)
  })

  it('replaces an existing FILE only once the new content is verified', async () => {
    const dir = await c.outDir('replace')
    const out = join(dir, 'f')
    await writeFile(out, 'old content')
    const bad = await dfget([`${c.origin.url}/small?r=1`, '-O', out, '--digest', `sha256:${'1'.repeat(64)}`, '--no-progress'])
    expect(bad.code).toBe(EXIT.VERIFY)
    expect(await readFile(out, 'utf8')).toBe('old content')
    const good = await dfget([`${c.origin.url}/small?r=1`, '-O', out, '--no-progress'])
    expect(good.code, good.stderr).toBe(EXIT.OK)
    expect(sha256Hex(await readFile(out))).toBe(sha256Hex(small))
    expect(await leftovers(dir)).toEqual(['f'])
  })

  it('takes the daemon from NAIAD_DAEMON when --daemon is not given', async () => {
    const dir = await c.outDir('env')
    const r = await run(BINS.dfget, [`${c.origin.url}/small`, '-O', join(dir, 'f'), '--no-progress'], { env: { NAIAD_DAEMON: c.daemon.apiUrl } })
    expect(r.code, r.stderr).toBe(EXIT.OK)
  })
})

/** dfget of /linked into `out` with --json; it must succeed. */
async function linked(out: string): Promise<JsonResult> {
  const r = await dfget([`${c.origin.url}/linked`, '-O', out, '--json', '--no-progress'])
  expect(r.code, r.stderr).toBe(EXIT.OK)
  return JSON.parse(r.stdout) as JsonResult
}

// On the daemon's host a warm download's FILE is a hard link to the daemon's verified file.
// A user who then writes into FILE writes into that file too: the daemon must notice, serve
// none of the changed bytes and fetch the content again.
describe('dfget warm output by hard link', () => {
  it('links the cache, and a write into FILE makes the daemon drop and fetch the task again', async () => {
    const dir = await c.outDir('link')
    const first = await linked(join(dir, 'first'))
    const second = await linked(join(dir, 'second'))
    expect(second).toMatchObject({ ok: true, cached: true })
    const a = await stat(join(dir, 'first'))
    const b = await stat(join(dir, 'second'))
    // One inode: the daemon's file and both outputs.
    expect(b.ino).toBe(a.ino)
    expect(b.nlink).toBe(3)
    // Again onto a FILE that already is that inode: nothing is left behind.
    await linked(join(dir, 'second'))
    expect(await leftovers(dir)).toEqual(['first', 'second'])
    expect(sha256Hex(await readFile(join(dir, 'second')))).toBe(sha256Hex(linkBlob))

    const userWrites = async (name: string): Promise<void> => {
      const fh = await open(join(dir, name), 'r+')
      await fh.write(Buffer.from('written by the user'), 0, 19, 1 << 20)
      await fh.close()
    }
    await userWrites('first')

    // The next download notices, and fetches the content again into a file of the daemon's own.
    const third = await linked(join(dir, 'third'))
    expect(third).toMatchObject({ ok: true, cached: false, sha256: sha256Hex(linkBlob) })
    // Every byte came again, from the supernode's seed or the origin, and was verified again.
    expect(third.ok && third.fromPeers + third.fromOrigin).toBe(linkBlob.length)
    expect(sha256Hex(await readFile(join(dir, 'third')))).toBe(sha256Hex(linkBlob))
    expect((await stat(join(dir, 'third'))).ino).not.toBe(a.ino)
    // The user's files keep what the user wrote (both names of the one inode).
    expect((await readFile(join(dir, 'second'))).subarray(1 << 20, (1 << 20) + 19).toString()).toBe('written by the user')

    // Nor does the content API serve changed bytes: the task is gone.
    await userWrites('third')
    const res = await fetch(`${c.daemon.apiUrl}/api/v1/tasks/${third.ok ? third.taskId : ''}/content`)
    expect(res.status).toBe(404)
    expect(await res.json()).toMatchObject({ code: 'DFD_ERR_TASK_NOT_FOUND' })
    expect(first.ok && first.taskId).toBe(third.ok && third.taskId)
  })
})
