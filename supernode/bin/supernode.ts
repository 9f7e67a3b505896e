#!/usr/bin/env node
import { checkNode } from '@naiad/proto/node-version'

checkNode('supernode')

// The scheduler's calls (20,000 piece reports a second at 10,000 peers) make short-lived
// objects only, so V8 kept the young generation near its 1 MiB start and scavenged very
// often; each scavenge copies whatever calls were in flight, which then often lives on into
// old space (bench/README.md, issue 15). A larger young generation from the start lets those
// die first. process.execve keeps the process ID (services and benchmarks watch it); a
// semi-space flag named on the command line or in NODE_OPTIONS wins.
const YOUNG = '--min-semi-space-size=16'
const named = (args: readonly string[]): boolean => args.some((a) => a.includes('semi-space-size'))
if (typeof process.execve === 'function' && !named(process.execArgv) && !named((process.env.NODE_OPTIONS ?? '').split(/\s+/))) {
  process.execve(process.execPath, [process.execPath, ...process.execArgv, YOUNG, ...process.argv.slice(1)])
}

const { loadPlugins } = await import('@naiad/host')
const { createLogger, runCli, untilSignal } = await import('@naiad/proto')
const {
  createSupernode, NODE_COMMAND, nodeCommand, SUPERNODE_COMMAND, SUPERNODE_PLUGINS, supernodeOptionsFromConfig, TOKEN_COMMAND, tokenCreate
} = await import('@naiad/supernode')

const argv = process.argv.slice(2)
const print = (line: string): void => { process.stdout.write(`${line}\n`) }

if (argv[0] === 'token' && argv[1] === 'create') {
  await runCli(TOKEN_COMMAND, argv.slice(2), async ({ values }) => tokenCreate(values, print, (line) => process.stderr.write(`${line}\n`)))
} else if (argv[0] === 'node') {
  await runCli(NODE_COMMAND, argv.slice(1), async ({ values, positionals }) => nodeCommand(values, positionals, print))
} else {
  await runCli(SUPERNODE_COMMAND, argv, async ({ values }) => {
    const logger = createLogger('supernode', values['log-level'])
    const plugins = await loadPlugins(values.plugins, SUPERNODE_PLUGINS, 'supernode')
    const sn = await createSupernode({ ...supernodeOptionsFromConfig(values, logger), plugins })
    await sn.start()
    await untilSignal(logger, () => sn.stop())
  })
}
