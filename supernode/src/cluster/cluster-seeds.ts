// The seeds of a cluster: the seed of a task is its owner's (cluster.ts), so what warms a
// task ahead of its pulls (the preheat plugin) must warm the owner's seed, not its own. Each
// supernode serves `/naiad/seed-fetch/1.0.0` to the other supernodes of its cluster (their
// credential carries the role supernode; daemons are refused) and fetches through its seed
// what they ask; `ClusterSeeds` is the asking side, with the owner of every task.

import type { Logger } from 'pino'
import type { DownloadProgress, DownloadRequest, DownloadResult } from '@naiad/peer'
import { callSeedFetch, dialableAddrs, NaiadError, serveSeedFetch, type FabricNode } from '@naiad/proto'

import type { SupernodeMember } from './membership.ts'

export interface SeedFetchServiceComponents {
  node: FabricNode
  seed: SeedDownloader
  /** Whether a peer proved the role supernode in this cluster (Admission.isSupernode). */
  isSupernode: (peerId: string) => boolean
  logger: Logger
  stopping?: AbortSignal
}

/** Serves the other supernodes' seed fetches; the longest one may take `maxTimeoutMs`. */
export async function serveSeedFetches(c: SeedFetchServiceComponents, maxTimeoutMs: number): Promise<void> {
  await serveSeedFetch(c.node, async (req, ctx) => {
    const from = ctx.remotePeer.toString()
    if (!c.isSupernode(from)) {
      c.logger.warn({ from }, 'seed fetch from a peer that is not a supernode of this cluster refused')
      throw new NaiadError('PROTO_ERR_FORBIDDEN', 'seed fetches are for the supernodes of the cluster only')
    }
    const download: DownloadRequest = {
      url: req.url,
      headers: Object.fromEntries(req.headers.map((h) => [h.name, h.value])),
      ...(req.digest === '' ? {} : { digest: req.digest }),
      ...(req.range === '' ? {} : { range: req.range }),
      ...(req.filter.length === 0 ? {} : { filter: req.filter })
    }
    c.logger.debug({ from, url: req.url }, 'seed fetch for another supernode')
    const r = await c.seed.download(download, {
      signal: ctx.signal,
      onProgress: (p) => ctx.progress({ taskId: p.taskId, completedBytes: p.completedBytes, totalBytes: p.totalBytes })
    })
    return { taskId: r.taskId, contentLength: r.contentLength, sha256: r.sha256, fromPeers: r.fromPeers, fromOrigin: r.fromOrigin, cached: r.cached, completedBytes: r.contentLength, totalBytes: r.contentLength }
  }, { maxTimeoutMs, stopping: c.stopping })
}

/** What fetches a task through this supernode's seed (the seed's engine; plugins get it as ctx.seed). */
export interface SeedDownloader {
  download(req: DownloadRequest, options: { signal?: AbortSignal; onProgress?: (p: DownloadProgress) => void }): Promise<DownloadResult>
}

export interface ClusterSeedsComponents {
  node: FabricNode
  /** The live members and the owner of each task (Cluster). */
  cluster: { readonly selfId: string; ownerOf(taskId: string): SupernodeMember }
}

export interface RemoteSeedOptions {
  signal?: AbortSignal
  /** The whole fetch. */
  timeoutMs: number
  onProgress?: (p: Pick<DownloadProgress, 'taskId' | 'completedBytes' | 'totalBytes'>) => void
}

/** The asking side: who owns a task, and having that owner's seed fetch it. */
export class ClusterSeeds {
  private readonly c: ClusterSeedsComponents

  constructor(components: ClusterSeedsComponents) {
    this.c = components
  }

  get selfId(): string {
    return this.c.cluster.selfId
  }

  ownerOf(taskId: string): SupernodeMember {
    return this.c.cluster.ownerOf(taskId)
  }

  /**
   * Has `owner`'s seed fetch `req`. Throws PROTO_ERR_DIAL / PROTO_ERR_TIMEOUT /
   * PROTO_ERR_FORBIDDEN when the owner cannot be reached or refuses, else the seed's own code.
   */
  async download(owner: Pick<SupernodeMember, 'id' | 'multiaddrs'>, req: DownloadRequest, options: RemoteSeedOptions): Promise<DownloadResult> {
    const addrs = dialableAddrs(owner.multiaddrs, owner.id)
    if (addrs.length === 0) throw new NaiadError('PROTO_ERR_DIAL', `supernode ${owner.id} lists no fabric address`)
    const f = await callSeedFetch(this.c.node, addrs, {
      url: req.url,
      headers: Object.entries(req.headers).map(([name, value]) => ({ name, value })),
      digest: req.digest ?? '',
      range: req.range ?? '',
      filter: req.filter ?? []
    }, { signal: options.signal, timeoutMs: options.timeoutMs, onProgress: options.onProgress })
    return { taskId: f.taskId, contentLength: f.contentLength, sha256: f.sha256, fromPeers: f.fromPeers, fromOrigin: f.fromOrigin, cached: f.cached }
  }
}

/** A member's addresses that name it (one naming another peer would reach that peer instead). */
