/**
 * @naiad/nydus-fs — lazy container images: convert an OCI image into a chunked,
 * deduplicated, Merkle-verified image in the same registry, mount it over FUSE, check it.
 *
 * @example
 * import { RegistryClient, parseRef } from '@naiad/oci'
 * import { loadLazyImage, lookupInode, readChunk } from '@naiad/nydus-fs'
 * const ref = parseRef('127.0.0.1:5000/app:lazy')
 * const client = new RegistryClient(ref.registry, { plainHttp: true })
 * const image = await loadLazyImage(client, ref)          // bootstrap verified against the root digest
 * const passwd = lookupInode(image.bootstrap, '/etc/passwd')!
 * const first = await readChunk(client, ref.repository, image.bootstrap, passwd.chunks[0])
 */
export * from './image/index.ts'
export * from './convert/index.ts'
export * from './check/index.ts'
export { main as cli } from './cli/commands.ts'
