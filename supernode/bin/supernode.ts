#!/usr/bin/env node
import { dataListen, dataTransport, loadPlugins } from '@naiad/host'
import { createLogger, runCli, untilSignal } from '@naiad/proto'

import { createSupernode, SUPERNODE_COMMAND } from '../src/index.ts'
import { SUPERNODE_PLUGINS } from '../src/plugins/catalog.ts'

await runCli(SUPERNODE_COMMAND, process.argv.slice(2), async ({ values: v }) => {
  const logger = createLogger('supernode', v['log-level'] as string)
  const sn = await createSupernode({
    dataDir: v['data-dir'] as string,
    logger,
    listen: v.listen as string,
    p2pListen: [v['p2p.listen'] as string],
    seed: {
      enabled: v['seed.enabled'] as boolean,
      cacheQuota: v['seed.cache-quota'] as number,
      uploadSlots: v['seed.upload-slots'] as number,
      caFile: v['origin.ca-file'] as string,
      data: { ...dataListen(v['piece.listen'] as string, v['p2p.listen'] as string, 8004), transport: dataTransport(v['piece.transport'] as string) }
    },
    hostTtlMs: v['scheduler.host-ttl'] as number,
    plugins: await loadPlugins(v.plugins as string[], SUPERNODE_PLUGINS),
    pluginSettings: v['plugin-config'] as Record<string, Record<string, unknown>>
  })
  await sn.start()
  await untilSignal(logger, () => sn.stop())
})
