// One option table per binary drives flags, `NAIAD_*` environment variables, the YAML
// config file, defaults, validation and `--help`. Precedence: flags > env > file > defaults.
// A table made with `defineCommand` types its values: `loadOptions` gives each key the type
// its option converts to (numbers for sizes and durations, an enum's union, a `parse`
// hook's result), so no caller casts. Plugin settings use the same specs (`loadSettings`).

import { readFileSync } from 'node:fs'
import { parseArgs } from 'node:util'

import { parse as parseYaml } from 'yaml'

import { NaiadError } from '../errors.ts'
import { parseDuration, parseSize } from './units.ts'

export type OptionType = 'string' | 'size' | 'duration' | 'int' | 'number' | 'bool' | 'list' | 'url' | 'hostport' | 'multiaddr' | 'level' | 'object' | 'enum' | 'any'

export interface OptionSpec {
  /** Dotted config-file key, e.g. `proxy.listen`. */
  readonly key: string
  readonly type: OptionType
  readonly default: unknown
  readonly help: string
  /** Command-line flag without dashes; omitted for file-only options. */
  readonly flag?: string
  readonly short?: string
  /** Flag may repeat (values accumulate into a list). */
  readonly multiple?: boolean
  /** Value name shown in --help. */
  readonly meta?: string
  /** `enum`: the values accepted. */
  readonly values?: readonly string[]
  /** `int`, `number`, `size`, `duration`: the smallest and largest value accepted. */
  readonly min?: number
  readonly max?: number
  /**
   * Checks and shapes the converted value (an `object`'s mapping, an `any`'s YAML value);
   * throws an Error saying what is wrong, and the loader names the key. Its return type is
   * the option's value type.
   */
  readonly parse?: (value: never, key: string) => unknown
}

export interface CommandSpec<O extends readonly OptionSpec[] = readonly OptionSpec[]> {
  name: string
  usage: string
  summary: string
  options: O
  /** Accept a `--config FILE` flag. */
  configFile?: boolean
  positionals?: { min: number; max: number }
}

/** What the base type of an option converts to, before `parse`. */
type BaseValue<S> =
  S extends { type: 'enum'; values: readonly (infer V)[] } ? V
    : S extends { type: 'size' | 'duration' | 'int' | 'number' } ? number
      : S extends { type: 'bool' } ? boolean
        : S extends { type: 'list' } ? string[]
          : S extends { type: 'object' } ? Record<string, unknown>
            : S extends { type: 'any' } ? unknown
              : string

type OneValue<S> = S extends { parse: (value: never, key: string) => infer R } ? R : BaseValue<S>

/** The value an option loads as. */
export type OptionValue<S> =
  S extends { multiple: true; type: 'list' } ? string[]
    : S extends { multiple: true } ? Array<OneValue<S>>
      : S extends { default: undefined } ? OneValue<S> | undefined
        : OneValue<S>

/** The values a table loads as, by key. */
export type OptionValues<O extends readonly OptionSpec[]> = string extends O[number]['key']
  // A table not made with defineCommand/defineOptions: its keys and types are not known.
  ? Record<string, unknown>
  : { -readonly [S in O[number] as S['key']]: OptionValue<S> }

export interface Loaded<V = Record<string, unknown>> {
  values: V
  positionals: string[]
  help: boolean
}

/** A command's table, with its values typed by its options (`const` keeps each option's literal type). */
export function defineCommand<const O extends readonly OptionSpec[]>(cmd: CommandSpec<O>): CommandSpec<O> {
  return cmd
}

/** A list of option specs (plugin settings, shared groups), typed like a command's. */
export function defineOptions<const O extends readonly OptionSpec[]>(options: O): O {
  return options
}

/** A group of options under another key prefix (`download.concurrency` → `seed.download.concurrency`). */
export type PrefixedOptions<P extends string, O extends readonly OptionSpec[]> = {
  readonly [I in keyof O]: Omit<O[I], 'key' | 'flag' | 'short'> & { readonly key: `${P}${O[I]['key']}` }
}

/** The same options under `prefix`, file and environment only (a shared group's flags belong to the binary that owns them). */
export function prefixOptions<const P extends string, const O extends readonly OptionSpec[]>(prefix: P, options: O): PrefixedOptions<P, O> {
  return options.map((o) => ({ ...o, key: `${prefix}${o.key}`, flag: undefined, short: undefined })) as unknown as PrefixedOptions<P, O>
}

const LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']

export function envName(key: string): string {
  return `NAIAD_${key.replace(/[.-]/g, '_').toUpperCase()}`
}

/** The base conversion of one raw value (a flag's string, an env string, a YAML value). */
function convertBase(spec: OptionSpec, raw: unknown, bad: (why: string) => never): unknown {
  if (spec.type === 'any') return raw
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
  if (typeof raw === 'number' && (spec.type === 'int' || spec.type === 'size')) {
    if (!Number.isSafeInteger(raw) || raw < 0) bad(`expected a whole number, got ${raw}`)
    return raw
  }
  if (typeof raw === 'number' && spec.type === 'number') {
    if (!Number.isFinite(raw)) bad(`expected a number, got ${raw}`)
    return raw
  }
  if (typeof raw !== 'string') return bad(`expected a string, got ${typeof raw}`)
  switch (spec.type) {
    case 'size': return parseSize(raw, 'size')
    case 'duration': return parseDuration(raw, 'duration')
    case 'int': {
      if (!/^\d+$/.test(raw)) bad(`expected a whole number, got "${raw}"`)
      return Number(raw)
    }
    case 'number': {
      const n = Number(raw)
      if (raw.trim() === '' || !Number.isFinite(n)) bad(`expected a number, got "${raw}"`)
      return n
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
    case 'enum': {
      const values = spec.values ?? []
      const list = values.length > 1 ? `${values.slice(0, -1).join(', ')} or ${values.at(-1)}` : values.join('')
      if (!values.includes(raw)) bad(`expected ${list}, got "${raw}"`)
      return raw
    }
    default: return raw
  }
}

function convert(spec: OptionSpec, raw: unknown, source: string): unknown {
  const where = `${source} ${spec.flag !== undefined && source === 'flag' ? `--${spec.flag}` : spec.key}`
  const bad = (why: string): never => { throw new NaiadError(spec.flag !== undefined && source === 'flag' ? 'PROTO_ERR_USAGE' : 'PROTO_ERR_BAD_CONFIG', `${where}: ${why}`) }
  try {
    const value = convertBase(spec, raw, bad)
    if (typeof value === 'number') {
      const show = (n: number): string => spec.type === 'duration' ? `${n}ms` : spec.type === 'size' ? `${n} bytes` : String(n)
      if (spec.min !== undefined && value < spec.min) bad(`must be at least ${show(spec.min)}, got ${show(value)}`)
      if (spec.max !== undefined && value > spec.max) bad(`must be at most ${show(spec.max)}, got ${show(value)}`)
    }
    return spec.parse === undefined ? value : (spec.parse as (v: unknown, key: string) => unknown)(value, spec.key)
  } catch (err) {
    if (err instanceof NaiadError && err.message.startsWith(where)) throw err
    // A parse hook that names the key itself (`plugin-config.qos.weights.urgent: …`) throws
    // PROTO_ERR_BAD_CONFIG; anything else it throws says what is wrong, and the loader says where.
    if (spec.parse !== undefined && err instanceof NaiadError && err.code === 'PROTO_ERR_BAD_CONFIG' && err.message.startsWith(spec.key)) throw err
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

/** Structured options take their whole sub-tree as the value; the others one leaf each (nested or dotted keys). */
function valuesFromTree(doc: unknown, specs: readonly OptionSpec[], unknownKey: (key: string) => NaiadError): Map<string, unknown> {
  const out = new Map<string, unknown>()
  const structured = specs.filter((s) => s.type === 'object' || s.type === 'any')
  for (const spec of structured) {
    let node: unknown = doc
    for (const part of spec.key.split('.')) node = (node as Record<string, unknown> | null | undefined)?.[part]
    if (node !== undefined) out.set(spec.key, node)
  }
  const flat = new Map<string, unknown>()
  if (doc !== null && doc !== undefined) flatten(doc, '', flat)
  const known = new Set(specs.map((s) => s.key))
  for (const [k, v] of flat) {
    // A key may name a whole sub-tree only when its option takes structured values (e.g. plugin settings).
    const owner = known.has(k) ? k : structured.find((s) => k.startsWith(`${s.key}.`))?.key
    if (owner === undefined) throw unknownKey(k)
    if (owner === k && !out.has(k)) out.set(k, v)
  }
  return out
}

function readConfigFile(file: string, specs: readonly OptionSpec[]): Map<string, unknown> {
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
  return valuesFromTree(doc, specs, (k) => new NaiadError('PROTO_ERR_BAD_CONFIG', `config file ${file}: unknown key "${k}"`))
}

/** The value of a default as the loader would give it (`'30s'` → 30000). */
function defaultOf(spec: OptionSpec): unknown {
  if (spec.default === undefined) return undefined
  if (typeof spec.default === 'string' && (spec.type === 'size' || spec.type === 'duration')) return convert(spec, spec.default, 'default of')
  if (spec.parse !== undefined) return convert(spec, spec.default, 'default of')
  return spec.default
}

/** Every option at its default, typed like loaded values (tables are the one home of defaults). */
export function defaultValues<const O extends readonly OptionSpec[]>(specs: O): OptionValues<O> {
  const out: Record<string, unknown> = {}
  for (const spec of specs) out[spec.key] = defaultOf(spec)
  return out as OptionValues<O>
}

/**
 * A settings mapping (a plugin's `plugin-config.<name>`) checked against its specs: unknown
 * keys and bad values are PROTO_ERR_BAD_CONFIG naming `<prefix>.<key>`; absent keys take
 * their defaults. Nested mappings and dotted keys are the same key.
 */
export function loadSettings<const O extends readonly OptionSpec[]>(specs: O, raw: unknown, prefix: string): OptionValues<O> {
  if (raw !== undefined && raw !== null && (typeof raw !== 'object' || Array.isArray(raw))) {
    throw new NaiadError('PROTO_ERR_BAD_CONFIG', `${prefix}: expected a mapping`)
  }
  const known = specs.map((s) => s.key)
  const given = valuesFromTree(raw ?? {}, specs, (k) => new NaiadError('PROTO_ERR_BAD_CONFIG', `${prefix}.${k}: unknown setting (known: ${known.join(', ')})`))
  const out: Record<string, unknown> = {}
  for (const spec of specs) {
    const named = { ...spec, key: `${prefix}.${spec.key}`, flag: undefined }
    out[spec.key] = given.has(spec.key) ? convertAll(named, given.get(spec.key), 'config key') : defaultOf(spec)
  }
  return out as OptionValues<O>
}

export function loadOptions<O extends readonly OptionSpec[]>(cmd: CommandSpec<O>, argv: string[], env: NodeJS.ProcessEnv = process.env): Loaded<OptionValues<O>> {
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
  if (flags.help === true) return { values: {} as OptionValues<O>, positionals: [], help: true }

  const fromFile = typeof flags.config === 'string' ? readConfigFile(flags.config, cmd.options) : new Map<string, unknown>()
  const values: Record<string, unknown> = {}
  for (const spec of cmd.options) {
    let value = defaultOf(spec)
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
  return { values: values as OptionValues<O>, positionals, help: false }
}

export function helpText(cmd: CommandSpec<readonly OptionSpec[]>): string {
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
