// One option table per binary drives flags, `NAIAD_*` environment variables, the YAML
// config file, defaults, validation and `--help`. Precedence: flags > env > file > defaults.

import { readFileSync } from 'node:fs'
import { parseArgs } from 'node:util'

import { parse as parseYaml } from 'yaml'

import { NaiadError } from '../errors.ts'
import { parseDuration, parseSize } from './units.ts'

export type OptionType = 'string' | 'size' | 'duration' | 'int' | 'bool' | 'list' | 'url' | 'hostport' | 'multiaddr' | 'level' | 'object'

export interface OptionSpec {
  /** Dotted config-file key, e.g. `proxy.listen`. */
  key: string
  type: OptionType
  default: unknown
  help: string
  /** Command-line flag without dashes; omitted for file-only options. */
  flag?: string
  short?: string
  /** Flag may repeat (values accumulate into a list). */
  multiple?: boolean
  /** Value name shown in --help. */
  meta?: string
}

export interface CommandSpec {
  name: string
  usage: string
  summary: string
  options: OptionSpec[]
  /** Accept a `--config FILE` flag. */
  configFile?: boolean
  positionals?: { min: number; max: number }
}

export interface Loaded {
  values: Record<string, unknown>
  positionals: string[]
  help: boolean
}

const LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']

export function envName(key: string): string {
  return `NAIAD_${key.replace(/[.-]/g, '_').toUpperCase()}`
}

function convert(spec: OptionSpec, raw: unknown, source: string): unknown {
  const where = `${source} ${spec.flag !== undefined && source === 'flag' ? `--${spec.flag}` : spec.key}`
  const bad = (why: string): never => { throw new NaiadError(spec.flag !== undefined && source === 'flag' ? 'PROTO_ERR_USAGE' : 'PROTO_ERR_BAD_CONFIG', `${where}: ${why}`) }
  if (spec.type === 'list') {
    if (Array.isArray(raw)) return raw.map(String)
    if (typeof raw === 'string') return raw === '' ? [] : raw.split(',').map((s) => s.trim()).filter((s) => s !== '')
    return bad('expected a list')
  }
  if (spec.type === 'object') {
    if (raw !== null && typeof raw === 'object' && !Array.isArray(raw)) return raw
    if (typeof raw === 'string') {
      try { return JSON.parse(raw) as unknown } catch { return bad('expected a JSON object') }
    }
    return bad('expected a mapping')
  }
  if (spec.type === 'bool') {
    if (typeof raw === 'boolean') return raw
    if (raw === 'true' || raw === '1') return true
    if (raw === 'false' || raw === '0') return false
    return bad(`expected true or false, got "${String(raw)}"`)
  }
  if (typeof raw === 'number' && (spec.type === 'int' || spec.type === 'size')) return raw
  if (typeof raw !== 'string') return bad(`expected a string, got ${typeof raw}`)
  try {
    switch (spec.type) {
      case 'size': return parseSize(raw, 'size')
      case 'duration': return parseDuration(raw, 'duration')
      case 'int': {
        if (!/^\d+$/.test(raw)) bad(`expected a whole number, got "${raw}"`)
        return Number(raw)
      }
      case 'url': {
        let u: URL
        try { u = new URL(raw) } catch { return bad(`malformed URL "${raw}"`) }
        if (u.protocol !== 'http:' && u.protocol !== 'https:') bad(`URL must be http or https, got "${raw}"`)
        return raw.replace(/\/+$/, '')
      }
      case 'hostport': {
        const m = /^(\[[0-9a-fA-F:]+\]|[^:\s]+):(\d{1,5})$/.exec(raw)
        if (m === null || Number(m[2]) > 65535) bad(`expected HOST:PORT, got "${raw}"`)
        return raw
      }
      case 'multiaddr': {
        if (!raw.startsWith('/')) bad(`expected a multiaddr such as /ip4/0.0.0.0/tcp/65002, got "${raw}"`)
        return raw
      }
      case 'level': {
        if (!LEVELS.includes(raw)) bad(`expected one of ${LEVELS.join(', ')}, got "${raw}"`)
        return raw
      }
      default: return raw
    }
  } catch (err) {
    if (err instanceof NaiadError && err.message.startsWith(where)) throw err
    return bad((err as Error).message)
  }
}

/** A repeatable option takes a list from the file or env and converts each item alone. */
function convertAll(spec: OptionSpec, raw: unknown, source: string): unknown {
  if (spec.multiple !== true || spec.type === 'list') return convert(spec, raw, source)
  return (Array.isArray(raw) ? raw : [raw]).map((item) => convert({ ...spec, multiple: false }, item, source))
}

function flatten(obj: unknown, prefix: string, out: Map<string, unknown>): void {
  if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) {
    out.set(prefix, obj)
    return
  }
  for (const [k, v] of Object.entries(obj as Record<string, unknown>)) {
    flatten(v, prefix === '' ? k : `${prefix}.${k}`, out)
  }
}

function readConfigFile(file: string, specs: OptionSpec[]): Map<string, unknown> {
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch (err) {
    throw new NaiadError('PROTO_ERR_BAD_CONFIG', `cannot read config file ${file}: ${(err as Error).message}`, { cause: err })
  }
  let doc: unknown
  try {
    doc = parseYaml(text)
  } catch (err) {
    throw new NaiadError('PROTO_ERR_BAD_CONFIG', `config file ${file} is not valid YAML: ${(err as Error).message}`, { cause: err })
  }
  const flat = new Map<string, unknown>()
  const out = new Map<string, unknown>()
  // Structured options take their whole sub-tree as the value.
  for (const spec of specs) {
    if (spec.type !== 'object') continue
    let node: unknown = doc
    for (const part of spec.key.split('.')) node = (node as Record<string, unknown> | null | undefined)?.[part]
    if (node !== undefined) out.set(spec.key, node)
  }
  if (doc !== null && doc !== undefined) flatten(doc, '', flat)
  const known = new Set(specs.map((s) => s.key))
  const structured = specs.filter((s) => s.type === 'object').map((s) => s.key)
  for (const [k, v] of flat) {
    // A key may name a whole sub-tree only when its option takes structured values (e.g. plugin settings).
    const owner = known.has(k) ? k : structured.find((key) => k.startsWith(`${key}.`))
    if (owner === undefined) throw new NaiadError('PROTO_ERR_BAD_CONFIG', `config file ${file}: unknown key "${k}"`)
    if (owner === k && !out.has(k)) out.set(k, v)
  }
  return out
}

export function loadOptions(cmd: CommandSpec, argv: string[], env: NodeJS.ProcessEnv = process.env): Loaded {
  const flagOptions: Record<string, { type: 'string' | 'boolean'; multiple?: boolean; short?: string }> = {
    help: { type: 'boolean', short: 'h' }
  }
  if (cmd.configFile === true) flagOptions.config = { type: 'string' }
  for (const spec of cmd.options) {
    if (spec.flag === undefined) continue
    flagOptions[spec.flag] = {
      type: spec.type === 'bool' ? 'boolean' : 'string',
      ...(spec.multiple === true ? { multiple: true } : {}),
      ...(spec.short !== undefined ? { short: spec.short } : {})
    }
  }
  let parsed: ReturnType<typeof parseArgs>
  try {
    parsed = parseArgs({ args: argv, options: flagOptions, allowPositionals: true, strict: true, allowNegative: true })
  } catch (err) {
    const e = err as Error & { code?: string }
    let msg = e.message.split('\n')[0]
    const unknown = /Unknown option '([^']+)'/.exec(msg)
    if (unknown !== null) msg = `unknown flag ${unknown[1]}`
    throw new NaiadError('PROTO_ERR_USAGE', msg, { cause: err })
  }
  const flags = parsed.values as Record<string, unknown>
  if (flags.help === true) return { values: {}, positionals: [], help: true }

  const fromFile = typeof flags.config === 'string' ? readConfigFile(flags.config, cmd.options) : new Map<string, unknown>()
  const values: Record<string, unknown> = {}
  for (const spec of cmd.options) {
    let value: unknown = typeof spec.default === 'string' && (spec.type === 'size' || spec.type === 'duration')
      ? convert(spec, spec.default, 'default of')
      : spec.default
    if (fromFile.has(spec.key)) value = convertAll(spec, fromFile.get(spec.key), 'config key')
    const e = env[envName(spec.key)]
    // Repeatable values may themselves hold commas (headers), so they come one per line.
    if (e !== undefined && e !== '') value = convertAll(spec, spec.multiple === true && spec.type !== 'list' ? e.split('\n') : e, `environment ${envName(spec.key)} for`)
    if (spec.flag !== undefined && flags[spec.flag] !== undefined) {
      const raw = flags[spec.flag]
      value = spec.multiple === true
        ? (raw as string[]).map((r) => convert({ ...spec, multiple: false, type: spec.type === 'list' ? 'string' : spec.type }, r, 'flag'))
        : convert(spec, raw, 'flag')
    }
    values[spec.key] = value
  }
  const positionals = parsed.positionals
  const limits = cmd.positionals ?? { min: 0, max: 0 }
  if (positionals.length < limits.min) throw new NaiadError('PROTO_ERR_USAGE', `missing argument: usage: ${cmd.usage}`)
  if (positionals.length > limits.max) throw new NaiadError('PROTO_ERR_USAGE', `unexpected argument "${positionals[limits.max]}"`)
  return { values, positionals, help: false }
}

export function helpText(cmd: CommandSpec): string {
  const lines = [`Usage: ${cmd.usage}`, '', cmd.summary, '', 'Options:']
  const rows: Array<[string, string]> = []
  if (cmd.configFile === true) rows.push(['--config FILE', 'YAML config file (flags > NAIAD_* env > file > defaults)'])
  for (const spec of cmd.options) {
    if (spec.flag === undefined) continue
    const name = `${spec.short !== undefined ? `-${spec.short}, ` : ''}--${spec.flag}${spec.type === 'bool' ? '' : ` ${spec.meta ?? spec.type.toUpperCase()}`}`
    const def = spec.default === undefined || spec.default === '' || (Array.isArray(spec.default) && spec.default.length === 0) || spec.type === 'bool'
      ? ''
      : ` (default ${Array.isArray(spec.default) ? spec.default.join(',') : String(spec.default)})`
    rows.push([name, `${spec.help}${def}`])
  }
  rows.push(['-h, --help', 'show this help'])
  const width = Math.max(...rows.map((r) => r[0].length)) + 2
  for (const [a, b] of rows) lines.push(`  ${a.padEnd(width)}${b}`)
  return lines.join('\n')
}
