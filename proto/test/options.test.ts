// Human units and the option loader: flags > NAIAD_* env > YAML config file > defaults,
// with errors that carry a stable code and name the flag, variable or key at fault.

import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import {
  envName, formatBytes, helpText, loadOptions, NaiadError, parseDuration, parseSize,
  type CommandSpec, type ErrorCode
} from '../src/index.ts'

const KiB = 1024
const MiB = 1024 * KiB
const GiB = 1024 * MiB

function thrown(fn: () => unknown): NaiadError {
  try {
    fn()
  } catch (err) {
    expect(err).toBeInstanceOf(NaiadError)
    return err as NaiadError
  }
  throw new Error('expected a NaiadError, nothing was thrown')
}

function expectError(fn: () => unknown, code: ErrorCode, ...mentions: string[]): void {
  const err = thrown(fn)
  expect(err.code).toBe(code)
  for (const m of mentions) expect(err.message).toContain(m)
}

describe('parseSize', () => {
  it.each([
    ['1000', 1000],
    ['0', 0],
    ['512MiB', 512 * MiB],
    ['10GiB', 10 * GiB],
    ['4M', 4 * MiB],
    ['4m', 4 * MiB],
    ['1k', KiB],
    ['2T', 2 * 1024 * GiB],
    ['1KB', 1000],
    ['1kb', 1000],
    ['3MB', 3e6],
    ['1GB', 1e9],
    ['7b', 7],
    ['1.5KiB', 1536],
    ['0.5MiB', MiB / 2],
    [' 64 MiB ', 64 * MiB]
  ])('%j is %d bytes', (raw, bytes) => {
    expect(parseSize(raw)).toBe(bytes)
  })

  it.each(['', '   ', 'MiB', 'abc', '-1MiB', '10XB', '1e3', '1,5MiB', '1 Mi B', '5MiBs'])('rejects %j with PROTO_ERR_USAGE', (raw) => {
    expectError(() => parseSize(raw), 'PROTO_ERR_USAGE', `"${raw}"`)
  })

  it('names what was being parsed', () => {
    expectError(() => parseSize('lots', 'cache quota'), 'PROTO_ERR_USAGE', 'cache quota', '"lots"')
  })
})

describe('parseDuration', () => {
  it.each([
    ['30s', 30_000],
    ['5m', 300_000],
    ['250ms', 250],
    ['1h', 3_600_000],
    ['1m30s', 90_000],
    ['1h2m3s4ms', 3_723_004],
    ['1.5s', 1500],
    ['0s', 0],
    [' 2s ', 2000]
  ])('%j is %d ms', (raw, ms) => {
    expect(parseDuration(raw)).toBe(ms)
  })

  it.each(['', '30', 's', '30 s', '5x', '1h-', '-5s', '5sec', '1d', 'ms5', '1m 30s'])('rejects %j with PROTO_ERR_USAGE', (raw) => {
    expectError(() => parseDuration(raw), 'PROTO_ERR_USAGE', `"${raw}"`)
  })

  it('names what was being parsed', () => {
    expectError(() => parseDuration('soon', 'host ttl'), 'PROTO_ERR_USAGE', 'host ttl', '"soon"')
  })
})

describe('formatBytes', () => {
  it('picks the largest binary unit below the value', () => {
    expect(formatBytes(0)).toBe('0 B')
    expect(formatBytes(1023)).toBe('1023 B')
    expect(formatBytes(1536)).toBe('1.5 KiB')
    expect(formatBytes(4 * MiB)).toBe('4.0 MiB')
    expect(formatBytes(3 * 1024 * GiB)).toBe('3.0 TiB')
  })
})

describe('loadOptions', () => {
  let dir: string
  let n = 0

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'naiad-options-'))
  })
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  async function yamlFile(text: string): Promise<string> {
    const file = join(dir, `config-${n++}.yaml`)
    await writeFile(file, text)
    return file
  }

  const CMD: CommandSpec = {
    name: 'tool',
    usage: 'tool [options] URL',
    summary: 'A test command.',
    configFile: true,
    positionals: { min: 0, max: 1 },
    options: [
      { key: 'listen', flag: 'listen', type: 'hostport', default: '127.0.0.1:65001', meta: 'HOST:PORT', help: 'where to listen' },
      { key: 'cache.quota', flag: 'cache-quota', type: 'size', default: '1GiB', help: 'cache size' },
      { key: 'scheduler.host-ttl', type: 'duration', default: '30s', help: 'host ttl (file only)' },
      { key: 'upload-slots', flag: 'upload-slots', type: 'int', default: 8, help: 'slots' },
      { key: 'seed.enabled', flag: 'seed', type: 'bool', default: true, help: 'run a seed' },
      { key: 'verbose', flag: 'verbose', short: 'v', type: 'bool', default: false, help: 'chatty' },
      { key: 'supernode', flag: 'supernode', type: 'url', default: 'http://127.0.0.1:8002', help: 'supernode URL' },
      { key: 'p2p.listen', flag: 'p2p-listen', type: 'multiaddr', default: '/ip4/0.0.0.0/tcp/65002', help: 'fabric address' },
      { key: 'log-level', flag: 'log-level', type: 'level', default: 'info', help: 'log level' },
      { key: 'insecure-registry', flag: 'insecure-registry', type: 'list', multiple: true, default: [], help: 'plain HTTP registries' },
      { key: 'header', flag: 'header', short: 'H', type: 'string', multiple: true, default: [], help: 'headers' },
      { key: 'plugins', type: 'list', default: ['metrics'], help: 'plugins' },
      { key: 'plugin-config', type: 'object', default: {}, help: 'per-plugin settings' },
      { key: 'name', flag: 'name', type: 'string', default: '', help: 'a name' }
    ]
  }

  const load = (argv: string[], env: NodeJS.ProcessEnv = {}): Record<string, unknown> => loadOptions(CMD, argv, env).values

  it('maps keys to NAIAD_* variable names', () => {
    expect(envName('cache.quota')).toBe('NAIAD_CACHE_QUOTA')
    expect(envName('scheduler.host-ttl')).toBe('NAIAD_SCHEDULER_HOST_TTL')
  })

  it('fills in every default, converting human units', () => {
    const { values, positionals, help } = loadOptions(CMD, [], {})
    expect(help).toBe(false)
    expect(positionals).toEqual([])
    expect(values).toEqual({
      listen: '127.0.0.1:65001', 'cache.quota': GiB, 'scheduler.host-ttl': 30_000, 'upload-slots': 8, 'seed.enabled': true,
      verbose: false, supernode: 'http://127.0.0.1:8002', 'p2p.listen': '/ip4/0.0.0.0/tcp/65002', 'log-level': 'info',
      'insecure-registry': [], header: [], plugins: ['metrics'], 'plugin-config': {}, name: ''
    })
  })

  it('takes flags over env over the config file over defaults, key by key', async () => {
    const file = await yamlFile([
      'listen: 10.0.0.1:1',
      'cache:',
      '  quota: 2GiB',
      'scheduler:',
      '  host-ttl: 1m',
      'upload-slots: 3',
      'name: from-file'
    ].join('\n'))
    const env = { NAIAD_LISTEN: '10.0.0.2:2', NAIAD_CACHE_QUOTA: '3GiB', NAIAD_NAME: 'from-env' }

    const fileOnly = load(['--config', file])
    expect(fileOnly).toMatchObject({ listen: '10.0.0.1:1', 'cache.quota': 2 * GiB, 'scheduler.host-ttl': 60_000, 'upload-slots': 3, name: 'from-file' })

    const withEnv = load(['--config', file], env)
    expect(withEnv).toMatchObject({ listen: '10.0.0.2:2', 'cache.quota': 3 * GiB, 'scheduler.host-ttl': 60_000, 'upload-slots': 3, name: 'from-env' })

    const withFlags = load(['--config', file, '--listen', '10.0.0.3:3', '--name=from-flag'], env)
    expect(withFlags).toMatchObject({ listen: '10.0.0.3:3', 'cache.quota': 3 * GiB, 'upload-slots': 3, name: 'from-flag' })
    // Untouched keys keep their defaults.
    expect(withFlags['log-level']).toBe('info')
  })

  it('ignores an empty environment variable', () => {
    expect(load([], { NAIAD_LISTEN: '' }).listen).toBe('127.0.0.1:65001')
  })

  it('accepts dotted keys in the config file as well as nested ones', async () => {
    const file = await yamlFile('cache.quota: 5MiB\np2p:\n  listen: /ip4/127.0.0.1/tcp/1\n')
    expect(load(['--config', file])).toMatchObject({ 'cache.quota': 5 * MiB, 'p2p.listen': '/ip4/127.0.0.1/tcp/1' })
  })

  it('accepts YAML numbers for int and size options', async () => {
    const file = await yamlFile('upload-slots: 12\ncache:\n  quota: 4096\n')
    expect(load(['--config', file])).toMatchObject({ 'upload-slots': 12, 'cache.quota': 4096 })
  })

  it('treats an empty config file as no settings', async () => {
    const file = await yamlFile('')
    expect(load(['--config', file])).toEqual(load([]))
  })

  describe('bool options', () => {
    it('take --flag and --no-flag', () => {
      expect(load(['--no-seed'])['seed.enabled']).toBe(false)
      expect(load(['--seed'], { NAIAD_SEED_ENABLED: 'false' })['seed.enabled']).toBe(true)
      expect(load(['-v']).verbose).toBe(true)
    })

    it.each([['true', true], ['1', true], ['false', false], ['0', false]])('read %j from the environment', (raw, value) => {
      expect(load([], { NAIAD_VERBOSE: raw }).verbose).toBe(value)
    })

    it('reject anything else, naming the variable', () => {
      expectError(() => load([], { NAIAD_VERBOSE: 'yes' }), 'PROTO_ERR_BAD_CONFIG', 'NAIAD_VERBOSE', '"yes"')
    })
  })

  describe('typed values', () => {
    it('strips trailing slashes from URLs and rejects other schemes', () => {
      expect(load(['--supernode', 'https://sn.example:8002/']).supernode).toBe('https://sn.example:8002')
      expectError(() => load(['--supernode', 'ftp://sn.example']), 'PROTO_ERR_USAGE', '--supernode', 'ftp://sn.example')
      expectError(() => load(['--supernode', 'not a url']), 'PROTO_ERR_USAGE', '--supernode')
    })

    it('checks HOST:PORT, including IPv6 and the port range', () => {
      expect(load(['--listen', '[::1]:8080']).listen).toBe('[::1]:8080')
      expect(load(['--listen', 'localhost:0']).listen).toBe('localhost:0')
      for (const bad of ['8080', 'host:', 'host:70000', '::1:80', 'a b:1']) {
        expectError(() => load(['--listen', bad]), 'PROTO_ERR_USAGE', '--listen')
      }
    })

    it('checks multiaddrs and log levels', () => {
      expectError(() => load(['--p2p-listen', 'ip4/0.0.0.0']), 'PROTO_ERR_USAGE', '--p2p-listen')
      expect(load(['--log-level', 'debug'])['log-level']).toBe('debug')
      expectError(() => load(['--log-level', 'loud']), 'PROTO_ERR_USAGE', '--log-level', 'loud')
    })

    it('wants whole numbers for int options', () => {
      expect(load(['--upload-slots', '16'])['upload-slots']).toBe(16)
      for (const bad of ['1.5', '-1', 'many', '']) {
        expectError(() => load(['--upload-slots', bad]), 'PROTO_ERR_USAGE', '--upload-slots')
      }
    })
  })

  describe('errors name what is wrong', () => {
    it('an unknown flag is PROTO_ERR_USAGE and names the flag', () => {
      expectError(() => load(['--cache-qouta', '1GiB']), 'PROTO_ERR_USAGE', '--cache-qouta')
      expectError(() => load(['-x']), 'PROTO_ERR_USAGE', '-x')
    })

    it('a file-only option has no flag', () => {
      expectError(() => load(['--scheduler.host-ttl', '5s']), 'PROTO_ERR_USAGE', '--scheduler.host-ttl')
    })

    it('a flag without its value is PROTO_ERR_USAGE', () => {
      expectError(() => load(['--listen']), 'PROTO_ERR_USAGE', '--listen')
    })

    it('a bad flag value is PROTO_ERR_USAGE and names the flag', () => {
      expectError(() => load(['--cache-quota', 'huge']), 'PROTO_ERR_USAGE', '--cache-quota', 'huge')
    })

    it('a bad environment value is PROTO_ERR_BAD_CONFIG and names the variable', () => {
      expectError(() => load([], { NAIAD_CACHE_QUOTA: 'huge' }), 'PROTO_ERR_BAD_CONFIG', 'NAIAD_CACHE_QUOTA', 'huge')
      expectError(() => load([], { NAIAD_SCHEDULER_HOST_TTL: '30' }), 'PROTO_ERR_BAD_CONFIG', 'NAIAD_SCHEDULER_HOST_TTL')
    })

    it('a bad config value is PROTO_ERR_BAD_CONFIG and names the key', async () => {
      const file = await yamlFile('scheduler:\n  host-ttl: forever\n')
      expectError(() => load(['--config', file]), 'PROTO_ERR_BAD_CONFIG', 'scheduler.host-ttl', 'forever')
      const typed = await yamlFile('listen:\n  - a\n  - b\n')
      expectError(() => load(['--config', typed]), 'PROTO_ERR_BAD_CONFIG', 'listen')
    })

    it('a bad value is reported even when a higher layer overrides it', async () => {
      // The file is read and checked as a whole; a typo there should not hide behind a flag.
      const file = await yamlFile('cache:\n  quota: huge\n')
      expectError(() => load(['--config', file, '--cache-quota', '1GiB']), 'PROTO_ERR_BAD_CONFIG', 'cache.quota')
    })

    it('an unknown config key is PROTO_ERR_BAD_CONFIG and names the key', async () => {
      const file = await yamlFile('cache:\n  qouta: 1GiB\n')
      expectError(() => load(['--config', file]), 'PROTO_ERR_BAD_CONFIG', 'cache.qouta', file)
      const top = await yamlFile('listn: 1.2.3.4:5\n')
      expectError(() => load(['--config', top]), 'PROTO_ERR_BAD_CONFIG', 'listn')
    })

    it('a mapping under a plain option is an unknown key, not silently ignored', async () => {
      const file = await yamlFile('listen:\n  host: 10.0.0.1\n  port: 80\n')
      expectError(() => load(['--config', file]), 'PROTO_ERR_BAD_CONFIG', 'listen')
    })

    it('a missing or unparsable config file is PROTO_ERR_BAD_CONFIG and names the file', async () => {
      const missing = join(dir, 'missing.yaml')
      expectError(() => load(['--config', missing]), 'PROTO_ERR_BAD_CONFIG', missing)
      const broken = await yamlFile('listen: [unclosed\n')
      expectError(() => load(['--config', broken]), 'PROTO_ERR_BAD_CONFIG', broken)
    })

    it('checks the number of positional arguments', () => {
      expect(loadOptions(CMD, ['http://x/y'], {}).positionals).toEqual(['http://x/y'])
      expectError(() => load(['a', 'b']), 'PROTO_ERR_USAGE', '"b"')
      expectError(() => loadOptions({ ...CMD, positionals: { min: 1, max: 1 } }, [], {}), 'PROTO_ERR_USAGE', CMD.usage)
      expectError(() => loadOptions({ ...CMD, positionals: undefined }, ['x'], {}), 'PROTO_ERR_USAGE', '"x"')
    })
  })

  describe('lists and repeatable flags', () => {
    it('accumulate repeated flags in order, each value kept whole', () => {
      expect(load(['--insecure-registry', 'a:5000', '--insecure-registry=b', '--insecure-registry', 'c,d'])['insecure-registry'])
        .toEqual(['a:5000', 'b', 'c,d'])
      expect(load(['-H', 'Authorization: Bearer x', '--header', 'X-A: 1, 2']).header).toEqual(['Authorization: Bearer x', 'X-A: 1, 2'])
    })

    it('a single non-repeatable flag given twice keeps the last value', () => {
      expect(load(['--name', 'a', '--name', 'b']).name).toBe('b')
    })

    it('read lists from YAML sequences and comma-separated environment values', async () => {
      const file = await yamlFile('plugins:\n  - metrics\n  - ./my-plugin.ts\ninsecure-registry: [r1:5000]\n')
      expect(load(['--config', file])).toMatchObject({ plugins: ['metrics', './my-plugin.ts'], 'insecure-registry': ['r1:5000'] })
      expect(load([], { NAIAD_PLUGINS: 'metrics, tracing,,' }).plugins).toEqual(['metrics', 'tracing'])
      expect(load([], { NAIAD_INSECURE_REGISTRY: 'r1:5000,r2' })['insecure-registry']).toEqual(['r1:5000', 'r2'])
      expect(load(['--insecure-registry', 'flag'], { NAIAD_INSECURE_REGISTRY: 'env' })['insecure-registry']).toEqual(['flag'])
    })

    it('a repeatable string option can be set from the environment and the config file too', async () => {
      // dfget's --header is `type: 'string', multiple: true`.
      expect(load([], { NAIAD_HEADER: 'X-A: 1' }).header).toEqual(['X-A: 1'])
      const file = await yamlFile('header:\n  - "X-A: 1"\n  - "X-B: 2"\n')
      expect(load(['--config', file]).header).toEqual(['X-A: 1', 'X-B: 2'])
    })
  })

  describe('object options', () => {
    it('take a whole YAML sub-tree, whose keys are not checked against the option table', async () => {
      const file = await yamlFile([
        'plugin-config:',
        '  metrics:',
        '    prefix: naiad_',
        '    buckets: [1, 2, 5]',
        '  remedy:',
        '    enabled: true',
        '    nested: { deep: { deeper: 1 } }'
      ].join('\n'))
      expect(load(['--config', file])['plugin-config']).toEqual({
        metrics: { prefix: 'naiad_', buckets: [1, 2, 5] },
        remedy: { enabled: true, nested: { deep: { deeper: 1 } } }
      })
    })

    it('read JSON from the environment, and reject what is not an object', async () => {
      expect(load([], { NAIAD_PLUGIN_CONFIG: '{"metrics":{"prefix":"x"}}' })['plugin-config']).toEqual({ metrics: { prefix: 'x' } })
      expectError(() => load([], { NAIAD_PLUGIN_CONFIG: '{nope' }), 'PROTO_ERR_BAD_CONFIG', 'NAIAD_PLUGIN_CONFIG')
      const file = await yamlFile('plugin-config: [1, 2]\n')
      expectError(() => load(['--config', file]), 'PROTO_ERR_BAD_CONFIG', 'plugin-config')
    })
  })

  describe('--help', () => {
    it('short-circuits loading, even with otherwise bad input', () => {
      expect(loadOptions(CMD, ['--help'], { NAIAD_CACHE_QUOTA: 'huge' })).toEqual({ values: {}, positionals: [], help: true })
      expect(loadOptions(CMD, ['-h', '--config', join(dir, 'missing.yaml')], {}).help).toBe(true)
    })

    it('lists every flag with its value name and default, and leaves file-only keys out', () => {
      const text = helpText(CMD)
      expect(text.split('\n')[0]).toBe(`Usage: ${CMD.usage}`)
      expect(text).toContain(CMD.summary)
      expect(text).toContain('--config FILE')
      expect(text).toMatch(/--listen HOST:PORT +where to listen \(default 127\.0\.0\.1:65001\)/)
      expect(text).toMatch(/--cache-quota SIZE +cache size \(default 1GiB\)/)
      expect(text).toMatch(/-v, --verbose +chatty\n/)
      expect(text).toMatch(/-H, --header STRING +headers\n/)
      expect(text).toContain('-h, --help')
      expect(text).not.toContain('host-ttl')
      expect(text).not.toContain('plugin-config')
    })
  })
})
