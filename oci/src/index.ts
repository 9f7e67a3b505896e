/**
 * @naiad/oci — the one OCI registry client: image references, manifests and indexes (and
 * the choice of a platform's manifest), authentication challenges with a token cache, and
 * registry credentials from Docker's config.json. nydus-fs, the supernode's preheat and the
 * daemon's mirror use it.
 *
 * @example
 * import { parseRef, RegistryClient } from '@naiad/oci'
 * const ref = parseRef('registry.example.com/team/app:v1')
 * const client = new RegistryClient(ref.registry, { plainHttp: false })
 * const { manifest } = await client.resolveImage(ref, 'linux/amd64')
 * const auth = await client.authorizationFor(ref.repository)   // what a third party sends for its blobs
 * await client.close()
 */

export {
  parseRef, parseRefOrUrl, formatRef, refReference, isDigest, registryHost, registryBase, isInsecure, DOCKER_HUB, type ImageRef
} from './reference/reference.ts'
export {
  OCI_MEDIA_TYPES, MANIFEST_ACCEPT, parseManifest, parseIndex, parsePlatform, selectPlatform, isIndex,
  type Descriptor, type OciManifest, type OciIndex
} from './manifest/manifest.ts'
export { parseChallenge, TokenCache, type Challenge } from './auth/challenge.ts'
export { loadDockerCredentials, authFromEnv } from './auth/credentials.ts'
export { RegistryClient, RegistryError, referrersTag, sha256Digest, type RegistryClientOptions } from './client/registry-client.ts'
