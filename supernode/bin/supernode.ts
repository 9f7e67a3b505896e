#!/usr/bin/env node
import { dataListen, dataTransport, loadPlugins } from '@naiad/host'
import { createLogger, runCli, untilSignal } from '@naiad/proto'

import { createSupernode, NODE_COMMAND, nodeCommand, SUPERNODE_COMMAND, TOKEN_COMMAND, tokenCreate } from '../src/index.ts'
import { SUPERNODE_PLUGINS } from '../src/plugins/catalog.ts'

const argv = process.argv.slice(2)
const print = (line: string): void => { process.stdout.write(`${line}\n`) }

if (argv[0] === 'token' && argv[1] === 'create') {
  await runCli(TOKEN_COMMAND, argv.slice(2), async ({ values }) => tokenCreate(values, print, (line) => process.stderr.write(`${line}\n`)))
} else if (argv[0] === 'node') {
  await runCli(NODE_COMMAND, argv.slice(1), async ({ values, positionals }) => nodeCommand(values, positionals, print))
} else {
  await runCli(SUPERNODE_COMMAND, argv, async ({ values: v }) => {
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
      sourceAllow: v['source.allow'] as string[],
      announceNetworks: v['scheduler.announce-networks'] as string[],
      publicRead: v['api.public-read'] as boolean,
      plugins: await loadPlugins(v.plugins as string[], SUPERNODE_PLUGINS),
      pluginSettings: v['plugin-config'] as Record<string, Record<string, unknown>>
    })
    await sn.start()
    await untilSignal(logger, () => sn.stop())
  })
}
