// Reading lazy images: shared by `mount` and `check`.
export { loadLazyImage, lazyAnnotations, type LazyImage, type LoadOptions } from './load.ts'
export { encodeBootstrap, decodeBootstrap, validateBootstrap, isValidChunkSize, isValidName, compareNames, BOOTSTRAP_MAX_BYTES, NAME_MAX } from './bootstrap.ts'
export { computeDigests, expectedDigest, rootDigestOf } from './merkle.ts'
export { lookupPath, lookupInode, resolvePath, findEntry, walk, firstPaths, type WalkEntry } from './tree.ts'
export { chunkRange, decodeChunk, readChunk } from './chunks.ts'
