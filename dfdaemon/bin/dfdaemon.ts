#!/usr/bin/env node
import { createLogger, runCli } from '@naiad/proto'

import { createDaemon, daemonOptionsFromConfig, DFDAEMON_COMMAND } from '../src/index.ts'

await runCli(DFDAEMON_COMMAND, process.argv.slice(2), async ({ values }) => {
  const logger = createLogger('dfdaemon', values['log-level'] as string)
  const daemon = await createDaemon(await daemonOptionsFromConfig(values, logger))
  await daemon.start()
  await new Promise<void>((resolve) => {
    const stop = (): void => {
      logger.info('shutting down')
      daemon.stop().catch((err: unknown) => logger.error({ err }, 'shutdown failed')).finally(resolve)
    }
    process.once('SIGINT', stop)
    process.once('SIGTERM', stop)
  })
})
