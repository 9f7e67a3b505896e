// The chunk cache: memory LRU in front of a disk directory, keyed by chunk digest.
export { ChunkCache, type ChunkCacheOptions, type ChunkCacheStats, type CacheTier } from './chunk-cache.ts'
export { MemoryChunkCache } from './memory-cache.ts'
export { DiskChunkCache, type DiskCacheOptions } from './disk-cache.ts'
