// `dfdaemon doctor`: checks this node against the built-in and user rules. It reads the
// daemon's own config file with the daemon's option table (so it checks the daemon as
// configured) and its doctor settings under `plugin-config.doctor`, the same ones the doctor
// plugin uses. The daemon's table comes from the caller: node tools depend on proto only.

import { hostname } from 'node:os'

import { defineCommand, NaiadError, type CommandSpec, type OptionSpec } from '@naiad/proto/contracts'

import { collectFacts, type DaemonFacts, type DoctorSettings } from './facts.ts'
import { evaluateRules, formatReport, loadRules, type DoctorReport } from './rules.ts'
import { readDoctorSettings } from './settings.ts'

const DOCTOR_OPTIONS = [
  { key: 'doctor.json', flag: 'json', type: 'bool', default: false, help: 'print the report as JSON' },
  { key: 'doctor.rules', flag: 'rules', type: 'string', multiple: true, default: [], meta: 'FILE', help: 'extra rules file (repeatable), after the built-in rules and plugin-config.doctor.rules-file' }
] as const

/** The doctor's command line: every option of the daemon it checks, and its own. */
export function doctorCommand<const O extends readonly OptionSpec[]>(daemon: CommandSpec<O>) {
  return defineCommand({
    name: 'dfdaemon doctor',
    usage: 'dfdaemon doctor [--config FILE] [--json] [--rules FILE]... [any dfdaemon flag, e.g. --supernode URL --data-dir DIR]',
    summary: 'Checks this node: container runtime mirror configuration, disk, ports, FUSE, clock and supernode, against built-in and user rules (docs/doctor.md). Exit 0: no failing error rule; 1: an error rule failed; 2: usage or rules error.',
    configFile: true,
    options: [...daemon.options, ...DOCTOR_OPTIONS]
  })
}

/** What the doctor reads of the daemon's configuration. */
export interface DaemonConfigValues {
  /** The first supernode URL given (the daemon may be given several). */
  supernode: readonly string[] | string | undefined
  'data-dir': string
  'cache-quota': number
  'proxy.listen': string
  'api.listen': string
  'p2p.listen': string
  'plugin-config': Record<string, Record<string, unknown>>
}

/** The daemon as its config describes it. */
export function daemonFactsFromConfig(v: DaemonConfigValues): DaemonFacts {
  return {
    supernode: (typeof v.supernode === 'string' ? v.supernode : v.supernode?.[0]) ?? '',
    dataDir: v['data-dir'],
    cacheQuota: v['cache-quota'],
    proxy: v['proxy.listen'],
    api: v['api.listen'],
    p2p: [v['p2p.listen']]
  }
}

/** Collects facts and evaluates the rules once. */
export async function runDoctor(daemon: DaemonFacts, settings: DoctorSettings, extraRules: string[] = []): Promise<DoctorReport> {
  const rules = await loadRules([...settings.rulesFiles, ...extraRules])
  const facts = await collectFacts(daemon, settings)
  return evaluateRules(rules, facts, { hostname: hostname(), ...(daemon.peerId !== undefined ? { peerId: daemon.peerId } : {}) })
}

/** The CLI main: prints the report and returns the exit code. */
export async function doctorMain(v: DaemonConfigValues & { 'doctor.json': boolean; 'doctor.rules': string[] }, out: NodeJS.WritableStream = process.stdout): Promise<number> {
  const settings = readDoctorSettings(v['plugin-config'].doctor)
  let report: DoctorReport
  try {
    report = await runDoctor(daemonFactsFromConfig(v), settings, v['doctor.rules'])
  } catch (err) {
    // A broken rules file is the operator's input, like a bad flag: exit 2 with one clear message.
    if (err instanceof NaiadError && err.code === 'DFD_ERR_DOCTOR_RULE') {
      process.stderr.write(`dfdaemon doctor: ${err.message} [${err.code}]\n`)
      return 2
    }
    throw err
  }
  out.write(v['doctor.json'] ? `${JSON.stringify(report, null, 2)}\n` : formatReport(report))
  return report.summary.fail > 0 ? 1 : 0
}
