// The command line: flags, defaults, validation and --help.

import { describe, expect, it } from 'vitest'
import { BINS, run } from '@naiad/testkit'
import { loadOptions, NaiadError } from '@naiad/proto'

import { cliOptionsFromLoaded, DFGET_COMMAND, DFGET_DEFAULTS, EXIT, EXIT_CODE_HELP, parseHeaders } from '../src/index.ts'

function parse(argv: string[], env: NodeJS.ProcessEnv = {}): ReturnType<typeof cliOptionsFromLoaded> {
  return cliOptionsFromLoaded(loadOptions(DFGET_COMMAND, argv, env))
}

function usageError(argv: string[]): string {
  try {
    parse(argv)
  } catch (err) {
    expect(err).toBeInstanceOf(NaiadError)
    expect((err as NaiadError).code).toBe('PROTO_ERR_USAGE')
    return (err as NaiadError).message
  }
  throw new Error(`expected ${argv.join(' ')} to be rejected`)
}

describe('dfget options', () => {
  it('has the documented defaults', () => {
    const o = parse(['http://example.com/f', '-O', 'f'])
    expect(o).toEqual({
      url: 'http://example.com/f', output: 'f', daemonUrl: DFGET_DEFAULTS.daemon, headers: {}, digest: undefined,
      range: undefined, filter: [], timeoutMs: 2 * 3600_000, progress: true, json: false
    })
  })

  it('reads every flag', () => {
    const o = parse(['https://example.com/f?sig=1', '--output', 'out', '--daemon', 'http://10.0.0.1:65003/', '--digest', `sha256:${'A'.repeat(64)}`,
      '-H', 'Authorization: Basic eA==', '--header', 'X-A: 1', '--range', '10-20', '--filter', 'sig, expires', '--timeout', '1m30s', '--no-progress', '--json'])
    expect(o).toEqual({
      url: 'https://example.com/f?sig=1', output: 'out', daemonUrl: 'http://10.0.0.1:65003', headers: { Authorization: 'Basic eA==', 'X-A': '1' },
      digest: `sha256:${'a'.repeat(64)}`, range: '10-20', filter: ['sig', 'expires'], timeoutMs: 90_000, progress: false, json: true
    })
  })

  it('takes 0s as no timeout', () => {
    expect(parse(['http://e.com/f', '-O', 'f', '--timeout', '0s']).timeoutMs).toBe(0)
  })

  it('names the problem for each bad value', () => {
    expect(usageError(['-O', 'f'])).toMatch(/missing URL/)
    expect(usageError(['http://e.com/f'])).toMatch(/missing -O FILE/)
    expect(usageError(['ftp://e.com/f', '-O', 'f'])).toMatch(/unsupported URL scheme/)
    expect(usageError(['http://e.com/f', 'extra', '-O', 'f'])).toMatch(/unexpected argument "extra"/)
    expect(usageError(['http://e.com/f', '-O', 'f', '--digest', 'sha256:abc'])).toMatch(/--digest.*"sha256:abc"/)
    expect(usageError(['http://e.com/f', '-O', 'f', '--digest', `md5:${'a'.repeat(32)}`])).toMatch(/--digest/)
    expect(usageError(['http://e.com/f', '-O', 'f', '--range', '20-10'])).toMatch(/--range.*END must not be below START/)
    expect(usageError(['http://e.com/f', '-O', 'f', '--range', '5-'])).toMatch(/--range/)
    expect(usageError(['http://e.com/f', '-O', 'f', '--timeout', '10'])).toMatch(/--timeout.*"10"/)
    expect(usageError(['http://e.com/f', '-O', 'f', '--daemon', 'localhost:65003'])).toMatch(/--daemon/)
    expect(usageError(['http://e.com/f', '-O', 'f', '-H', 'no-colon'])).toMatch(/-H.*'Name: value'/)
    expect(usageError(['http://e.com/f', '-O', 'f', '-H', 'bad name: x'])).toMatch(/bad header name "bad name"/)
    expect(usageError(['http://e.com/f', '-O', 'f', '-H', 'Range: bytes=0-1'])).toMatch(/--range/)
    expect(usageError(['http://e.com/f', '-O', 'f', '--bogus'])).toMatch(/unknown flag --bogus/)
  })

  it('joins repeated headers as HTTP does', () => {
    expect(parseHeaders(['Accept: a', 'accept: b', 'X-Empty:'])).toEqual({ Accept: 'a, b', 'X-Empty': '' })
  })

  it('--help prints usage, options and exit codes, and exits 0', async () => {
    const r = await run(BINS.dfget, ['--help'])
    expect(r.code).toBe(0)
    expect(r.stderr).toBe('')
    expect(r.stdout).toMatch(/^Usage: dfget URL -O FILE/)
    for (const flag of ['--output', '--daemon', '--digest', '--header', '--range', '--filter', '--timeout', '--progress', '--json']) expect(r.stdout).toContain(flag)
    expect(r.stdout).toContain('Exit codes:')
    for (const [code] of EXIT_CODE_HELP) expect(r.stdout).toMatch(new RegExp(`^ +${code}  `, 'm'))
    expect((await run(BINS.dfget, ['-h'])).stdout).toBe(r.stdout)
  })

  it('exit codes are distinct', () => {
    const codes = Object.values(EXIT)
    expect(new Set(codes).size).toBe(codes.length)
  })
})
