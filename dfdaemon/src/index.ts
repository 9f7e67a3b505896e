/**
 * @naiad/dfdaemon — the per-node daemon: the piece engine (@naiad/peer) with the registry
 * mirror and forward proxy, the local API, control commands, cluster membership, and the
 * typed context its plugins get.
 *
 * @example
 * import { loadOptions } from '@naiad/proto'
 * import { createDaemon, daemonOptionsFromConfig, DFDAEMON_COMMAND } from '@naiad/dfdaemon'
 * const daemon = await createDaemon(daemonOptionsFromConfig(loadOptions(DFDAEMON_COMMAND, argv).values, logger))
 * await daemon.start()
 * const result = await daemon.download({ url: 'https://example.com/file', headers: {} })
 *
 * // an out-of-tree plugin, typed from this entry (load it with `plugins: [./my-plugin.ts]`):
 * import { daemonPlugin } from '@naiad/dfdaemon'
 * export default daemonPlugin({
 *   name: 'my-plugin', version: '1.0.0',
 *   setup(ctx) { ctx.route('GET', '/api/v1/hello', () => ({ body: { peer: ctx.fabric.peerId.toString() } })) }
 * })
 */

export { createDaemon, Daemon, type DaemonComponents } from './daemon.ts'
export type { DaemonOptions } from './config/daemon-options.ts'
export { DFDAEMON_COMMAND, type DaemonConfig } from './config/options.ts'
export { daemonOptionsFromConfig } from './config/from-config.ts'
export { DAEMON_PLUGINS } from './plugins/catalog.ts'
export {
  daemonPlugin, type DaemonPlugin, type DaemonPluginContext, type DaemonInfo, type SupernodeLink, type ControlHandler
} from './plugin-api/context.ts'
