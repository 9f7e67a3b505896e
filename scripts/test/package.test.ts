// The installable package, used the way a user uses it: `npm pack` (prepack builds dist/),
// `npm install -g --prefix DIR ./naiad-….tgz`, then the four commands from PATH, run from a
// directory outside the repository: --help from each, a supernode and a dfdaemon that
// fetch a file for dfget, and the native addons loading from the installed tree.

import { mkdtemp, readdir, readlink, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { makeBlob, TestOrigin } from '@naiad/testkit'

import { BIN_NAMES, exec, installedPackage, nodePath, Service, type InstalledPackage } from './fixtures/installed-package.ts'

let pkg: InstalledPackage
let cwd: string
let env: NodeJS.ProcessEnv

beforeAll(async () => {
  pkg = await installedPackage()
  process.stderr.write(`package: npm pack ${pkg.packSeconds.toFixed(1)} s, install ${pkg.installSeconds === 0 ? 'cached' : `${pkg.installSeconds.toFixed(1)} s`}, prefix ${pkg.prefix}\n`)
  cwd = await mkdtemp(join(tmpdir(), 'naiad-outside-'))
  // Only the installed bin directory and Node: nothing of the checkout is reachable.
  env = { PATH: nodePath([pkg.bin]), HOME: cwd, NAIAD_LOG_LEVEL: 'info' }
}, 600_000)

afterAll(async () => {
  if (cwd !== undefined) await rm(cwd, { recursive: true, force: true })
})

describe('the installed package', () => {
  it('puts the four commands on PATH as bundled JavaScript', async () => {
    const names = (await readdir(pkg.bin)).sort()
    expect(names).toEqual([...BIN_NAMES].sort())
    for (const name of BIN_NAMES) expect(await readlink(join(pkg.bin, name))).toMatch(/\/dist\/[a-z-]+\.js$/)
    // No TypeScript is shipped, so none is compiled at run time.
    const dist = await readdir(join(pkg.prefix, 'lib', 'node_modules', 'naiad', 'dist'))
    expect(dist.filter((f) => f.endsWith('.ts'))).toEqual([])
    expect(dist).toContain('console')
  })

  it('answers --help from each command, from any directory', async () => {
    for (const name of BIN_NAMES) {
      const r = await exec(name, ['--help'], { cwd, env })
      expect(r.code, `${name} --help: ${r.stderr}`).toBe(0)
      expect(r.stdout).toMatch(/Usage: /)
    }
    const doctor = await exec('dfdaemon', ['doctor', '--help'], { cwd, env })
    expect(doctor.code).toBe(0)
    // A generous bound (the goal, measured on a quiet machine, is 0.3 s; README has the figure):
    // what matters here is that nothing is compiled at start, which would take seconds.
    const t0 = process.hrtime.bigint()
    await exec('dfget', ['--help'], { cwd, env })
    const ms = Number(process.hrtime.bigint() - t0) / 1e6
    process.stderr.write(`installed dfget --help: ${ms.toFixed(0)} ms\n`)
    expect(ms).toBeLessThan(3000)
  })

  it('loads its native addons from the installed tree', async () => {
    const dir = join(pkg.prefix, 'lib', 'node_modules', 'naiad')
    const r = await exec('node', ['-e', [
      "new (require('better-sqlite3'))(':memory:').close()",
      "const z = require('zstd-napi'); if (z.decompress(z.compress(Buffer.from('naiad'))).toString() !== 'naiad') throw new Error('zstd')",
      "require('fuse-native')",
      "require('tar-stream')"
    ].join(';')], { cwd: dir, env })
    expect(r.code, r.stderr).toBe(0)
    // The doctor finds its built-in rules next to the bundle: a report comes out, not a load error.
    const doctor = await exec('dfdaemon', ['doctor', '--json', '--supernode', 'http://127.0.0.1:9', '--data-dir', join(cwd, 'doctor')], { cwd, env })
    expect(doctor.stderr).not.toMatch(/ENOENT|Cannot find/)
    expect((JSON.parse(doctor.stdout) as { results: unknown[] }).results.length).toBeGreaterThan(5)
  })

  it('runs a supernode and a dfdaemon that fetch a file for dfget', async () => {
    const origin = await new TestOrigin().start()
    const data = makeBlob(3 << 20, 'installed')
    origin.files.set('/file.bin', { data })
    // The test's origin is on loopback, which the source policy refuses unless allowed.
    const allow = { NAIAD_SOURCE_ALLOW: new URL(origin.url).host }
    const sn = new Service('supernode', ['--data-dir', join(cwd, 'sn'), '--listen', '127.0.0.1:0', '--p2p-listen', '/ip4/127.0.0.1/tcp/0'], {
      cwd, env: { ...env, ...allow, NAIAD_PLUGINS: 'metrics,preheat,health,slo,doctor' }
    })
    let daemon: Service | undefined
    try {
      const snReady = await sn.ready
      const snUrl = snReady.http as string
      // Tokens from the installed command, as an operator makes them.
      const token = async (scope: string): Promise<string> => {
        const t = await exec('supernode', ['token', 'create', '--data-dir', join(cwd, 'sn'), '--scope', scope], { cwd, env })
        expect(t.code, t.stderr).toBe(0)
        return t.stdout.trim().split('\n').at(-1)!
      }
      daemon = new Service('dfdaemon', [
        '--supernode', snUrl, '--data-dir', join(cwd, 'd'), '--api-listen', '127.0.0.1:0', '--proxy-listen', '127.0.0.1:0', '--p2p-listen', '/ip4/127.0.0.1/tcp/0',
        '--join-token', await token('join')
      ], { cwd, env: { ...env, ...allow } })
      const dReady = await daemon.ready
      const out = join(cwd, 'file.bin')
      const r = await exec('dfget', [`${origin.url}/file.bin`, '-O', out, '--daemon', dReady.api as string, '--no-progress', '--json'], { cwd, env })
      expect(r.code, r.stderr).toBe(0)
      const { readFile } = await import('node:fs/promises')
      expect((await readFile(out)).equals(data)).toBe(true)
      // The supernode serves the prebuilt console from the package, and its plugins answer.
      const page = await fetch(`${snUrl}/`)
      expect(page.status).toBe(200)
      expect(await page.text()).toContain('app.js')
      expect((await fetch(`${snUrl}/console/app.js`)).status).toBe(200)
      expect((await fetch(`${snUrl}/api/v1/slo`)).status).toBe(401)
      expect((await fetch(`${snUrl}/api/v1/slo`, { headers: { authorization: `Bearer ${await token('api')}` } })).status).toBe(200)
    } finally {
      await daemon?.stop()
      await sn.stop()
      await origin.stop()
    }
  })
})
