// Chunk fetching: verified chunks from the cache, the dfdaemon or the registry.
export { ChunkFetcher, FETCH_DEFAULTS, type ChunkFetcherOptions, type ChunkFetcherComponents, type FetchEvent, type FetchStats } from './chunk-fetcher.ts'
export { RegistrySource, type BlobSource, type SourceName } from './blob-source.ts'
export { DaemonSource, type DaemonSourceOptions, type DaemonSourceStats } from './daemon-source.ts'
export { FetchQueue, type FetchPriority, type Ticket, type FetchQueueOptions } from './fetch-queue.ts'
export { verifyChunk } from './verify-chunk.ts'
export { NYDUS_EVENTS } from './events.ts'
