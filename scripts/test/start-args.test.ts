// How `npm start -- ARGS` splits its arguments between the supernode and the daemon.

import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { DFDAEMON_COMMAND } from '@naiad/dfdaemon'
import { SUPERNODE_COMMAND } from '@naiad/supernode'
import { planStart, StartUsageError, type StartDefaults } from '../start-args.ts'

let dir: string
let defaults: StartDefaults

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'naiad-start-args-'))
  defaults = {
    dataDir: join(dir, 'data'),
    supernode: { listen: '127.0.0.1:8002', 'p2p.listen': '/ip4/127.0.0.1/tcp/8003' },
    dfdaemon: { 'p2p.listen': '/ip4/127.0.0.1/tcp/65002' },
    supernodePlugins: ['metrics', 'preheat'],
    dfdaemonPlugins: ['metrics', 'qos']
  }
})

afterAll(async () => { await rm(dir, { recursive: true, force: true }) })

const plan = (argv: string[], env: NodeJS.ProcessEnv = {}): ReturnType<typeof planStart> => planStart(argv, SUPERNODE_COMMAND, DFDAEMON_COMMAND, defaults, env)

describe('npm start arguments', () => {
  it('gives each binary its defaults and every built-in plugin when nothing is set', () => {
    const p = plan([])
    expect(p.supernode.args).toEqual(['--data-dir', join(dir, 'data', 'supernode'), '--listen=127.0.0.1:8002', '--p2p-listen=/ip4/127.0.0.1/tcp/8003'])
    expect(p.dfdaemon.args).toEqual(['--data-dir', join(dir, 'data', 'dfdaemon'), '--p2p-listen=/ip4/127.0.0.1/tcp/65002'])
    expect(p.supernode.env).toEqual({ NAIAD_PLUGINS: 'metrics,preheat' })
    expect(p.dfdaemon.env).toEqual({ NAIAD_PLUGINS: 'metrics,qos' })
  })

  it('sends each flag to the binary that has it, and --log-level to both', () => {
    const p = plan(['--insecure-registry', '127.0.0.1:5000', '--insecure-registry=10.0.0.5', '--no-seed', '--listen', '127.0.0.1:9002', '--log-level', 'debug'])
    expect(p.dfdaemon.args).toContain('--insecure-registry=127.0.0.1:5000')
    expect(p.dfdaemon.args).toContain('--insecure-registry=10.0.0.5')
    expect(p.dfdaemon.args).toContain('--log-level=debug')
    expect(p.supernode.args).toContain('--no-seed')
    expect(p.supernode.args).toContain('--listen=127.0.0.1:9002')
    expect(p.supernode.args).not.toContain('--listen=127.0.0.1:8002')
    expect(p.supernode.args.some((a) => a.startsWith('--insecure-registry'))).toBe(false)
    // The preheat plugin reaches the same plain-HTTP registries.
    expect(JSON.parse(p.supernode.env.NAIAD_PLUGIN_CONFIG)).toEqual({ preheat: { insecureRegistries: ['127.0.0.1:5000', '10.0.0.5'] } })
  })

  it('refuses unknown, ambiguous and reserved flags with a clear message', () => {
    expect(() => plan(['--frobnicate'])).toThrow(StartUsageError)
    expect(() => plan(['--frobnicate'])).toThrow(/unknown flag --frobnicate/)
    expect(() => plan(['--p2p-listen', '/ip4/0.0.0.0/tcp/1'])).toThrow(/both supernode and dfdaemon.*--config/)
    expect(() => plan(['--supernode', 'http://10.0.0.1:8002'])).toThrow(/runs its own supernode/)
  })

  it('puts --data-dir DIR above both data directories', () => {
    const p = plan(['--data-dir', join(dir, 'elsewhere')])
    expect(p.supernode.args.slice(0, 2)).toEqual(['--data-dir', join(dir, 'elsewhere', 'supernode')])
    expect(p.dfdaemon.args.slice(0, 2)).toEqual(['--data-dir', join(dir, 'elsewhere', 'dfdaemon')])
  })

  it('writes the config file sections for each binary and leaves what they set alone', async () => {
    const file = join(dir, 'naiad.yaml')
    await writeFile(file, [
      'supernode:', '  plugins: [metrics]', '  p2p: { listen: /ip4/127.0.0.1/tcp/0 }',
      'dfdaemon:', '  p2p.listen: /ip4/127.0.0.1/tcp/0', '  host: { labels: { zone: a } }', '  log-level: warn'
    ].join('\n'))
    const p = plan(['--config', file])
    expect(p.supernode.args.slice(0, 2)).toEqual(['--config', join(dir, 'data', 'supernode.yaml')])
    expect(p.supernode.args).not.toContain('--p2p-listen=/ip4/127.0.0.1/tcp/8003')
    expect(p.supernode.env.NAIAD_PLUGINS).toBeUndefined()
    expect(p.dfdaemon.args).not.toContain('--p2p-listen=/ip4/127.0.0.1/tcp/65002')
    expect(await readFile(join(dir, 'data', 'dfdaemon.yaml'), 'utf8')).toContain('zone: a')
    // A quieter level is applied to what npm start shows: the daemon still logs its ready line.
    expect(p.dfdaemon.args).toContain('--log-level=info')
    expect(p.dfdaemon.showLevel).toBe('warn')
    await writeFile(file, 'dfdaemon:\n  supernode: http://10.0.0.1:8002\n')
    expect(() => plan(['--config', file])).toThrow(/runs its own supernode/)
    await writeFile(file, 'supernodes: {}\n')
    expect(() => plan(['--config', file])).toThrow(/unknown section "supernodes"/)
  })

  it('leaves keys the environment sets to the environment', () => {
    const p = plan([], { NAIAD_LISTEN: '127.0.0.1:9999', NAIAD_PLUGINS: 'metrics' })
    expect(p.supernode.args).not.toContain('--listen=127.0.0.1:8002')
    expect(p.supernode.env.NAIAD_PLUGINS).toBeUndefined()
  })
})
