/**
 * @naiad/testkit — fixtures shared by the tests and the benchmarks.
 *
 * @example
 * const origin = await new TestOrigin().start()
 * origin.files.set('/blob', { data: makeBlob(8 << 20, 'seed') })
 * const sn = await startSupernode(dir + '/sn')
 * const d = await startDaemon(dir + '/d1', sn.url)
 */
export * from './blobs.ts'
export * from './origin.ts'
export * from './processes.ts'
export * from './api.ts'
export * from './registry.ts'
export * from './mirror-cluster.ts'
export * from './oci-layers.ts'
export * from './member-node.ts'
export * from './data-channel.ts'
export * from './postgres.ts'
