// `dfdaemon doctor`: checks this node against the built-in and user rules. It reads the
// daemon's own config file (so it checks the daemon as configured) and its doctor settings
// under `plugin-config.doctor`, the same ones the doctor plugin uses.

import { hostname } from 'node:os'

import { NaiadError, parseDuration, type CommandSpec } from '@naiad/proto'

import { DFDAEMON_COMMAND } from '../config/options.ts'
import { collectFacts, DOCTOR_DEFAULTS, type DaemonFacts, type DoctorSettings } from './facts.ts'
import { evaluateRules, formatReport, loadRules, type DoctorReport } from './rules.ts'

export const DOCTOR_COMMAND: CommandSpec = {
  name: 'dfdaemon doctor',
  usage: 'dfdaemon doctor [--config FILE] [--json] [--rules FILE]... [any dfdaemon flag, e.g. --supernode URL --data-dir DIR]',
  summary: 'Checks this node: container runtime mirror configuration, disk, ports, FUSE, clock and supernode, against built-in and user rules (docs/doctor.md). Exit 0: no failing error rule; 1: an error rule failed; 2: usage or rules error.',
  configFile: true,
  options: [
    ...DFDAEMON_COMMAND.options,
    { key: 'doctor.json', flag: 'json', type: 'bool', default: false, help: 'print the report as JSON' },
    { key: 'doctor.rules', flag: 'rules', type: 'string', multiple: true, default: [], meta: 'FILE', help: 'extra rules file (repeatable), after the built-in rules and plugin-config.doctor.rules-file' }
  ]
}

const SETTING_KEYS = ['registries', 'containerd-certs-dir', 'docker-daemon-json', 'podman-registries-conf', 'fuse-device', 'fusermount', 'supernode-timeout', 'port-timeout', 'rules-file', 'interval']

/** Validates `plugin-config.doctor`; messages name the key. */
export function doctorSettings(raw: Record<string, unknown>): DoctorSettings {
  const key = (k: string): string => `plugin-config.doctor.${k}`
  const bad = (k: string, want: string): NaiadError => new NaiadError('PROTO_ERR_BAD_CONFIG', `${key(k)}: expected ${want}`)
  const unknown = Object.keys(raw).find((k) => !SETTING_KEYS.includes(k))
  if (unknown !== undefined) throw new NaiadError('PROTO_ERR_BAD_CONFIG', `${key(unknown)}: unknown setting (known: ${SETTING_KEYS.join(', ')})`)
  const list = (k: string, def: string[]): string[] => {
    const v = raw[k]
    if (v === undefined) return def
    if (typeof v === 'string') return [v]
    if (!Array.isArray(v) || v.some((x) => typeof x !== 'string')) throw bad(k, 'a string or a list of strings')
    return v as string[]
  }
  const text = (k: string, def: string): string => {
    const v = raw[k]
    if (v === undefined) return def
    if (typeof v !== 'string') throw bad(k, 'a string')
    return v
  }
  const duration = (k: string, def: number): number => {
    const v = raw[k]
    if (v === undefined) return def
    try {
      const ms = typeof v === 'number' ? v * 1000 : parseDuration(String(v), key(k))
      if (!(ms > 0)) throw new Error('must be above zero')
      return ms
    } catch (err) {
      throw new NaiadError('PROTO_ERR_BAD_CONFIG', `${key(k)}: ${(err as Error).message}`, { cause: err })
    }
  }
  return {
    registries: list('registries', DOCTOR_DEFAULTS.registries),
    containerdCertsDir: text('containerd-certs-dir', DOCTOR_DEFAULTS.containerdCertsDir),
    dockerDaemonJson: text('docker-daemon-json', DOCTOR_DEFAULTS.dockerDaemonJson),
    podmanRegistriesConf: list('podman-registries-conf', DOCTOR_DEFAULTS.podmanRegistriesConf),
    fuseDevice: text('fuse-device', DOCTOR_DEFAULTS.fuseDevice),
    fusermount: text('fusermount', DOCTOR_DEFAULTS.fusermount),
    supernodeTimeoutMs: duration('supernode-timeout', DOCTOR_DEFAULTS.supernodeTimeoutMs),
    portTimeoutMs: duration('port-timeout', DOCTOR_DEFAULTS.portTimeoutMs),
    rulesFiles: list('rules-file', []),
    intervalMs: duration('interval', DOCTOR_DEFAULTS.intervalMs)
  }
}

/** The daemon as its config describes it. */
export function daemonFactsFromConfig(v: Record<string, unknown>): DaemonFacts {
  return {
    supernode: (v.supernode as string | undefined) ?? '',
    dataDir: v['data-dir'] as string,
    cacheQuota: v['cache-quota'] as number,
    proxy: v['proxy.listen'] as string,
    api: v['api.listen'] as string,
    p2p: [v['p2p.listen'] as string]
  }
}

/** Collects facts and evaluates the rules once. */
export async function runDoctor(daemon: DaemonFacts, settings: DoctorSettings, extraRules: string[] = []): Promise<DoctorReport> {
  const rules = await loadRules([...settings.rulesFiles, ...extraRules])
  const facts = await collectFacts(daemon, settings)
  return evaluateRules(rules, facts, { hostname: hostname(), ...(daemon.peerId !== undefined ? { peerId: daemon.peerId } : {}) })
}

/** The CLI main: prints the report and returns the exit code. */
export async function doctorMain(v: Record<string, unknown>, out: NodeJS.WritableStream = process.stdout): Promise<number> {
  const pluginConfig = (v['plugin-config'] as Record<string, unknown> | undefined)?.doctor ?? {}
  if (pluginConfig === null || typeof pluginConfig !== 'object' || Array.isArray(pluginConfig)) {
    throw new NaiadError('PROTO_ERR_BAD_CONFIG', 'plugin-config.doctor: expected a mapping')
  }
  const settings = doctorSettings(pluginConfig as Record<string, unknown>)
  let report: DoctorReport
  try {
    report = await runDoctor(daemonFactsFromConfig(v), settings, v['doctor.rules'] as string[])
  } catch (err) {
    // A broken rules file is the operator's input, like a bad flag: exit 2 with one clear message.
    if (err instanceof NaiadError && err.code === 'DFD_ERR_DOCTOR_RULE') {
      process.stderr.write(`dfdaemon doctor: ${err.message} [${err.code}]\n`)
      return 2
    }
    throw err
  }
  out.write(v['doctor.json'] === true ? `${JSON.stringify(report, null, 2)}\n` : formatReport(report))
  return report.summary.fail > 0 ? 1 : 0
}
