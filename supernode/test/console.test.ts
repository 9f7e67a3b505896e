// The web console in a real browser (Debian's chromium, headless, driven by puppeteer-core)
// against a real supernode, two real daemons and real downloads: peers with their labels and
// health, a task's swarm (pieces held, bytes by source), a preheat job created, watched and
// cancelled from the page, SLO figures, and a new task appearing without a reload. The page is
// opened with an API token in its link, as scripts do; the token must reach every API request. A
// screenshot is saved with the test output (.ci-results/console/console.png).

import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

import puppeteer, { type Browser, type Page } from 'puppeteer-core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { BINS, getJson, makeBlob, run, startDaemon, startSupernode, TestOrigin, type DaemonHandle, type SupernodeHandle } from '@naiad/testkit'

import { buildConsole } from '../../scripts/build.ts'

/** What the page's elements are read for (the tests' TypeScript has no DOM library). */
interface Shown { innerText: string; textContent: string | null; dataset: Record<string, string | undefined> }

const ROOT = fileURLToPath(new URL('../../', import.meta.url))
const SHOTS = join(ROOT, '.ci-results', 'console')
const CHROMIUM = process.env.NAIAD_CHROMIUM ?? '/usr/bin/chromium'
const SIZE = 12 << 20

let dir: string
let origin: TestOrigin
let sn: SupernodeHandle
const daemons: DaemonHandle[] = []
let browser: Browser
let page: Page
const authHeaders: Array<string | undefined> = []

async function until<T>(what: string, fn: () => Promise<T | undefined | false>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs
  let last: unknown
  while (Date.now() < deadline) {
    try {
      const v = await fn()
      if (v !== undefined && v !== false) return v
    } catch (err) {
      last = err
    }
    await new Promise((r) => setTimeout(r, 250))
  }
  throw new Error(`timed out waiting for ${what}${last === undefined ? '' : `: ${(last as Error).message}`}`)
}

const text = (selector: string): Promise<string> => page.$eval(selector, (el) => (el as unknown as Shown).innerText)

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'naiad-console-'))
  await buildConsole()
  origin = await new TestOrigin().start()
  origin.files.set('/app.bin', { data: makeBlob(SIZE, 'console-app') })
  origin.files.set('/later.bin', { data: makeBlob(1 << 20, 'console-later') })
  origin.files.set('/preheat.bin', { data: makeBlob(2 << 20, 'console-preheat') })
  origin.files.set('/stalled.bin', { data: makeBlob(2 << 20, 'console-stalled') })
  origin.faults.set('/stalled.bin', { stallMs: 120_000 })

  const snConfig = join(dir, 'supernode.yaml')
  await writeFile(snConfig, 'plugins: [metrics, preheat, health, slo, doctor]\nplugin-config:\n  health: { evaluateInterval: 1s }\n  slo:\n    objectives:\n      - { name: success, sli: success-rate, target: 0.99, window: 1h }\n')
  sn = await startSupernode(join(dir, 'sn'), { args: ['--config', snConfig] })
  for (const zone of ['a', 'b']) {
    const cfg = join(dir, `d-${zone}.yaml`)
    await writeFile(cfg, `plugins: [metrics, health, slo, doctor]\nplugin-config:\n  health: { interval: 1s }\nhost:\n  labels: { zone: ${zone} }\n`)
    daemons.push(await startDaemon(join(dir, `d-${zone}`), sn.url, { args: ['--config', cfg] }))
  }
  // One real download on each daemon: the second one's pieces come from the swarm.
  for (const d of daemons) {
    const r = await run(BINS.dfget, [`${origin.url}/app.bin`, '-O', join(dir, `app-${d.peerId.slice(-4)}.bin`), '--daemon', d.apiUrl, '--no-progress'])
    expect(r.code, r.stderr).toBe(0)
  }
  await until('both pull traces at the supernode', async () => {
    const traces = await getJson<unknown[]>(`${sn.url}/api/v1/traces`)
    return traces.length >= 2
  })

  browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run', '--no-default-browser-check'],
    timeout: 60_000
  })
  page = await browser.newPage()
  await page.setViewport({ width: 1440, height: 1500 })
  page.on('request', (req) => { if (req.url().includes('/api/')) authHeaders.push(req.headers().authorization) })
  await page.goto(`${sn.url}/#token=${sn.apiToken}`, { waitUntil: 'domcontentloaded', timeout: 30_000 })
}, 240_000)

afterAll(async () => {
  await browser?.close().catch(() => {})
  for (const d of daemons) await d.process.stop()
  await sn?.process.stop()
  await origin?.stop()
  if (dir !== undefined) await rm(dir, { recursive: true, force: true })
})

describe('web console', () => {
  it('opens from a link carrying the token, sends it on every API call and drops it from the address bar', async () => {
    await page.waitForSelector('#live.on', { timeout: 30_000 })
    expect(page.url()).toBe(`${sn.url}/`)
    expect(authHeaders.length).toBeGreaterThan(3)
    expect(authHeaders.every((h) => h === `Bearer ${sn.apiToken}`)).toBe(true)
  })

  it('shows every peer with its labels, health state and measured bandwidth', async () => {
    for (const d of daemons) await page.waitForSelector(`#peers tr[data-peer="${d.peerId}"]`, { timeout: 20_000 })
    const rows = await page.$$eval('#peers tbody tr', (trs) => trs.map((tr) => (tr as unknown as Shown).innerText))
    expect(rows.some((r) => r.includes('zone=a'))).toBe(true)
    expect(rows.some((r) => r.includes('zone=b'))).toBe(true)
    expect(rows.some((r) => r.includes('seed'))).toBe(true)
    // Health reports arrive every second; every daemon is judged healthy.
    await until('health states', async () => {
      const states = await page.$$eval('#peers tbody tr[data-peer] .state', (els) => els.map((e) => e.textContent))
      return states.filter((s) => s === 'healthy').length >= 2 ? states : undefined
    })
    // The parents' measured bandwidth, from pieces children fetched.
    const bandwidth = await page.$$eval('#peers tbody tr td:nth-child(5)', (tds) => tds.map((td) => td.textContent ?? ''))
    expect(bandwidth.some((b) => /\/s$/.test(b))).toBe(true)
  })

  it("shows a task's swarm: who holds which pieces and where each daemon's bytes came from", async () => {
    await page.waitForSelector('#tasks .swarm', { timeout: 20_000 })
    expect(await text('#tasks .swarm .task-url')).toBe(`${origin.url}/app.bin`)
    for (const d of daemons) {
      const row = `#tasks tr[data-swarm-peer="${d.peerId}"]`
      await page.waitForSelector(`${row} .src-peer`, { timeout: 20_000 })
      const pieces = await text(`${row} td:nth-child(3)`)
      const [held, total] = pieces.split('/').map(Number)
      expect(held).toBe(total)
      // Every cell of the share map is full for a complete download.
      const cells = await page.$$eval(`${row} .cell`, (els) => els.map((e) => e.className))
      expect(cells.length).toBeGreaterThan(0)
      expect(cells.every((c) => c.includes('f4'))).toBe(true)
      const sources = await page.$$eval(`${row} .src`, (els) => els.map((e) => Number((e as unknown as Shown).dataset.bytes)))
      expect(sources.reduce((a, b) => a + b, 0)).toBe(SIZE)
    }
    // The seed holds the whole task too.
    const seedRows = await page.$$eval('#tasks .swarm tbody tr', (trs) => trs.filter((tr) => tr.querySelector('.tag')?.textContent === 'seed').length)
    expect(seedRows).toBe(1)
  })

  it('creates, watches and cancels preheat jobs', async () => {
    await page.select('#jobs select[name=kind]', 'file')
    await page.type('#jobs input[name=url]', `${origin.url}/preheat.bin`)
    await page.click('#jobs button[type=submit]')
    await until('the preheat job to succeed', async () => {
      const states = await page.$$eval('#jobs tbody tr', (trs) => trs.map((tr) => (tr as unknown as Shown).innerText))
      return states.some((s) => s.includes('preheat.bin') && s.includes('success')) || undefined
    })
    // A job whose origin stalls stays running until it is cancelled from the page.
    await page.type('#jobs input[name=url]', `${origin.url}/stalled.bin`)
    await page.click('#jobs button[type=submit]')
    const jobId = await until('the stalled job to run', async () => page.$$eval('#jobs tbody tr', (trs) => {
      const tr = trs.find((t) => (t as unknown as Shown).innerText.includes('stalled.bin') && /running|pending/.test((t as unknown as Shown).innerText))
      return tr === undefined ? undefined : (tr as unknown as Shown).dataset.job
    }))
    await page.click(`#jobs tr[data-job="${jobId}"] button`)
    await until('the job to be cancelled', async () => (await text(`#jobs tr[data-job="${jobId}"] .state`)) === 'canceled' || undefined)
    const job = await getJson<{ state: string }>(`${sn.url}/api/v1/jobs/${jobId}`)
    expect(job.state).toBe('CANCELED')
  })

  it('shows SLO figures and health events', async () => {
    await until('the SLO pull count', async () => Number(await text('#slo [data-sli="pulls"]')) >= 2 || undefined)
    expect(await text('#slo [data-sli="success"]')).toBe('100.0 %')
    expect(await text('#slo')).toContain('success')
    expect(await page.$('#health')).not.toBeNull()
    expect(await page.$('#doctor')).not.toBeNull()
  })

  it('updates without a reload when a new download happens', async () => {
    const urls = (): Promise<Array<string | null>> => page.$$eval('#tasks tbody td.url', (tds) => tds.map((td) => td.textContent))
    const loadedAt = await page.evaluate(() => performance.timeOrigin)
    expect(await urls()).not.toContain(`${origin.url}/later.bin`)
    const r = await run(BINS.dfget, [`${origin.url}/later.bin`, '-O', join(dir, 'later.bin'), '--daemon', daemons[0].apiUrl, '--no-progress'])
    expect(r.code, r.stderr).toBe(0)
    await until('the new task in the table', async () => (await urls()).includes(`${origin.url}/later.bin`) || undefined)
    // The same page load: no reload happened.
    expect(await page.evaluate(() => performance.timeOrigin)).toBe(loadedAt)
    // Back to the first download's swarm (three peers) for the screenshot.
    const appRow = await page.$$eval('#tasks tbody tr[data-task-row]', (trs, url) => (trs.find((tr) => (tr as unknown as Shown).innerText.includes(url)) as unknown as Shown | undefined)?.dataset.taskRow, `${origin.url}/app.bin`)
    await page.click(`#tasks tr[data-task-row="${appRow}"]`)
    await page.waitForFunction((url) => (globalThis as unknown as { document: { querySelector(s: string): Shown | null } }).document.querySelector('#tasks .swarm .task-url')?.textContent === url, { timeout: 10_000 }, `${origin.url}/app.bin`)
    await mkdir(SHOTS, { recursive: true })
    const file = join(SHOTS, 'console.png')
    await page.screenshot({ path: file as `${string}.png`, fullPage: true })
    process.stderr.write(`console screenshot: ${file}\n`)
  })
})
