// Preheat request parsing: image references in every accepted spelling map to the blob URLs
// the registry mirror downloads, and bad requests are refused with a reason.

import { describe, expect, it } from 'vitest'

import { blobUrl, parseImageRef } from '../src/plugins/preheat/image-ref.ts'
import { parseDurationMs, parseJobRequest } from '../src/plugins/preheat/job-request.ts'

const D = `sha256:${'a'.repeat(64)}`
const opts = { insecureRegistries: ['reg.local:5000'], defaultParallelism: 4, defaultTtlMs: 0 }

describe('preheat image references', () => {
  it('builds the blob URL the mirror uses, for every spelling', () => {
    expect(blobUrl(parseImageRef('https://harbor.example.com/v2/library/nginx/manifests/1.25', []), D)).toBe(`https://harbor.example.com/v2/library/nginx/blobs/${D}`)
    expect(blobUrl(parseImageRef('reg.local:5000/team/app:v1', opts.insecureRegistries), D)).toBe(`http://reg.local:5000/v2/team/app/blobs/${D}`)
    // An https URL to an insecure registry still becomes http, as in the mirror.
    expect(parseImageRef('https://reg.local:5000/v2/team/app/manifests/v1', opts.insecureRegistries).base).toBe('http://reg.local:5000')
    expect(parseImageRef('alpine', [])).toMatchObject({ host: 'registry-1.docker.io', repo: 'library/alpine', reference: 'latest' })
    expect(parseImageRef('docker.io/bitnami/redis:7', [])).toMatchObject({ host: 'registry-1.docker.io', repo: 'bitnami/redis', reference: '7' })
    expect(parseImageRef('https://index.docker.io/v2/library/alpine/manifests/3.19', []).base).toBe('https://registry-1.docker.io')
    expect(parseImageRef(`localhost:5000/app@${D}`, [])).toMatchObject({ host: 'localhost:5000', repo: 'app', reference: D })
  })

  it('refuses malformed references', () => {
    for (const bad of ['https://host/not/a/manifest', 'Host/UPPER:tag', 'host.io/app:bad tag', 'host.io/app@sha256:short']) {
      expect(() => parseImageRef(bad, []), bad).toThrow(expect.objectContaining({ code: 'OCI_ERR_BAD_REF' }))
    }
  })
})

describe('preheat job requests', () => {
  it('reads Naiad and Dragonfly/Harbor bodies', () => {
    const naiad = parseJobRequest({ type: 'preheat', args: { type: 'image', url: 'reg.local:5000/a:1', parallelism: 8, deadline: '10m', ttlAfterFinished: 3600 } }, opts)
    expect(naiad).toMatchObject({ type: 'image', scope: 'seed', parallelism: 8, deadlineMs: 600_000, ttlMs: 3_600_000, platform: 'linux/amd64' })
    const harbor = parseJobRequest({ type: 'preheat', args: { type: 'image', url: 'https://h.io/v2/p/a/manifests/1', headers: { Authorization: 'Basic eDp5' }, scope: 'single_peer', timeout: 0 } }, opts)
    expect(harbor).toMatchObject({ scope: 'single_peer', deadlineMs: 0, parallelism: 4, headers: { Authorization: 'Basic eDp5' } })
    const file = parseJobRequest({ type: 'preheat', args: { type: 'file', urls: ['http://o/a', 'https://o/b'] } }, opts)
    expect(file.urls).toEqual(['http://o/a', 'https://o/b'])
  })

  it('refuses what it cannot do, naming why', () => {
    const fail = (args: Record<string, unknown>, type: unknown = 'preheat', code = 'SN_ERR_BAD_REQUEST'): string => {
      try {
        parseJobRequest({ type, args }, opts)
      } catch (err) {
        expect((err as { code: string }).code).toBe(code)
        return (err as Error).message
      }
      throw new Error('accepted')
    }
    expect(fail({ type: 'image', url: 'a:1', scope: 'all_peers' }, 'preheat', 'SN_ERR_SCOPE_UNSUPPORTED')).toContain('control service')
    expect(fail({ type: 'image', url: 'a:1', scope: { labels: { zone: 'a' } } }, 'preheat', 'SN_ERR_SCOPE_UNSUPPORTED')).toContain('control service')
    const peers = { ...opts, peerScopes: true }
    expect(parseJobRequest({ type: 'preheat', args: { url: 'a:1', scope: 'all_peers' } }, peers)).toMatchObject({ scope: 'all_peers' })
    expect(parseJobRequest({ type: 'preheat', args: { url: 'a:1', scope: { labels: { zone: 'a', 'node.kubernetes.io/pool': 'gpu' } } } }, peers))
      .toMatchObject({ scope: 'labels', labels: { zone: 'a', 'node.kubernetes.io/pool': 'gpu' } })
    const failPeers = (scope: unknown, code: string): void => {
      expect(() => parseJobRequest({ type: 'preheat', args: { url: 'a:1', scope } }, peers)).toThrow(expect.objectContaining({ code }))
    }
    failPeers('some_peers', 'SN_ERR_SCOPE_UNSUPPORTED')
    failPeers({ labels: {} }, 'SN_ERR_BAD_REQUEST')
    failPeers({ labels: { zone: 1 } }, 'SN_ERR_BAD_REQUEST')
    failPeers({ labels: { 'bad key': 'a' } }, 'SN_ERR_BAD_REQUEST')
    failPeers({ ips: ['10.0.0.1'] }, 'SN_ERR_BAD_REQUEST')
    failPeers(['a'], 'SN_ERR_BAD_REQUEST')
    expect(fail({ type: 'image', url: 'a:1' }, 'sync_peers')).toContain('only "preheat"')
    expect(fail({ type: 'file' })).toContain('url')
    expect(fail({ type: 'file', url: 'ftp://x/y' })).toContain('scheme')
    expect(fail({ type: 'image', url: 'a:1', parallelism: 0.5 })).toContain('parallelism')
    expect(fail({ type: 'image', url: 'a:1', deadline: 'soon' })).toContain('deadline')
    expect(fail({ type: 'image', url: 'a:1', platform: 'linux' })).toContain('platform')
  })

  it('parses durations with units, Go-style too', () => {
    expect(parseDurationMs('1h30m', 'x', 1000)).toBe(5_400_000)
    expect(parseDurationMs('30m0s', 'x', 1000)).toBe(1_800_000)
    expect(parseDurationMs(1_800_000_000_000, 'x', 1e-6)).toBe(1_800_000)
    expect(parseDurationMs(undefined, 'x', 1000)).toBe(0)
  })
})
