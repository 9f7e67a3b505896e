#!/usr/bin/env node
import { checkNode } from '@naiad/proto/node-version'

checkNode('supernode')

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
