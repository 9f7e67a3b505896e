#!/usr/bin/env node
import { checkNode } from '@naiad/proto/node-version'

checkNode('dfdaemon')

const argv = process.argv.slice(2)

if (argv[0] === 'init-config') {
  const { initConfigMain } = await import('@naiad/node-tools')
  await initConfigMain(argv.slice(1))
} else if (argv[0] === 'doctor') {
  const { runCli } = await import('@naiad/proto/contracts')
  const { doctorCommand, doctorMain } = await import('@naiad/node-tools')
  const { DFDAEMON_COMMAND } = await import('@naiad/dfdaemon')
  await runCli(doctorCommand(DFDAEMON_COMMAND), argv.slice(1), async ({ values }) => doctorMain(values))
} else {
  const { loadPlugins } = await import('@naiad/host')
  const { createLogger, runCli, untilSignal } = await import('@naiad/proto')
  const { createDaemon, DAEMON_PLUGINS, daemonOptionsFromConfig, DFDAEMON_COMMAND } = await import('@naiad/dfdaemon')
  await runCli(DFDAEMON_COMMAND, argv, async ({ values }) => {
    const logger = createLogger('dfdaemon', values['log-level'])
    const options = daemonOptionsFromConfig(values, logger)
    const daemon = await createDaemon({ ...options, plugins: await loadPlugins(values.plugins, DAEMON_PLUGINS, 'dfdaemon') })
    await daemon.start()
    await untilSignal(logger, () => daemon.stop())
  })
}
