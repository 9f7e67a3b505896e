#!/usr/bin/env node
import { createLogger, runCli, untilSignal } from '@naiad/proto'

import { createDaemon, daemonOptionsFromConfig, DFDAEMON_COMMAND, DOCTOR_COMMAND, doctorMain, INIT_CONFIG_COMMAND, runtimeConfig, writeRuntimeConfig } from '../src/index.ts'

const argv = process.argv.slice(2)

if (argv[0] === 'init-config') {
  await runCli(INIT_CONFIG_COMMAND, argv.slice(1), async ({ values: v }) => {
    const cfg = await runtimeConfig(v.runtime as string, v.registry as string, v.mirror as string, v['certs-dir'] as string, v.file as string)
    if (v['dry-run'] === true) {
      process.stdout.write(`# ${cfg.path}\n${cfg.content}`)
      return
    }
    await writeRuntimeConfig(cfg)
    process.stdout.write(`wrote ${cfg.path}\n`)
  })
} else if (argv[0] === 'doctor') {
  await runCli(DOCTOR_COMMAND, argv.slice(1), async ({ values }) => doctorMain(values))
} else {
  await runCli(DFDAEMON_COMMAND, argv, async ({ values }) => {
    const logger = createLogger('dfdaemon', values['log-level'] as string)
    const daemon = await createDaemon(await daemonOptionsFromConfig(values, logger))
    await daemon.start()
    await untilSignal(logger, () => daemon.stop())
  })
}
