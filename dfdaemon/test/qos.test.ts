// Issue 6, test 5: the qos plugin on real daemons (child processes, their supernode, a
// TestOrigin on loopback). Under a configured download bandwidth, an on-demand download
// started while a preheat-class download runs gets its weighted share, measured side by side;
// a tenant over its request rate gets 429s from the mirror while another tenant does not;
// a bandwidth-limited tenant is held to its limit while another tenant is not.

import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { BINS, makeBlob, run, sha256Hex, startDaemon, startSupernode, TestOrigin, type DaemonHandle, type SupernodeHandle } from '@naiad/testkit'

const MiB = 1024 * 1024
// Low enough that the shaper, not the CPU of a machine shared with other test runs, is what
// limits the daemon: shares only show where demand exceeds the bandwidth.
const RATE = 4 * MiB
const TENANT_RATE = 2 * MiB
const UPLOAD_RATE = 2 * MiB
/** How fast the preemption test's on-demand download may come from its parent: a window of seconds to sample. */
const URGENT_UPLOAD_RATE = 16 * MiB

interface Run {
  taskId: Promise<string>
  done: Promise<{ event: string; code?: string; message?: string; sha256?: string }>
  startedAt: number
  doneAt: number
}

/** Starts a download on the local API and reads its NDJSON answer in the background. */
function startDownload(apiUrl: string, body: Record<string, unknown>, headers: Record<string, string> = {}): Run {
  let setId!: (id: string) => void
  const run: Run = { taskId: new Promise((r) => { setId = r }), done: Promise.resolve({ event: 'none' }), startedAt: Date.now(), doneAt: 0 }
  run.done = (async () => {
    const res = await fetch(`${apiUrl}/api/v1/downloads`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) })
    if (res.status !== 200) return { event: 'error', code: String(res.status), message: await res.text() }
    let buf = ''
    let last: { event: string } | undefined
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      buf += Buffer.from(chunk).toString('utf8')
      let i: number
      while ((i = buf.indexOf('\n')) >= 0) {
        const e = JSON.parse(buf.slice(0, i)) as { event: string; taskId?: string }
        buf = buf.slice(i + 1)
        if (e.event === 'started') setId(e.taskId!)
        if (e.event === 'done' || e.event === 'error') last = e
      }
    }
    run.doneAt = Date.now()
    return last ?? { event: 'none' }
  })()
  return run
}

describe('qos plugin (test 5)', () => {
  let dir: string
  let origin: TestOrigin
  let sn: SupernodeHandle
  /** Download bandwidth limited, classes weighted 70:20:10. */
  let shaped: DaemonHandle
  /** No daemon-wide limit; team-a limited in requests and bytes. */
  let tenants: DaemonHandle
  let host: string
  const preheatBlob = makeBlob(32 * MiB, 'qos-preheat')
  const onDemandBlob = makeBlob(32 * MiB, 'qos-on-demand')
  const teamABlob = makeBlob(16 * MiB, 'qos-team-a')
  const teamBBlob = makeBlob(48 * MiB, 'qos-team-b')
  const manifest = Buffer.from('{"schemaVersion":2}')

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'naiad-qos-'))
    origin = await new TestOrigin().start()
    host = new URL(origin.url).host
    // From disk, so that the origin writes (and counts) them chunk by chunk as the daemon reads.
    await writeFile(join(dir, 'preheat.bin'), preheatBlob)
    await writeFile(join(dir, 'on-demand.bin'), onDemandBlob)
    origin.files.set('/files/preheat.bin', { path: join(dir, 'preheat.bin') })
    origin.files.set('/files/on-demand.bin', { path: join(dir, 'on-demand.bin') })
    origin.files.set(`/v2/team-a/app/blobs/sha256:${sha256Hex(teamABlob)}`, { data: teamABlob })
    origin.files.set('/v2/team-b/data.bin', { data: teamBBlob })
    origin.files.set('/v2/team-a/app/manifests/latest', { data: manifest })
    origin.files.set('/v2/team-b/app/manifests/latest', { data: manifest })
    // No seed: each daemon streams from the origin itself, so the bytes it takes are shaped
    // as they arrive, the origin's byte counters measure them finely, and the machine's CPU
    // goes to the daemon rather than to an encrypted hop.
    sn = await startSupernode(join(dir, 'sn'), { args: ['--no-seed'] })
    await writeFile(join(dir, 'shaped.yaml'), [
      'plugins: [metrics, qos]',
      'plugin-config:',
      '  qos:',
      `    download-rate: ${RATE / MiB}MiB`,
      '    weights: { on-demand: 70, preheat: 20, prefetch: 10 }',
      ''
    ].join('\n'))
    await writeFile(join(dir, 'tenants.yaml'), [
      'plugins: [metrics, qos]',
      'plugin-config:',
      '  qos:',
      '    tenants:',
      `      - match: "${host}/team-a/"`,
      '        rate: 2',
      '        burst: 2',
      `        download-rate: ${TENANT_RATE / MiB}MiB`,
      ''
    ].join('\n'))
    ;[shaped, tenants] = await Promise.all([
      startDaemon(join(dir, 'shaped'), sn.url, { args: ['--config', join(dir, 'shaped.yaml')] }),
      startDaemon(join(dir, 'tenants'), sn.url, { args: ['--config', join(dir, 'tenants.yaml'), '--insecure-registry', host] })
    ])
  })

  afterAll(async () => {
    await shaped?.process.stop()
    await tenants?.process.stop()
    await sn?.process.stop()
    await origin?.stop()
    await rm(dir, { recursive: true, force: true })
  })

  it('gives an on-demand download its share of the bandwidth while a preheat download runs', async () => {
    const served = (): [number, number] => [origin.bytesServed('/files/preheat.bin'), origin.bytesServed('/files/on-demand.bin')]
    const preheat = startDownload(shaped.apiUrl, { url: `${origin.url}/files/preheat.bin`, priority: 'preheat' })
    await preheat.taskId
    // Preheat runs alone for a while: it has the whole bandwidth.
    await new Promise((r) => setTimeout(r, 1000))
    const [a0] = served()
    const alone0 = Date.now()
    await new Promise((r) => setTimeout(r, 2500))
    const aloneRate = (served()[0] - a0) / ((Date.now() - alone0) / 1000)

    const onDemand = startDownload(shaped.apiUrl, { url: `${origin.url}/files/on-demand.bin` }, { 'x-naiad-priority': 'on-demand' })
    await onDemand.taskId
    // Sample while both run, from a second after the start (registration, socket buffers
    // filling) until on-demand is near its end; at most 30 s.
    await new Promise((r) => setTimeout(r, 1000))
    const t0 = Date.now()
    const [p0, o0] = served()
    let [t1, p1, o1] = [t0, p0, o0]
    while (Date.now() - t0 < 30_000) {
      await new Promise((r) => setTimeout(r, 200))
      const [p, o] = served()
      if (o >= onDemandBlob.length - 4 * MiB || p >= preheatBlob.length) break
      ;[t1, p1, o1] = [Date.now(), p, o]
    }
    const secs = (t1 - t0) / 1000
    const onDemandRate = (o1 - o0) / secs
    const preheatRate = (p1 - p0) / secs
    const [result, preheatResult] = await Promise.all([onDemand.done, preheat.done])
    console.log(`qos share: limit ${RATE / MiB} MiB/s; preheat alone ${(aloneRate / MiB).toFixed(2)} MiB/s; both running for ${secs.toFixed(1)} s: on-demand ${(onDemandRate / MiB).toFixed(2)} MiB/s, preheat ${(preheatRate / MiB).toFixed(2)} MiB/s, ratio ${(onDemandRate / preheatRate).toFixed(2)} (weights 70:20 -> 3.5)`)
    expect(result).toMatchObject({ event: 'done', sha256: sha256Hex(onDemandBlob) })
    expect(preheatResult).toMatchObject({ event: 'done', sha256: sha256Hex(preheatBlob) })
    expect(secs).toBeGreaterThan(3)
    // Alone, preheat takes about the whole bandwidth, not more: the origin's count runs ahead of
    // the shaped reader by what the socket buffers and the bucket's burst hold, a few MiB that a
    // loaded machine can land in one window (a loaded CI run measured 1.45x over 1.5 s).
    // Unshaped, the same download runs at hundreds of MiB/s.
    expect(aloneRate).toBeLessThan(RATE * 1.6)
    // Side by side: a wide band around 3.5 for a shared machine, far from the 1:1 two
    // unshaped downloads get.
    expect(onDemandRate / preheatRate).toBeGreaterThan(2)
    expect(onDemandRate / preheatRate).toBeLessThan(7)
    // The daemon as a whole stays at its configured bandwidth.
    expect(onDemandRate + preheatRate).toBeLessThan(RATE * 1.25)
  })

  it('throttles a bandwidth-limited tenant to its limit while another tenant is not', async () => {
    const digest = `sha256:${sha256Hex(teamABlob)}`
    const a = startDownload(tenants.apiUrl, { url: `${origin.url}/v2/team-a/app/blobs/${digest}`, digest })
    const b = startDownload(tenants.apiUrl, { url: `${origin.url}/v2/team-b/data.bin` })
    const [ra, rb] = await Promise.all([a.done, b.done])
    expect(ra).toMatchObject({ event: 'done', sha256: sha256Hex(teamABlob) })
    expect(rb).toMatchObject({ event: 'done', sha256: sha256Hex(teamBBlob) })
    const rateA = teamABlob.length / ((a.doneAt - a.startedAt) / 1000)
    const rateB = teamBBlob.length / ((b.doneAt - b.startedAt) / 1000)
    console.log(`qos tenants: team-a (limit ${TENANT_RATE / MiB} MiB/s) ${(rateA / MiB).toFixed(1)} MiB/s, team-b (no limit) ${(rateB / MiB).toFixed(1)} MiB/s`)
    // The tenant bucket starts with a quarter second of burst, so the average sits a little above the limit.
    expect(rateA).toBeLessThan(TENANT_RATE * 1.3)
    expect(rateA).toBeGreaterThan(TENANT_RATE * 0.3)
    expect(rateB).toBeGreaterThan(rateA * 2)
  })

  it('answers 429 with Retry-After to a tenant over its request rate, and not to another tenant', async () => {
    // The previous test spent team-a's tokens; start from a full bucket.
    await new Promise((r) => setTimeout(r, 1100))
    const pull = async (team: string): Promise<{ status: number; retryAfter: string | null; body: string }> => {
      const res = await fetch(`${tenants.proxyUrl}/v2/${team}/app/manifests/latest?ns=${host}`)
      return { status: res.status, retryAfter: res.headers.get('retry-after'), body: await res.text() }
    }
    const a = await Promise.all(Array.from({ length: 8 }, () => pull('team-a')))
    const b = await Promise.all(Array.from({ length: 8 }, () => pull('team-b')))
    const limited = a.filter((r) => r.status === 429)
    console.log(`qos rate: team-a (2/s, burst 2) ${a.filter((r) => r.status === 200).length} x 200, ${limited.length} x 429; team-b ${b.filter((r) => r.status === 200).length} x 200`)
    expect(a.filter((r) => r.status === 200).length).toBeGreaterThanOrEqual(1)
    expect(a.filter((r) => r.status === 200).length).toBeLessThanOrEqual(3)
    expect(limited.length).toBeGreaterThanOrEqual(5)
    for (const r of limited) {
      expect(Number(r.retryAfter)).toBeGreaterThanOrEqual(1)
      const body = JSON.parse(r.body) as { errors: Array<{ code: string; detail: { naiad: string } }> }
      expect(body.errors[0]).toMatchObject({ code: 'TOOMANYREQUESTS', detail: { naiad: 'DFD_ERR_TOO_MANY_REQUESTS' } })
    }
    expect(b.every((r) => r.status === 200 && r.body === manifest.toString())).toBe(true)
    // The local API refuses the same way, with the typed code.
    const api = await Promise.all(Array.from({ length: 4 }, () => fetch(`${tenants.apiUrl}/api/v1/downloads`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ url: `${origin.url}/v2/team-a/app/manifests/latest` })
    })))
    const refused = api.filter((r) => r.status === 429)
    expect(refused.length).toBeGreaterThanOrEqual(2)
    expect(await refused[0].json()).toMatchObject({ code: 'DFD_ERR_TOO_MANY_REQUESTS' })
    await Promise.all(api.map(async (r) => { if (!r.bodyUsed) await r.body?.cancel() }))
    // The plugin's own view agrees.
    const qos = await (await fetch(`${tenants.apiUrl}/api/v1/qos`)).json() as { tenants: Array<{ match: string; rejected: number }> }
    expect(qos.tenants[0].rejected).toBeGreaterThanOrEqual(limited.length + refused.length)
  })

  it('refuses to start with a bad qos setting, naming its key', async () => {
    await writeFile(join(dir, 'bad.yaml'), 'plugins: [qos]\nplugin-config:\n  qos:\n    download-rate: fast\n')
    const r = await run(BINS.dfdaemon, ['--supernode', sn.url, '--config', join(dir, 'bad.yaml'), '--data-dir', join(dir, 'bad'),
      '--api-listen', '127.0.0.1:0', '--proxy-listen', '127.0.0.1:0', '--p2p-listen', '/ip4/127.0.0.1/tcp/0'], { timeoutMs: 60_000, env: { NAIAD_JOIN_TOKEN: sn.joinToken } })
    expect(r.code).not.toBe(0)
    expect(r.stderr).toContain('plugin-config.qos.download-rate')
  })

  it('rejects an unknown priority', async () => {
    const res = await fetch(`${tenants.apiUrl}/api/v1/downloads?priority=urgent`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ url: `${origin.url}/files/x` }) })
    expect(res.status).toBe(400)
    expect(await res.json()).toMatchObject({ code: 'DFD_ERR_BAD_REQUEST' })
  })
})

describe('qos plugin between peers', () => {
  let dir: string
  let origin: TestOrigin
  let sn: SupernodeHandle
  let uploader: DaemonHandle
  let downloader: DaemonHandle
  /** One piece slot: a waiting on-demand piece must take it before any preheat piece. */
  let preempting: DaemonHandle
  const teamA = makeBlob(16 * MiB, 'qos-up-team-a')
  const teamB = makeBlob(48 * MiB, 'qos-up-team-b')
  const background = makeBlob(96 * MiB, 'qos-preempt-preheat')
  const urgent = makeBlob(48 * MiB, 'qos-preempt-on-demand')

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'naiad-qos-up-'))
    origin = await new TestOrigin().start()
    const host = new URL(origin.url).host
    origin.files.set('/v2/team-a/blob', { data: teamA })
    origin.files.set('/v2/team-b/blob', { data: teamB })
    origin.files.set('/files/background.bin', { data: background })
    origin.files.set('/files/urgent.bin', { data: urgent })
    // No seed: the first daemon fetches from the origin (the QoS origin path) and is then the only parent.
    sn = await startSupernode(join(dir, 'sn'), { args: ['--no-seed'] })
    await writeFile(join(dir, 'up.yaml'), [
      'plugins: [metrics, qos]',
      'plugin-config:',
      '  qos:',
      '    tenants:',
      `      - match: "${host}/team-a/"`,
      `        upload-rate: ${UPLOAD_RATE / MiB}MiB`,
      ''
    ].join('\n'))
    uploader = await startDaemon(join(dir, 'up'), sn.url, { args: ['--config', join(dir, 'up.yaml')] })
    // The downloader runs the plugin without download limits: its piece fetches go through the
    // hooks. It is the preemption test's on-demand parent, which sends at URGENT_UPLOAD_RATE.
    await writeFile(join(dir, 'down.yaml'), [
      'plugins: [metrics, qos]',
      'plugin-config:',
      '  qos:',
      '    tenants:',
      `      - match: "${host}/files/urgent.bin"`,
      `        upload-rate: ${URGENT_UPLOAD_RATE / MiB}MiB`,
      ''
    ].join('\n'))
    downloader = await startDaemon(join(dir, 'down'), sn.url, { args: ['--config', join(dir, 'down.yaml')] })
    await writeFile(join(dir, 'preempt.yaml'), 'plugins: [metrics, qos]\nplugin-config:\n  qos:\n    slots: 1\n')
    preempting = await startDaemon(join(dir, 'preempt'), sn.url, { args: ['--config', join(dir, 'preempt.yaml')] })
  })

  afterAll(async () => {
    await preempting?.process.stop()
    await downloader?.process.stop()
    await uploader?.process.stop()
    await sn?.process.stop()
    await origin?.stop()
    await rm(dir, { recursive: true, force: true })
  })

  it("holds a tenant's pieces served to peers to its upload limit, and not another tenant's", async () => {
    for (const path of ['/v2/team-a/blob', '/v2/team-b/blob']) {
      expect(await startDownload(uploader.apiUrl, { url: `${origin.url}${path}` }).done).toMatchObject({ event: 'done' })
    }
    const a = startDownload(downloader.apiUrl, { url: `${origin.url}/v2/team-a/blob` })
    const b = startDownload(downloader.apiUrl, { url: `${origin.url}/v2/team-b/blob` })
    const [ra, rb] = await Promise.all([a.done, b.done])
    expect(ra).toMatchObject({ event: 'done', sha256: sha256Hex(teamA), fromOrigin: 0 })
    expect(rb).toMatchObject({ event: 'done', sha256: sha256Hex(teamB), fromOrigin: 0 })
    const rateA = teamA.length / ((a.doneAt - a.startedAt) / 1000)
    const rateB = teamB.length / ((b.doneAt - b.startedAt) / 1000)
    console.log(`qos upload: team-a from a peer with a ${UPLOAD_RATE / MiB} MiB/s upload limit ${(rateA / MiB).toFixed(1)} MiB/s, team-b (no limit) ${(rateB / MiB).toFixed(1)} MiB/s`)
    // Pieces are admitted whole: the first goes out at once (the bucket lends it), every
    // later one waits for the bytes before it, so the download takes at least
    // (size - one piece) / limit.
    const minSecs = (teamA.length - 4 * MiB) / UPLOAD_RATE
    expect((a.doneAt - a.startedAt) / 1000).toBeGreaterThan(minSecs * 0.85)
    expect(rateA).toBeGreaterThan(UPLOAD_RATE * 0.3)
    expect(rateB).toBeGreaterThan(rateA * 2)
    // Every byte came from the origin once, through the uploader.
    expect(origin.bytesServed('/v2/team-a/blob')).toBe(teamA.length)
  })

  it('stops starting preheat pieces while on-demand pieces wait for the slot', async () => {
    // Each download has a parent of its own: answers on one connection come back in request
    // order, so preheat's pieces queued behind a slow on-demand piece would wait for it even
    // if they had a slot, and the test could not tell preemption from sharing.
    expect(await startDownload(uploader.apiUrl, { url: `${origin.url}/files/background.bin` }).done).toMatchObject({ event: 'done' })
    expect(await startDownload(downloader.apiUrl, { url: `${origin.url}/files/urgent.bin` }).done).toMatchObject({ event: 'done' })
    const progressOf = async (taskId: string): Promise<number> => {
      const t = await (await fetch(`${preempting.apiUrl}/api/v1/tasks/${taskId}`)).json() as { running: boolean; progress?: { completedBytes: number }; complete?: boolean; contentLength?: number }
      return t.running ? t.progress?.completedBytes ?? 0 : t.complete === true ? t.contentLength ?? 0 : 0
    }
    const pre = startDownload(preempting.apiUrl, { url: `${origin.url}/files/background.bin`, priority: 'preheat' })
    const preId = await pre.taskId
    await waitUntil(async () => await progressOf(preId) > 0, 30_000)
    const od = startDownload(preempting.apiUrl, { url: `${origin.url}/files/urgent.bin` })
    const odId = await od.taskId
    // A lone source gets a window of 64 MiB of pieces, so every piece of on-demand is planned
    // at once: until its last piece is stored it has one holding the slot or waiting for it,
    // and preheat stores nothing. Each sample reads preheat first and on-demand second, so a
    // sample whose on-demand figure is short of the end took preheat's while on-demand still
    // wanted the slot. This test once read preheat after on-demand's end had been seen, and
    // counted what preheat fetched once it had the slot back: 0-14 MiB on a loaded machine
    // (10 and 16 in full-suite CI runs), both on main and on the build before its data-channel
    // and codec changes, while the daemon logged no preheat piece stored between on-demand's
    // first and last. On-demand's parent sends at URGENT_UPLOAD_RATE, so the window lasts
    // seconds instead of the ~150 ms a loopback transfer takes, and on-demand holds the slot
    // while its piece comes: sharing the slot would give the unshaped preheat far more.
    const sample = async (): Promise<[number, number]> => {
      const p = await progressOf(preId)
      return [p, await progressOf(odId)]
    }
    await waitUntil(async () => await progressOf(odId) > 0, 30_000)
    const [p0, o0] = await sample()
    let [p1, o1] = [p0, o0]
    const t0 = Date.now()
    let t1 = t0
    const until = t0 + 60_000
    for (;;) {
      const [p, o] = await sample()
      if (o >= urgent.length) break
      ;[p1, o1, t1] = [p, o, Date.now()]
      if (Date.now() > until) throw new Error('on-demand did not finish within 60 s')
      await new Promise((r) => setTimeout(r, 50))
    }
    const [odResult, preResult] = await Promise.all([od.done, pre.done])
    console.log(`qos preemption (1 slot): preheat moved ${((p1 - p0) / MiB).toFixed(0)} MiB while on-demand moved ${((o1 - o0) / MiB).toFixed(0)} MiB in ${((t1 - t0) / 1000).toFixed(1)} s`)
    expect(odResult).toMatchObject({ event: 'done', sha256: sha256Hex(urgent) })
    expect(preResult).toMatchObject({ event: 'done', sha256: sha256Hex(background) })
    expect(o1 - o0).toBeGreaterThanOrEqual(16 * MiB)
    // Preheat still had pieces to fetch: a slot that let it go first would have seen it finish.
    expect(p1).toBeLessThan(background.length)
    // 0 in every run measured (quiet, and beside two CPU-bound loops at load averages up to 20).
    // Four pieces of margin for the slot going to preheat while on-demand has nothing waiting
    // (a failed fetch cooling its only parent); a slot shared in turns moved 43 MiB against 43.
    expect(p1 - p0).toBeLessThanOrEqual(4 * MiB)
  })
})

async function waitUntil(check: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const until = Date.now() + timeoutMs
  while (!(await check())) {
    if (Date.now() > until) throw new Error(`condition not met within ${timeoutMs} ms`)
    await new Promise((r) => setTimeout(r, 50))
  }
}
