// Bad input and failed downloads: one clear stderr line naming the problem and its code,
// the documented exit code, and no output file or temporary file left behind.

import { spawn } from 'node:child_process'
import { join } from 'node:path'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { BINS, makeBlob, REFUSED_URL, run } from '@naiad/testkit'

import { EXIT } from '../src/index.ts'
import { leftovers, lines, startCluster, type Cluster } from './fixtures.ts'

let c: Cluster
const blob = makeBlob(1 << 20, 'dfget-errors')

beforeAll(async () => {
  c = await startCluster('dfget-errors')
  c.origin.files.set('/blob', { data: blob })
  c.origin.faults.set('/boom', { status: 500 })
  c.origin.files.set('/stall', { data: blob })
  c.origin.faults.set('/stall', { stallMs: 20_000 })
})

afterAll(async () => {
  await c?.stop()
})

interface Case {
  name: string
  args: (out: string) => Promise<string[]>
  exit: number
  code: string
  /** Something the message must say, so that a user knows what went wrong. */
  says: RegExp
}

const cases: Case[] = [
  {
    name: 'malformed URL',
    args: async (out) => ['http//not a url', '-O', out, '--daemon', c.daemon.apiUrl],
    exit: EXIT.USAGE, code: 'PROTO_ERR_USAGE', says: /malformed URL/
  },
  {
    name: 'unknown flag',
    args: async (out) => [`${c.origin.url}/blob`, '-O', out, '--daemon', c.daemon.apiUrl, '--frobnicate'],
    exit: EXIT.USAGE, code: 'PROTO_ERR_USAGE', says: /unknown flag --frobnicate/
  },
  {
    name: 'bad --timeout value',
    args: async (out) => [`${c.origin.url}/blob`, '-O', out, '--daemon', c.daemon.apiUrl, '--timeout', '30'],
    exit: EXIT.USAGE, code: 'PROTO_ERR_USAGE', says: /--timeout.*"30"/
  },
  {
    name: 'origin 404',
    args: async (out) => [`${c.origin.url}/missing`, '-O', out, '--daemon', c.daemon.apiUrl],
    exit: EXIT.FAILED, code: 'DFD_ERR_ORIGIN_STATUS', says: /404/
  },
  {
    name: 'origin 500',
    args: async (out) => [`${c.origin.url}/boom`, '-O', out, '--daemon', c.daemon.apiUrl],
    exit: EXIT.FAILED, code: 'DFD_ERR_ORIGIN_STATUS', says: /500/
  },
  {
    name: 'origin connection refused',
    args: async (out) => [`${REFUSED_URL}/blob`, '-O', out, '--daemon', c.daemon.apiUrl],
    exit: EXIT.FAILED, code: 'DFD_ERR_ORIGIN_UNREACHABLE', says: /ECONNREFUSED/
  },
  {
    name: '--digest mismatch',
    args: async (out) => [`${c.origin.url}/blob?for=digest`, '-O', out, '--daemon', c.daemon.apiUrl, '--digest', `sha256:${'0'.repeat(64)}`],
    exit: EXIT.VERIFY, code: 'DFD_ERR_DIGEST_MISMATCH', says: /expected sha256:0{64}/
  },
  {
    name: 'unreachable daemon',
    args: async (out) => [`${c.origin.url}/blob`, '-O', out, '--daemon', REFUSED_URL],
    exit: EXIT.DAEMON, code: 'DFGET_ERR_DAEMON_UNREACHABLE', says: /cannot reach the daemon.*ECONNREFUSED/
  },
  {
    name: 'output directory missing',
    args: async (out) => [`${c.origin.url}/blob`, '-O', join(out, 'no-such-dir', 'file'), '--daemon', c.daemon.apiUrl],
    exit: EXIT.OUTPUT, code: 'DFGET_ERR_OUTPUT', says: /ENOENT/
  },
  {
    name: '--timeout passes',
    args: async (out) => [`${c.origin.url}/stall`, '-O', out, '--daemon', c.daemon.apiUrl, '--timeout', '1s'],
    exit: EXIT.TIMEOUT, code: 'DFD_ERR_TIMEOUT', says: /within --timeout 1s|within its timeout/
  }
]

describe('dfget on bad input', () => {
  for (const k of cases) {
    it(`${k.name}: exit ${k.exit}, one line with ${k.code}, no file`, async () => {
      const dir = await c.outDir(k.name.replace(/\W+/g, '-'))
      const out = join(dir, 'file.bin')
      // Progress stays on (the default): a failed run must still print a single line.
      const r = await run(BINS.dfget, await k.args(out), { timeoutMs: 60_000 })
      const errLines = lines(r.stderr)
      expect(errLines, r.stderr).toHaveLength(1)
      expect(errLines[0]).toMatch(new RegExp(`^dfget: .+ \\[${k.code}\\]$`))
      expect(errLines[0]).toMatch(k.says)
      expect(r.code, r.stderr).toBe(k.exit)
      expect(r.stdout).toBe('')
      expect(await leftovers(dir)).toEqual([])
    })
  }

  it('--json reports a failure as one JSON object on stdout, with the same code', async () => {
    const dir = await c.outDir('json-failure')
    const r = await run(BINS.dfget, [`${c.origin.url}/missing`, '-O', join(dir, 'f'), '--daemon', c.daemon.apiUrl, '--json'])
    expect(r.code).toBe(EXIT.FAILED)
    const result = JSON.parse(r.stdout) as { ok: boolean; exitCode: number; error: { code: string } }
    expect(result).toMatchObject({ ok: false, exitCode: EXIT.FAILED, error: { code: 'DFD_ERR_ORIGIN_STATUS' } })
    expect(lines(r.stderr)).toHaveLength(1)
    expect(await leftovers(dir)).toEqual([])
  })

  it('--json reports a usage error as JSON too', async () => {
    const r = await run(BINS.dfget, ['--json', '--nope'])
    expect(r.code).toBe(EXIT.USAGE)
    expect(JSON.parse(r.stdout)).toMatchObject({ ok: false, exitCode: EXIT.USAGE, error: { code: 'PROTO_ERR_USAGE' } })
  })

  it('SIGINT stops the download, removes the temporary file and exits 130', async () => {
    const dir = await c.outDir('sigint')
    const child = spawn(process.execPath, [BINS.dfget, `${c.origin.url}/stall?sigint`, '-O', join(dir, 'f'), '--daemon', c.daemon.apiUrl], { stdio: ['ignore', 'pipe', 'pipe'] })
    let stderr = ''
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
    // Wait until dfget has created its temporary file, i.e. it is mid-download.
    for (let i = 0; i < 100 && (await leftovers(dir)).length === 0; i++) await new Promise((r) => setTimeout(r, 50))
    expect((await leftovers(dir))[0]).toMatch(/^\.f\.dfget-[0-9a-f]+$/)
    child.kill('SIGINT')
    expect(await exited).toBe(EXIT.SIGINT)
    expect(lines(stderr)).toEqual(['dfget: interrupted by SIGINT [PROTO_ERR_ABORTED]'])
    expect(await leftovers(dir)).toEqual([])
  })
})
