// How `npm start -- ARGS` reaches the two processes it runs. Each flag goes to the binary
// whose option table (the same tables that drive their --help) has it; a flag both have
// (--log-level) goes to both; --data-dir is the parent of both data directories; --config
// FILE is a YAML file with a `supernode:` and a `dfdaemon:` section, each a config file of
// that binary. What the user leaves unset gets npm start's defaults (loopback addresses, data
// under ./.naiad, every built-in plugin), and nothing the user set is overridden.

import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { parseArgs } from 'node:util'

import { parse as parseYaml, stringify as stringifyYaml } from 'yaml'

import { envName, type CommandSpec, type OptionSpec } from '@naiad/proto/contracts'

export class StartUsageError extends Error {}

/** Levels above info; pino's numbers for filtering what is shown. */
const QUIET = ['warn', 'error', 'fatal', 'silent']
export const LEVEL_NUMBERS: Record<string, number> = { trace: 10, debug: 20, info: 30, warn: 40, error: 50, fatal: 60, silent: Infinity }

export interface ChildPlan {
  args: string[]
  /** NAIAD_* variables for the child: defaults for keys the user left unset. */
  env: Record<string, string>
  /** Lowest log level npm start shows of this child (the child itself logs at most at info). */
  showLevel: string
}

export interface StartPlan {
  help: boolean
  dataDir: string
  supernode: ChildPlan
  dfdaemon: ChildPlan
}

export interface StartDefaults {
  dataDir: string
  /** Config keys → values npm start picks when the user did not. */
  supernode: Record<string, string>
  dfdaemon: Record<string, string>
  supernodePlugins: string[]
  dfdaemonPlugins: string[]
}

/** Flags npm start keeps for itself: it runs and wires its own supernode. */
const RESERVED: Record<string, string> = {
  supernode: 'npm start runs its own supernode and points the daemon at it',
  'join-token': 'npm start joins its daemon to its supernode with a token it creates',
  'join-token-file': 'npm start joins its daemon to its supernode with a token it creates'
}

export const START_USAGE = `Usage: npm start -- [--config FILE] [--data-dir DIR] [supernode and dfdaemon flags]

Runs a supernode and a dfdaemon on this machine. Each flag goes to the binary that has it
(see supernode --help and dfdaemon --help); --log-level goes to both; --data-dir DIR puts
their data in DIR/supernode and DIR/dfdaemon. --config FILE reads a YAML file with a
"supernode:" and a "dfdaemon:" section, each written like that binary's config file.
Flags both binaries have with different meanings (--p2p-listen) belong in that file.
Every built-in plugin of each is loaded unless the config file sets plugins.`

function flagsOf(spec: CommandSpec): Map<string, OptionSpec> {
  return new Map(spec.options.filter((o) => o.flag !== undefined).map((o) => [o.flag!, o]))
}

/** Flattened config keys of a YAML section (a.b.c), so a nested `p2p: {listen: …}` counts as p2p.listen. */
function keysOf(section: unknown, prefix = ''): string[] {
  if (section === null || typeof section !== 'object' || Array.isArray(section)) return prefix === '' ? [] : [prefix]
  const out: string[] = prefix === '' ? [] : [prefix]
  for (const [k, v] of Object.entries(section as Record<string, unknown>)) out.push(...keysOf(v, prefix === '' ? k : `${prefix}.${k}`))
  return out
}

function readStartConfig(file: string): { supernode?: unknown; dfdaemon?: unknown } {
  let doc: unknown
  try {
    doc = parseYaml(readFileSync(file, 'utf8'))
  } catch (err) {
    throw new StartUsageError(`--config ${file}: ${(err as Error).message}`)
  }
  if (doc === null || doc === undefined) return {}
  if (typeof doc !== 'object' || Array.isArray(doc)) throw new StartUsageError(`--config ${file}: expected a mapping with supernode: and dfdaemon: sections`)
  const unknown = Object.keys(doc).filter((k) => k !== 'supernode' && k !== 'dfdaemon')
  if (unknown.length > 0) throw new StartUsageError(`--config ${file}: unknown section "${unknown[0]}" (expected supernode: and dfdaemon:)`)
  return doc as { supernode?: unknown; dfdaemon?: unknown }
}

/**
 * Splits npm start's arguments between the supernode and the daemon and adds the defaults
 * the user left unset. Config sections are written to DATA_DIR/<binary>.yaml.
 */
export function planStart(argv: string[], supernodeSpec: CommandSpec, dfdaemonSpec: CommandSpec, defaults: StartDefaults, env: NodeJS.ProcessEnv = process.env): StartPlan {
  const sn = flagsOf(supernodeSpec)
  const dd = flagsOf(dfdaemonSpec)
  const options: Record<string, { type: 'string' | 'boolean'; multiple?: boolean; short?: string }> = {
    help: { type: 'boolean', short: 'h' },
    config: { type: 'string' }
  }
  for (const [flag, spec] of [...sn, ...dd]) {
    options[flag] = { type: spec.type === 'bool' ? 'boolean' : 'string', ...(spec.multiple === true ? { multiple: true } : {}) }
  }
  let parsed: ReturnType<typeof parseArgs>
  try {
    parsed = parseArgs({ args: argv, options, strict: true, allowPositionals: false, allowNegative: true, tokens: true })
  } catch (err) {
    const m = /Unknown option '([^']+)'/.exec((err as Error).message)
    throw new StartUsageError(m !== null ? `unknown flag ${m[1]} (neither supernode nor dfdaemon has it)` : (err as Error).message.split('\n')[0])
  }
  const values = parsed.values as Record<string, unknown>
  const plan: StartPlan = { help: values.help === true, dataDir: defaults.dataDir, supernode: { args: [], env: {}, showLevel: 'info' }, dfdaemon: { args: [], env: {}, showLevel: 'info' } }
  if (plan.help) return plan
  if (typeof values['data-dir'] === 'string') plan.dataDir = values['data-dir']

  const set = { supernode: new Set<string>(), dfdaemon: new Set<string>() }
  for (const token of parsed.tokens ?? []) {
    if (token.kind !== 'option' || token.name === 'config' || token.name === 'data-dir' || token.name === 'help' || token.name === 'log-level') continue
    const name = token.name
    if (RESERVED[name] !== undefined) throw new StartUsageError(`--${name}: ${RESERVED[name]}`)
    const inSn = sn.get(name)
    const inDd = dd.get(name)
    const both = inSn !== undefined && inDd !== undefined
    if (both && name !== 'log-level') {
      throw new StartUsageError(`--${name} is a flag of both supernode and dfdaemon; set it in the --config file's supernode: or dfdaemon: section`)
    }
    const arg = token.value === undefined ? token.rawName : `${token.rawName}=${token.value}`
    if (inSn !== undefined) { plan.supernode.args.push(arg); set.supernode.add(inSn.key) }
    if (inDd !== undefined) { plan.dfdaemon.args.push(arg); set.dfdaemon.add(inDd.key) }
  }

  const sections: { supernode?: unknown; dfdaemon?: unknown } = typeof values.config === 'string' ? readStartConfig(values.config) : {}
  if (typeof values.config === 'string') {
    const doc = sections
    mkdirSync(plan.dataDir, { recursive: true })
    for (const name of ['supernode', 'dfdaemon'] as const) {
      const section = doc[name]
      if (section === undefined || section === null) continue
      if (typeof section !== 'object' || Array.isArray(section)) throw new StartUsageError(`--config ${values.config}: ${name}: must be a mapping`)
      if (name === 'dfdaemon' && 'supernode' in section) throw new StartUsageError(`--config ${values.config}: dfdaemon.supernode: ${RESERVED.supernode}`)
      const file = join(plan.dataDir, `${name}.yaml`)
      writeFileSync(file, `# written by npm start from ${values.config}; edit that file instead\n${stringifyYaml(section)}`)
      plan[name].args.unshift('--config', file)
      for (const k of keysOf(section)) set[name].add(k)
    }
  }

  // npm start learns the children's addresses from their "ready" lines, which they log at
  // info: a quieter level is applied to what is shown here, not to what they log.
  for (const name of ['supernode', 'dfdaemon'] as const) {
    const section = sections[name] as Record<string, unknown> | undefined
    const wanted = (values['log-level'] as string | undefined) ?? (section?.['log-level'] as string | undefined) ?? env[envName('log-level')] ?? 'info'
    if (QUIET.includes(wanted)) {
      plan[name].args.push('--log-level=info')
      plan[name].showLevel = wanted
    } else if (values['log-level'] !== undefined) {
      plan[name].args.push(`--log-level=${wanted}`)
    }
  }

  const unset = (name: 'supernode' | 'dfdaemon', key: string): boolean => !set[name].has(key) && (env[envName(key)] ?? '') === ''
  for (const name of ['supernode', 'dfdaemon'] as const) {
    const spec = name === 'supernode' ? sn : dd
    const dataDirFlag = ['--data-dir', join(plan.dataDir, name)]
    // An explicit --data-dir is the parent of both, so it always goes down as DIR/<binary>.
    if (unset(name, 'data-dir') || typeof values['data-dir'] === 'string') plan[name].args.push(...dataDirFlag)
    for (const [key, value] of Object.entries(defaults[name])) {
      const flag = [...spec.values()].find((o) => o.key === key)?.flag
      if (flag !== undefined && unset(name, key)) plan[name].args.push(`--${flag}=${value}`)
    }
    const plugins = name === 'supernode' ? defaults.supernodePlugins : defaults.dfdaemonPlugins
    if (unset(name, 'plugins')) plan[name].env[envName('plugins')] = plugins.join(',')
  }
  // The daemon's plain-HTTP registries are the preheat plugin's too, unless its settings say otherwise.
  const insecure = (values['insecure-registry'] as string[] | undefined) ?? []
  if (insecure.length > 0 && unset('supernode', 'plugin-config')) {
    plan.supernode.env[envName('plugin-config')] = JSON.stringify({ preheat: { insecureRegistries: insecure } })
  }
  return plan
}
