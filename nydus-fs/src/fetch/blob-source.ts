// Where stored chunk bytes come from. A source reads an inclusive byte range of a data
// blob and knows nothing of chunks; the fetcher verifies what it returns. Two exist: the
// registry itself (a Range request) and the local dfdaemon (aligned windows, so that
// lazy reads on many nodes ask the swarm for the same tasks).

import type { BlobRef } from '@naiad/proto/contracts'

import type { RegistryClient } from '@naiad/oci'
import type { FetchPriority } from './fetch-queue.ts'

export type SourceName = 'daemon' | 'registry'

export interface BlobSource {
  readonly name: SourceName
  /** Whether it is worth asking now (a daemon that refused connections rests a while). */
  available(): boolean
  /**
   * Stored bytes `start`..`end` (inclusive) of a data blob, exactly that many. `priority`
   * tells a source that can rank requests (the daemon's QoS) whether a read waits on it.
   */
  read(blob: BlobRef, start: number, end: number, signal: AbortSignal, priority?: FetchPriority): Promise<Buffer>
}

/** Ranged GETs straight to the registry. */
export class RegistrySource implements BlobSource {
  readonly name = 'registry' as const
  private readonly client: RegistryClient
  private readonly repository: string

  constructor(client: RegistryClient, repository: string) {
    this.client = client
    this.repository = repository
  }

  available(): boolean {
    return true
  }

  async read(blob: BlobRef, start: number, end: number, signal: AbortSignal): Promise<Buffer> {
    return await this.client.getBlob(this.repository, blob.digest, { range: { start, end }, signal })
  }
}
