// The preheat plugin against real processes: a docker-registry behind a counting proxy, a
// supernode with the plugin enabled, and two daemons whose mirrors point at the proxy.

import { createHash } from 'node:crypto'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  apiHeaders, CountingProxy, makeBlob, pushImage, startDaemon, startRegistry, startSupernode, TestOrigin, waitFor,
  type DaemonHandle, type PushedImage, type RegistryHandle, type SupernodeHandle
} from '@naiad/testkit'

interface JobView {
  id: number
  state: string
  error: { code: string; message: string } | null
  created_at: string
  updated_at: string
  progress: { blobs: number; succeeded: number; failed: number; skipped: number }
  nodes: Array<{ node: string; blobs: Array<{ url: string; digest: string | null; state: string; cached: boolean; error: { code: string } | null }> }>
  result: { job_states: Array<{ state: string; error: string; results: Array<{ success_tasks: Array<{ url: string }>; failure_tasks: Array<{ url: string; description: string }> }> }> }
}

const MiB = 1024 * 1024
const TERMINAL = new Set(['SUCCESS', 'FAILURE', 'CANCELED'])

async function call(method: string, url: string, body?: unknown): Promise<{ status: number; json: unknown }> {
  const res = await fetch(url, { method, headers: { ...apiHeaders(url), ...(body === undefined ? {} : { 'content-type': 'application/json' }) }, body: body === undefined ? undefined : JSON.stringify(body) })
  const text = await res.text()
  return { status: res.status, json: text === '' ? null : JSON.parse(text) as unknown }
}

async function job(base: string, id: number): Promise<JobView> {
  const r = await call('GET', `${base}/jobs/${id}`)
  if (r.status !== 200) throw new Error(`job ${id}: HTTP ${r.status} ${JSON.stringify(r.json)}`)
  return r.json as JobView
}

async function untilState(base: string, id: number, want: (s: string) => boolean, seen?: Set<string>, timeoutMs = 60_000): Promise<JobView> {
  let last: JobView | undefined
  await waitFor(async () => {
    last = await job(base, id)
    seen?.add(last.state)
    return want(last.state)
  }, timeoutMs, `preheat job ${id}`)
  return last!
}

const sha256 = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`

describe('preheat plugin', () => {
  let dir: string
  let registry: RegistryHandle
  let proxy: CountingProxy
  let origin: TestOrigin
  let sn: SupernodeHandle
  let daemons: DaemonHandle[] = []
  let app: PushedImage
  let harborImage: PushedImage
  let api: string
  let oapi: string
  let config: string

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'naiad-preheat-'))
    registry = await startRegistry(join(dir, 'registry'))
    proxy = await new CountingProxy(registry.url).start()
    origin = await new TestOrigin().start()
    // Pushed straight to the registry, so the proxy counts only preheats and pulls.
    app = await pushImage(registry.url, 'team/app', 'v1', [9 * MiB, 5 * MiB])
    harborImage = await pushImage(registry.url, 'library/web', '1.0', [3 * MiB])
    config = join(dir, 'supernode.yaml')
    await writeFile(config, [
      'plugins: [metrics, preheat]',
      'plugin-config:',
      '  preheat:',
      `    insecureRegistries: ["${proxy.host}"]`,
      '    checkInterval: 200ms',
      ''
    ].join('\n'))
    sn = await startSupernode(join(dir, 'sn'), { args: ['--config', config] })
    api = `${sn.url}/api/v1`
    oapi = `${sn.url}/oapi/v1`
    const args = ['--insecure-registry', proxy.host, '--default-registry', proxy.url]
    daemons = await Promise.all([1, 2].map((i) => startDaemon(join(dir, `d${i}`), sn.url, { args })))
  })

  afterAll(async () => {
    await Promise.all(daemons.map((d) => d.process.stop()))
    await sn?.process.stop()
    await origin?.stop()
    await proxy?.stop()
    await registry?.stop()
    await rm(dir, { recursive: true, force: true })
  })

  it('preheats an image to the seed, after which two daemons pull it with zero registry bytes', async () => {
    const digests = [app.config.digest, ...app.layers.map((l) => l.digest)]
    const created = await call('POST', `${api}/jobs`, { type: 'preheat', args: { type: 'image', url: `${proxy.host}/team/app:v1`, parallelism: 2 } })
    expect(created.status, JSON.stringify(created.json)).toBe(201)
    const id = (created.json as JobView).id
    expect(Number.isInteger(id)).toBe(true)
    const done = await untilState(api, id, (s) => TERMINAL.has(s))
    expect(done.state, JSON.stringify(done)).toBe('SUCCESS')
    expect(done.progress).toMatchObject({ blobs: digests.length, succeeded: digests.length, failed: 0 })
    expect(done.nodes[0].node).toBe('seed')
    expect(done.nodes[0].blobs.map((b) => b.digest).sort()).toEqual([...digests].sort())
    // The seed fetched each blob from the registry once.
    for (const d of digests) expect(proxy.bytesServed(d)).toBeGreaterThan(0)

    const before = new Map(digests.map((d) => [d, proxy.bytesServed(d)]))
    for (const d of daemons) {
      for (const blob of [{ digest: app.config.digest }, ...app.layers]) {
        const res = await fetch(`${d.proxyUrl}/v2/team/app/blobs/${blob.digest}?ns=${proxy.host}`)
        expect(res.status).toBe(200)
        expect(sha256(Buffer.from(await res.arrayBuffer()))).toBe(blob.digest)
      }
    }
    for (const d of digests) expect(proxy.bytesServed(d), `registry bytes for ${d} during the pulls`).toBe(before.get(d))

    // Preheating again is instant: every blob is already in the seed's cache.
    const again = await call('POST', `${api}/jobs`, { type: 'preheat', args: { type: 'image', url: `http://${proxy.host}/v2/team/app/manifests/v1` } })
    const second = await untilState(api, (again.json as JobView).id, (s) => TERMINAL.has(s))
    expect(second.state).toBe('SUCCESS')
    expect(second.nodes[0].blobs.every((b) => b.cached)).toBe(true)
    const list = (await call('GET', `${api}/jobs`)).json as JobView[]
    expect(list.map((j) => j.id)).toEqual(expect.arrayContaining([id, (again.json as JobView).id]))
  })

  it('answers Harbor\'s Dragonfly provider calls with the documented states', async () => {
    const healthy = await fetch(`${sn.url}/healthy`)
    expect(healthy.status).toBe(200)
    // What Harbor's provider sends: https URL of the manifest, headers, a scope.
    const created = await call('POST', `${oapi}/jobs`, {
      type: 'preheat',
      args: { type: 'image', url: `https://${proxy.host}/v2/library/web/manifests/1.0`, headers: {}, scope: 'single_peer', filtered_query_params: '', concurrent_count: 0, timeout: 0 }
    })
    expect(created.status, JSON.stringify(created.json)).toBe(200)
    const body = created.json as JobView
    expect(typeof body.id).toBe('number')
    expect(body.state).toBe('PENDING')
    expect(Number.isNaN(Date.parse(body.created_at))).toBe(false)
    const seen = new Set<string>()
    const done = await untilState(oapi, body.id, (s) => s === 'SUCCESS' || s === 'FAILURE', seen)
    expect(done.state, JSON.stringify(done)).toBe('SUCCESS')
    for (const s of seen) expect(['PENDING', 'SUCCESS']).toContain(s)
    const tasks = done.result.job_states[0].results[0].success_tasks.map((t) => t.url)
    expect(tasks).toContain(`http://${proxy.host}/v2/library/web/blobs/${harborImage.layers[0].digest}`)

    const servedBefore = proxy.bytesServed(harborImage.layers[0].digest)
    const res = await fetch(`${daemons[0].proxyUrl}/v2/library/web/blobs/${harborImage.layers[0].digest}?ns=${proxy.host}`)
    expect(sha256(Buffer.from(await res.arrayBuffer()))).toBe(harborImage.layers[0].digest)
    expect(proxy.bytesServed(harborImage.layers[0].digest)).toBe(servedBefore)
  })

  it('fails a job whose image does not exist, with the reason, and rejects bad requests', async () => {
    const created = await call('POST', `${oapi}/jobs`, { type: 'preheat', args: { type: 'image', url: `http://${proxy.host}/v2/team/app/manifests/no-such-tag` } })
    expect(created.status).toBe(200)
    const id = (created.json as JobView).id
    const done = await untilState(api, id, (s) => TERMINAL.has(s))
    expect(done.state).toBe('FAILURE')
    expect(done.error?.code).toBe('OCI_ERR_REGISTRY')
    expect(done.error?.message).toContain('404')
    const harbor = await job(oapi, id)
    expect(harbor.state).toBe('FAILURE')
    expect(harbor.result.job_states[0].error).toContain('404')

    const malformed = await call('POST', `${api}/jobs`, { type: 'preheat', args: { type: 'image', url: 'https://host/not/a/manifest/url' } })
    expect(malformed.status).toBe(400)
    expect((malformed.json as { code: string }).code).toBe('SN_ERR_BAD_REQUEST')
    const unknownScope = await call('POST', `${api}/jobs`, { type: 'preheat', args: { type: 'image', url: `${proxy.host}/team/app:v1`, scope: 'some_peers' } })
    expect(unknownScope.status).toBe(400)
    expect((unknownScope.json as { code: string }).code).toBe('SN_ERR_SCOPE_UNSUPPORTED')
    const emptySelector = await call('POST', `${api}/jobs`, { type: 'preheat', args: { type: 'image', url: `${proxy.host}/team/app:v1`, scope: { labels: {} } } })
    expect(emptySelector.status).toBe(400)
    expect((emptySelector.json as { code: string }).code).toBe('SN_ERR_BAD_REQUEST')
    const missing = await call('GET', `${api}/jobs/987654`)
    expect(missing.status).toBe(404)
  })

  it('cancels a running job with DELETE: no new blobs start', async () => {
    origin.files.set('/stalled', { data: makeBlob(MiB, 'stalled') })
    for (const p of ['/c1', '/c2', '/c3']) origin.files.set(p, { data: makeBlob(MiB, p) })
    origin.faults.set('/stalled', { stallMs: 30_000 })
    const created = await call('POST', `${api}/jobs`, {
      type: 'preheat', args: { type: 'file', urls: [`${origin.url}/stalled`, `${origin.url}/c1`, `${origin.url}/c2`, `${origin.url}/c3`], parallelism: 1 }
    })
    const id = (created.json as JobView).id
    await waitFor(async () => (await job(api, id)).nodes[0].blobs[0]?.state === 'RUNNING', 10_000, 'the first blob to start')
    const del = await call('DELETE', `${api}/jobs/${id}`)
    expect(del.status).toBe(200)
    expect((del.json as JobView).state).toBe('CANCELED')
    const after = await job(api, id)
    expect(after.progress.skipped).toBe(4)
    expect((await job(oapi, id)).state).toBe('FAILURE')
    for (const p of ['/c1', '/c2', '/c3']) expect(origin.bytesServed(p)).toBe(0)
    // DELETE on a finished job removes it.
    expect((await call('DELETE', `${api}/jobs/${id}`)).status).toBe(200)
    expect((await call('GET', `${api}/jobs/${id}`)).status).toBe(404)
  })

  it('honours deadline and ttlAfterFinished', async () => {
    origin.files.set('/slow', { data: makeBlob(MiB, 'slow') })
    origin.faults.set('/slow', { stallMs: 30_000 })
    const late = await call('POST', `${api}/jobs`, { type: 'preheat', args: { type: 'file', url: `${origin.url}/slow`, deadline: '1s' } })
    const failed = await untilState(api, (late.json as JobView).id, (s) => TERMINAL.has(s), undefined, 15_000)
    expect(failed.state).toBe('FAILURE')
    expect(failed.error?.code).toBe('DFD_ERR_TIMEOUT')

    origin.files.set('/quick', { data: makeBlob(MiB, 'quick') })
    const quick = await call('POST', `${api}/jobs`, { type: 'preheat', args: { type: 'file', url: `${origin.url}/quick`, ttlAfterFinished: '1s' } })
    const id = (quick.json as JobView).id
    await untilState(api, id, (s) => s === 'SUCCESS')
    await waitFor(async () => (await call('GET', `${api}/jobs/${id}`)).status === 404, 15_000, 'the finished job to expire')
  })

  it('resumes a job that was running when the supernode stopped', async () => {
    origin.files.set('/r1', { data: makeBlob(2 * MiB, 'r1') })
    origin.files.set('/r2', { data: makeBlob(2 * MiB, 'r2') })
    origin.faults.set('/r1', { stallMs: 30_000 })
    const created = await call('POST', `${api}/jobs`, { type: 'preheat', args: { type: 'file', urls: [`${origin.url}/r1`, `${origin.url}/r2`], parallelism: 1 } })
    const id = (created.json as JobView).id
    await waitFor(async () => (await job(api, id)).state === 'RUNNING', 10_000, 'the job to run')
    const old = sn.process
    await old.stop()
    expect(old.proc.signalCode, 'a clean shutdown with a job in flight').toBeNull()
    expect(old.logs.filter((l) => /crashed|"level":50/.test(l))).toEqual([])
    origin.faults.delete('/r1')
    sn = await startSupernode(join(dir, 'sn'), { port: sn.port, args: ['--config', config] })
    const done = await untilState(api, id, (s) => TERMINAL.has(s))
    expect(done.state, JSON.stringify(done)).toBe('SUCCESS')
    expect(done.progress.succeeded).toBe(2)
    expect(sn.process.logs.some((l) => l.includes('resuming preheat job'))).toBe(true)
    expect(origin.bytesServed('/r2')).toBe(2 * MiB)
  })
})
