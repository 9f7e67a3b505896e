/**
 * @naiad/host — what both binaries host: the plugin host and loader, the typed base of every
 * plugin context (with the binary's Prometheus registry), the metrics plugin and the
 * listen-address helpers.
 *
 * @example
 * import { PluginHost, loadPlugins, metricsPlugin, type PluginCatalog } from '@naiad/host'
 * const catalog: PluginCatalog<MyContext> = { metrics: async () => metricsPlugin('supernode') }
 * const host = new PluginHost({ host: 'supernode', http, fabric, logger, settings: {}, extend: (base) => base })
 * await host.setup(await loadPlugins(['metrics'], catalog, 'supernode'))
 * // … at shutdown: every route, subscription, timer and protocol the plugins registered is undone
 * await host.close()
 */

export { PluginHost, type HostContext, type PluginHostOptions, type PluginScope, type Stats } from './plugins/plugin-host.ts'
export { loadPlugins, type PluginCatalog } from './plugins/plugin-loader.ts'
export { metricsPlugin } from './metrics/metrics-plugin.ts'
export { advertisedAddrs, dataListen, listenHost, splitHostPort } from './listen/listen.ts'
