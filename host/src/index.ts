/**
 * @naiad/host — what both binaries host: the plugin host and loader, the metrics plugin and
 * the listen-address helpers.
 *
 * @example
 * import { PluginHost, loadPlugins, metricsPlugin } from '@naiad/host'
 * const host = new PluginHost({ host: 'supernode', http, fabric, logger, settings: {}, extensions: { stats } })
 * await host.setup(await loadPlugins(['metrics'], { metrics: async () => metricsPlugin }))
 */

export { PluginHost, type PluginHostOptions } from './plugin-host.ts'
export { loadPlugins, type PluginCatalog } from './plugin-loader.ts'
export { metricsPlugin, type Stats } from './metrics-plugin.ts'
export { advertisedAddrs, dataListen, dataTransport, listenHost, splitHostPort } from './listen.ts'
