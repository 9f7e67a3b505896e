export { RegistryClient, RegistryError, authFromEnv, sha256Digest, type RegistryClientOptions } from './client.ts'
export { parseRef, formatRef, refReference, isDigest, type ImageRef } from './ref.ts'
export { OCI_MEDIA_TYPES, MANIFEST_ACCEPT, parseManifest, parseIndex, selectPlatform, isIndex, type Descriptor, type OciManifest, type OciIndex } from './oci.ts'
