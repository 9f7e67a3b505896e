// Verification and the daemon protocol, against a stub daemon that can lie or break off
// in ways a real one should not: dfget must never save bytes it has not verified.

import { createHash } from 'node:crypto'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'

import { EXIT, runDfget } from '../src/index.ts'
import { leftovers, lines } from './fixtures.ts'

const content = Buffer.from('the quick brown fox jumps over the lazy dog\n'.repeat(2000))
const sha = createHash('sha256').update(content).digest('hex')
const TASK = 'a'.repeat(64)

type Handler = (req: IncomingMessage, res: ServerResponse, body: string) => void
let handler: Handler
let server: Server
let daemonUrl: string
let dir: string

const done = (over: Record<string, unknown> = {}): string =>
  `${JSON.stringify({ event: 'done', taskId: TASK, contentLength: content.length, sha256: sha, fromPeers: 0, fromOrigin: content.length, cached: false, ...over })}\n`

/** A daemon that answers the POST with `events` and the content GET with `serve`. */
function stub(events: string, serve: (res: ServerResponse) => void): Handler {
  return (req, res) => {
    if (req.method === 'POST' && req.url === '/api/v1/downloads') {
      res.writeHead(200, { 'content-type': 'application/x-ndjson' })
      res.end(`${JSON.stringify({ event: 'started', taskId: TASK })}\n${events}`)
    } else if (req.method === 'GET' && req.url === `/api/v1/tasks/${TASK}/content`) {
      serve(res)
    } else {
      res.writeHead(404).end()
    }
  }
}

const serveOk = (res: ServerResponse): void => {
  res.writeHead(200, { 'content-length': content.length, 'x-naiad-sha256': sha }).end(content)
}

beforeAll(async () => {
  server = createServer((req, res) => {
    let body = ''
    req.on('data', (d: Buffer) => { body += d.toString() })
    req.on('end', () => handler(req, res, body))
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  daemonUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
})

afterAll(async () => {
  server.closeAllConnections()
  await new Promise((r) => server.close(r))
})

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'dfget-verify-'))
  return () => rm(dir, { recursive: true, force: true })
})

async function dfget(extra: string[] = []): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = ''
  let stderr = ''
  const code = await runDfget(['http://origin.invalid/f', '-O', join(dir, 'out'), '--daemon', daemonUrl, '--no-progress', ...extra], {
    stdout: { write: (s: string) => { stdout += s } },
    stderr: { write: (s: string) => { stderr += s } },
    env: {}
  })
  return { code, stdout, stderr }
}

async function expectFailure(r: { code: number; stderr: string }, exit: number, code: string): Promise<void> {
  expect(r.code, r.stderr).toBe(exit)
  expect(lines(r.stderr)).toHaveLength(1)
  expect(r.stderr).toMatch(new RegExp(`^dfget: .+ \\[${code}\\]\\n$`))
  expect(await leftovers(dir)).toEqual([])
}

describe('dfget verification', () => {
  it('saves content whose hash matches the announced one', async () => {
    handler = stub(done(), serveOk)
    const r = await dfget()
    expect(r.code, r.stderr).toBe(EXIT.OK)
    expect((await readFile(join(dir, 'out'))).equals(content)).toBe(true)
  })

  it('sends the request as the daemon API expects it', async () => {
    let seen: Record<string, unknown> = {}
    handler = (req, res, body) => {
      if (req.method === 'POST') seen = JSON.parse(body) as Record<string, unknown>
      stub(done(), serveOk)(req, res, body)
    }
    await dfget(['-H', 'A: 1', '-H', 'a: 2', '--range', '0-9', '--filter', 'x,y', '--timeout', '5m', '--digest', `sha256:${sha}`])
    expect(seen).toMatchObject({ url: 'http://origin.invalid/f', headers: { A: '1, 2' }, range: '0-9', filter: ['x', 'y'], digest: `sha256:${sha}` })
    expect(seen.timeoutMs).toBeGreaterThan(290_000)
    expect(seen.timeoutMs).toBeLessThanOrEqual(300_000)
  })

  it('rejects bytes that differ from the announced SHA-256', async () => {
    const other = Buffer.from(content)
    other[100] ^= 1
    handler = stub(done(), (res) => res.writeHead(200, { 'content-length': other.length }).end(other))
    await expectFailure(await dfget(), EXIT.VERIFY, 'DFGET_ERR_VERIFY')
  })

  it('rejects a content stream whose x-naiad-sha256 disagrees with the done event', async () => {
    handler = stub(done(), (res) => res.writeHead(200, { 'content-length': content.length, 'x-naiad-sha256': 'b'.repeat(64) }).end(content))
    await expectFailure(await dfget(), EXIT.VERIFY, 'DFGET_ERR_VERIFY')
  })

  it('rejects an announced digest that differs from --digest before copying anything', async () => {
    let gets = 0
    handler = (req, res, body) => {
      if (req.method === 'GET') gets++
      stub(done(), serveOk)(req, res, body)
    }
    await expectFailure(await dfget(['--digest', `sha256:${'c'.repeat(64)}`]), EXIT.VERIFY, 'DFGET_ERR_VERIFY')
    expect(gets).toBe(0)
  })

  it('rejects a content stream cut short', async () => {
    handler = stub(done(), (res) => {
      res.writeHead(200, { 'x-naiad-sha256': sha }) // no length: chunked, ended early
      res.end(content.subarray(0, 1000))
    })
    await expectFailure(await dfget(), EXIT.VERIFY, 'DFGET_ERR_VERIFY')
  })

  it('reports a content connection that breaks as the daemon failing', async () => {
    handler = stub(done(), (res) => {
      res.writeHead(200, { 'content-length': content.length, 'x-naiad-sha256': sha })
      res.write(content.subarray(0, 1000), () => res.destroy())
    })
    await expectFailure(await dfget(), EXIT.DAEMON, 'DFGET_ERR_DAEMON_UNREACHABLE')
  })

  it('reports an event stream that ends without done or error', async () => {
    handler = stub('', serveOk)
    await expectFailure(await dfget(), EXIT.DAEMON, 'DFGET_ERR_DAEMON_UNREACHABLE')
  })

  it('reports an event line that is not JSON', async () => {
    handler = stub('<html>oops</html>\n', serveOk)
    await expectFailure(await dfget(), EXIT.DAEMON, 'PROTO_ERR_DECODE')
  })

  it('ignores event kinds it does not know', async () => {
    handler = stub(`${JSON.stringify({ event: 'peer-joined', peer: 'x' })}\n${done()}`, serveOk)
    expect((await dfget()).code).toBe(EXIT.OK)
  })

  it('passes on the daemon error code and message', async () => {
    handler = stub(`${JSON.stringify({ event: 'error', code: 'DFD_ERR_CACHE_FULL', message: 'cache quota 1 GiB cannot fit 3 GiB' })}\n`, serveOk)
    const r = await dfget()
    await expectFailure(r, EXIT.FAILED, 'DFD_ERR_CACHE_FULL')
    expect(r.stderr).toBe('dfget: cache quota 1 GiB cannot fit 3 GiB [DFD_ERR_CACHE_FULL]\n')
  })

  it('maps a daemon-side timeout to the timeout exit code', async () => {
    handler = stub(`${JSON.stringify({ event: 'error', code: 'DFD_ERR_TIMEOUT', message: 'download did not finish within its timeout' })}\n`, serveOk)
    await expectFailure(await dfget(), EXIT.TIMEOUT, 'DFD_ERR_TIMEOUT')
  })

  it('maps a 400 from the daemon to a usage error', async () => {
    handler = (_req, res) => { res.writeHead(400, { 'content-type': 'application/json' }).end(JSON.stringify({ code: 'DFD_ERR_BAD_REQUEST', message: 'bad header "x y"' })) }
    await expectFailure(await dfget(), EXIT.USAGE, 'DFD_ERR_BAD_REQUEST')
  })

  it('says so when --daemon points at something that is not a daemon', async () => {
    handler = (_req, res) => { res.writeHead(404, { 'content-type': 'text/html' }).end('<h1>Not Found</h1>') }
    const r = await dfget()
    await expectFailure(r, EXIT.DAEMON, 'DFGET_ERR_DAEMON_UNREACHABLE')
    expect(r.stderr).toMatch(/HTTP 404.*dfdaemon/)
  })

  it('asks again when the task was evicted between done and the content read', async () => {
    let posts = 0
    handler = (req, res, body) => {
      if (req.method === 'POST') posts++
      if (req.method === 'GET' && posts === 1) {
        res.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ code: 'DFD_ERR_TASK_NOT_FOUND', message: 'gone' }))
        return
      }
      stub(done(), serveOk)(req, res, body)
    }
    const r = await dfget()
    expect(r.code, r.stderr).toBe(EXIT.OK)
    expect(posts).toBe(2)
  })

  it('times out a daemon that never finishes', async () => {
    handler = (req, res) => {
      res.writeHead(200, { 'content-type': 'application/x-ndjson' })
      res.write(`${JSON.stringify({ event: 'started', taskId: TASK })}\n`)
    }
    const t = Date.now()
    const r = await dfget(['--timeout', '300ms'])
    expect(Date.now() - t).toBeLessThan(3000)
    await expectFailure(r, EXIT.TIMEOUT, 'DFD_ERR_TIMEOUT')
  })
})
