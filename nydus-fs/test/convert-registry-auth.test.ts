// The registry client's authentication, end to end through convert and check: Basic
// credentials from NAIAD_REGISTRY_AUTH against an htpasswd registry, and Bearer token
// challenges answered by a token service (here a small front in front of a real registry
// that demands tokens, as Docker Hub and Harbor do).

import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { createServer, request as httpRequest, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { makeOciLayer, pushOciImage, runTool, startRegistry, type RegistryHandle } from '@naiad/testkit'

import { nydusFs } from './convert-helpers.ts'

const USER = 'naiad'
const PASS = 's3cret'
const BASIC = `Basic ${Buffer.from(`${USER}:${PASS}`).toString('base64')}`

let dir: string
let basicRegistry: RegistryHandle
let openRegistry: RegistryHandle

/** Demands `Bearer <token for the scopes>` and sends clients to its /token realm. */
class TokenFront {
  server: Server | undefined
  host = ''
  readonly tokenRequests: Array<{ scopes: string[]; authorized: boolean }> = []
  private readonly target: URL

  constructor(target: string) {
    this.target = new URL(target)
  }

  async start(): Promise<this> {
    this.server = createServer((req, res) => {
      const url = new URL(req.url ?? '/', `http://${this.host}`)
      if (url.pathname === '/token') {
        const authorized = req.headers.authorization === BASIC
        const scopes = url.searchParams.getAll('scope')
        this.tokenRequests.push({ scopes, authorized })
        if (!authorized) { res.writeHead(401).end(); return }
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ token: `tok:${scopes.sort().join(' ')}` }))
        return
      }
      const repo = /^\/v2\/(.+?)\/(manifests|blobs|tags)\//.exec(url.pathname)?.[1] ?? ''
      const write = req.method !== 'GET' && req.method !== 'HEAD'
      const token = req.headers.authorization?.replace(/^Bearer /, '') ?? ''
      const granted = token.startsWith('tok:') ? token.slice(4).split(' ') : []
      const ok = granted.some((s) => s === `repository:${repo}:${write ? 'pull,push' : 'pull'}` || s === `repository:${repo}:pull,push`)
      if (!ok && url.pathname !== '/v2/') {
        res.writeHead(401, {
          'www-authenticate': `Bearer realm="http://${this.host}/token",service="front",scope="repository:${repo}:${write ? 'pull,push' : 'pull'}"`,
          'content-type': 'application/json'
        }).end('{"errors":[{"code":"UNAUTHORIZED","message":"token required"}]}')
        req.resume()
        return
      }
      const headers = { ...req.headers }
      delete headers.authorization
      const up = httpRequest({ host: this.target.hostname, port: this.target.port, method: req.method, path: req.url, headers }, (upRes) => {
        res.writeHead(upRes.statusCode ?? 502, upRes.headers)
        upRes.pipe(res)
      })
      up.on('error', () => res.destroy())
      req.pipe(up)
    })
    this.server.listen(0, '127.0.0.1')
    await new Promise<void>((r) => this.server!.once('listening', r))
    this.host = `127.0.0.1:${(this.server.address() as AddressInfo).port}`
    return this
  }

  async stop(): Promise<void> {
    this.server?.closeAllConnections()
    await new Promise<void>((r) => this.server?.close(() => r()) ?? r())
  }
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'nfs-auth-'))
  const ht = await runTool('htpasswd', ['-Bbn', USER, PASS])
  if (ht.code !== 0) throw new Error(`htpasswd: ${ht.stderr}`)
  await writeFile(join(dir, 'htpasswd'), ht.stdout)
  basicRegistry = await startRegistry(join(dir, 'basic'), { htpasswd: join(dir, 'htpasswd') })
  openRegistry = await startRegistry(join(dir, 'open'))
  const layer = await makeOciLayer([{ name: 'etc/motd', content: 'private\n' }])
  await pushOciImage(basicRegistry.url, 'priv/app', 'v1', [layer], { auth: BASIC })
  await pushOciImage(openRegistry.url, 'priv/app', 'v1', [layer])
}, 120_000)

afterAll(async () => {
  await basicRegistry?.stop()
  await openRegistry?.stop()
  if (dir !== undefined) await rm(dir, { recursive: true, force: true })
})

describe('registry authentication', () => {
  it('uses Basic credentials from NAIAD_REGISTRY_AUTH, and says so when they are missing', async () => {
    const src = `${basicRegistry.host}/priv/app:v1`
    const denied = await nydusFs(['convert', src, `${basicRegistry.host}/priv/app:lazy`, '--plain-http'], { NAIAD_REGISTRY_AUTH: '' })
    expect(denied.code).toBe(1)
    expect(denied.stderr).toContain('[OCI_ERR_REGISTRY]')
    expect(denied.stderr).toContain('NAIAD_REGISTRY_AUTH')
    const env = { NAIAD_REGISTRY_AUTH: `${USER}:${PASS}` }
    const ok = await nydusFs(['convert', src, `${basicRegistry.host}/priv/app:lazy`, '--plain-http'], env)
    expect(ok.code, ok.stderr).toBe(0)
    const check = await nydusFs(['check', `${basicRegistry.host}/priv/app:lazy`, '--plain-http'], env)
    expect(check.code, check.stderr).toBe(0)
  })

  it('answers Bearer challenges with tokens for the scopes each request needs', async () => {
    const front = await new TokenFront(openRegistry.url).start()
    try {
      const env = { NAIAD_REGISTRY_AUTH: `${USER}:${PASS}` }
      const res = await nydusFs(['convert', `${front.host}/priv/app:v1`, `${front.host}/priv/lazy:v1`, '--plain-http'], env)
      expect(res.code, res.stderr).toBe(0)
      expect(front.tokenRequests.every((t) => t.authorized)).toBe(true)
      expect(front.tokenRequests.some((t) => t.scopes.includes('repository:priv/lazy:pull,push'))).toBe(true)
      const check = await nydusFs(['check', `${front.host}/priv/lazy:v1`, '--plain-http'], env)
      expect(check.code, check.stderr).toBe(0)
      // Without credentials the token service refuses: a typed error, not a hang.
      const anon = await nydusFs(['check', `${front.host}/priv/lazy:v1`, '--plain-http'], { NAIAD_REGISTRY_AUTH: '' })
      expect(anon.code).toBe(1)
      expect(anon.stderr).toContain('[OCI_ERR_REGISTRY]')
      expect(anon.stderr).toContain('token service')
    } finally {
      await front.stop()
    }
  })
})
