// The OCI client's parts that need no registry: references in every spelling, platforms,
// challenges, the token cache and Docker's config.json credentials. The client itself runs
// against a real registry in nydus-fs's tests and a fake one in preheat's.

import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { describe, expect, it } from 'vitest'

import {
  loadDockerCredentials, parseChallenge, parseIndex, parseRef, parseRefOrUrl, registryBase, selectPlatform, TokenCache
} from '../src/index.ts'

const D = `sha256:${'a'.repeat(64)}`

describe('image references', () => {
  it('reads docker and containerd spellings', () => {
    expect(parseRef('alpine')).toEqual({ registry: 'docker.io', repository: 'library/alpine', tag: 'latest' })
    expect(parseRef('localhost:5000/team/app:v1')).toEqual({ registry: 'localhost:5000', repository: 'team/app', tag: 'v1' })
    expect(parseRef(`reg.io/app@${D}`)).toEqual({ registry: 'reg.io', repository: 'app', digest: D })
    expect(parseRefOrUrl('http://reg.io:5000/v2/team/app/manifests/v2')).toEqual({ ref: { registry: 'reg.io:5000', repository: 'team/app', tag: 'v2' }, plainHttp: true })
    expect(parseRefOrUrl(`https://index.docker.io/v2/library/alpine/manifests/${D}`).ref).toEqual({ registry: 'index.docker.io', repository: 'library/alpine', digest: D })
  })

  it('names the API base the way the mirror does', () => {
    expect(registryBase('docker.io')).toBe('https://registry-1.docker.io')
    expect(registryBase('reg.io:5000', { insecure: ['reg.io'] })).toBe('http://reg.io:5000')
    expect(registryBase('reg.io', { plainHttp: true })).toBe('http://reg.io')
  })

  it.each(['', 'Host/UPPER:tag', 'reg.io/app:bad tag', 'reg.io/app@sha256:short', 'https://reg.io/not/a/manifest'])('refuses %j with OCI_ERR_BAD_REF', (raw) => {
    expect(() => parseRefOrUrl(raw)).toThrow(expect.objectContaining({ code: 'OCI_ERR_BAD_REF' }))
  })
})

describe('indexes', () => {
  const index = parseIndex(Buffer.from(JSON.stringify({
    schemaVersion: 2,
    manifests: [
      { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: `sha256:${'1'.repeat(64)}`, size: 1, platform: { os: 'linux', architecture: 'amd64' } },
      { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: `sha256:${'2'.repeat(64)}`, size: 1, platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } }
    ]
  })))

  it("picks a platform's manifest, arm64 without a variant meaning v8", () => {
    expect(selectPlatform(index, 'linux/arm64').digest).toBe(`sha256:${'2'.repeat(64)}`)
    expect(selectPlatform(index, 'linux/amd64').digest).toBe(`sha256:${'1'.repeat(64)}`)
  })

  it('names the platforms it has when the wanted one is missing', () => {
    expect(() => selectPlatform(index, 'windows/amd64')).toThrow(expect.objectContaining({ code: 'OCI_ERR_BAD_MANIFEST', message: expect.stringContaining('linux/arm64/v8') }))
    expect(() => parseIndex(Buffer.from('{"manifests": [{"digest": "x"}]}'))).toThrow(expect.objectContaining({ code: 'OCI_ERR_BAD_MANIFEST' }))
  })
})

describe('authentication', () => {
  it('parses Bearer challenges, quoted and escaped, and prefers Bearer among several', () => {
    expect(parseChallenge('Bearer realm="https://auth.io/token",service="reg.io",scope="repository:a/b:pull"')).toEqual({
      scheme: 'bearer', params: { realm: 'https://auth.io/token', service: 'reg.io', scope: 'repository:a/b:pull' }
    })
    expect(parseChallenge(['Basic realm="x"', 'Bearer realm="y"'])?.params.realm).toBe('y')
    expect(parseChallenge(undefined)).toBeUndefined()
  })

  it('caches tokens per set of scopes until shortly before they expire', () => {
    const cache = new TokenCache()
    cache.set(['repository:a:pull', 'repository:b:pull'], 't1', 60, 0)
    expect(cache.get(['repository:b:pull', 'repository:a:pull', 'repository:a:pull'], 49_000)).toBe('t1')
    expect(cache.get(['repository:b:pull', 'repository:a:pull'], 51_000)).toBeUndefined()
    expect(cache.get(['repository:a:pull'], 0)).toBeUndefined()
  })

  it("reads Docker's config.json, Docker Hub's entries counting for its API host too", async () => {
    const dir = await mkdtemp(join(tmpdir(), 'naiad-oci-'))
    try {
      const file = join(dir, 'config.json')
      await writeFile(file, JSON.stringify({ auths: { 'https://index.docker.io/v1/': { auth: 'dTpw' }, 'reg.io:5000': { username: 'u', password: 'p' }, 'empty.io': {} } }))
      const creds = loadDockerCredentials(file)
      expect(creds.get('index.docker.io')).toBe('Basic dTpw')
      expect(creds.get('registry-1.docker.io')).toBe('Basic dTpw')
      expect(creds.get('reg.io:5000')).toBe(`Basic ${Buffer.from('u:p').toString('base64')}`)
      expect(creds.has('empty.io')).toBe(false)
      await writeFile(file, '{nope')
      expect(() => loadDockerCredentials(file)).toThrow(expect.objectContaining({ code: 'PROTO_ERR_BAD_CONFIG' }))
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })
})
