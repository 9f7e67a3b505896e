// An HTTPS registry whose CA is not in any default store: the mirror and the seed reach it
// once given the CA file, and refuse it without.

import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  pushImage, runTool, sha256Hex, startDaemon, startRegistry, startSupernode,
  type DaemonHandle, type PushedImage, type RegistryHandle, type SupernodeHandle
} from '@naiad/testkit'

describe('registry mirror with an HTTPS registry', () => {
  let dir: string
  let plain: RegistryHandle
  let secure: RegistryHandle
  let sn: SupernodeHandle
  let trusting: DaemonHandle
  let untrusting: DaemonHandle
  let image: PushedImage

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'naiad-tls-'))
    const cert = join(dir, 'cert.pem')
    const key = join(dir, 'key.pem')
    const gen = await runTool('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '1',
      '-subj', '/CN=naiad-test-registry', '-addext', 'subjectAltName=IP:127.0.0.1'])
    expect(gen.code, gen.stderr).toBe(0)
    // Push over plain HTTP, then serve the same storage over TLS.
    plain = await startRegistry(join(dir, 'registry'))
    image = await pushImage(plain.url, 'naiad/tls', 'v1', [2 * 1024 * 1024])
    secure = await startRegistry(join(dir, 'registry'), { tls: { cert, key } })
    await mkdir(join(dir, 'cfg'), { recursive: true })
    await writeFile(join(dir, 'cfg', 'sn.yaml'), `origin:\n  ca-file: ${cert}\n`)
    await writeFile(join(dir, 'cfg', 'd.yaml'), `registry:\n  ca-file: ${cert}\n`)
    sn = await startSupernode(join(dir, 'sn'), { args: ['--config', join(dir, 'cfg', 'sn.yaml')] })
    trusting = await startDaemon(join(dir, 'd1'), sn.url, { args: ['--config', join(dir, 'cfg', 'd.yaml')] })
    untrusting = await startDaemon(join(dir, 'd2'), sn.url)
  })

  afterAll(async () => {
    await trusting?.process.stop()
    await untrusting?.process.stop()
    await sn?.process.stop()
    await secure?.stop()
    await plain?.stop()
    await rm(dir, { recursive: true, force: true })
  })

  it('pulls a blob over HTTPS with the configured CA', async () => {
    const layer = image.layers[0]
    const res = await fetch(`${trusting.proxyUrl}/v2/naiad/tls/blobs/${layer.digest}?ns=${secure.host}`)
    expect(res.status).toBe(200)
    expect(`sha256:${sha256Hex(Buffer.from(await res.arrayBuffer()))}`).toBe(layer.digest)
  })

  it('refuses a registry whose certificate it cannot verify', async () => {
    const res = await fetch(`${untrusting.proxyUrl}/v2/naiad/tls/manifests/v1?ns=${secure.host}`)
    expect(res.status).toBe(502)
    const body = await res.json() as { errors: Array<{ message: string; detail: { naiad: string } }> }
    expect(body.errors[0].detail.naiad).toBe('DFD_ERR_ORIGIN_UNREACHABLE')
  })
})
