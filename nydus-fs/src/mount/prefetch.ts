// Background prefetch: the files of the bootstrap's prefetch table, then the files a
// previous mount of this image read (its access log), chunk by chunk in that order, at
// prefetch priority (a few requests at a time, and never ahead of a waiting read).

import type { Bootstrap } from '@naiad/proto/contracts'

import type { ChunkFetcher } from '../fetch/chunk-fetcher.ts'
import type { PrefetchStats } from './stats.ts'

export interface PrefetcherComponents {
  bootstrap: Bootstrap
  fetcher: ChunkFetcher
  signal: AbortSignal
  onError?: (err: unknown) => void
}

export interface PrefetcherOptions {
  /** Stored bytes per prefetch request, about. */
  batchBytes?: number
  /** Batches in flight (the fetch queue bounds it further). */
  parallel?: number
}

export class Prefetcher {
  readonly stats: PrefetchStats
  private readonly b: Bootstrap
  private readonly fetcher: ChunkFetcher
  private readonly signal: AbortSignal
  private readonly onError: ((err: unknown) => void) | undefined
  private readonly files: number[]
  private readonly batchBytes: number
  private readonly parallel: number
  done: Promise<void> = Promise.resolve()

  constructor(components: PrefetcherComponents, files: number[], accessLog: PrefetchStats['accessLog'], options: PrefetcherOptions = {}) {
    this.b = components.bootstrap
    this.fetcher = components.fetcher
    this.signal = components.signal
    this.onError = components.onError
    const seen = new Set<number>()
    this.files = files.filter((ino) => {
      if (seen.has(ino) || this.b.inodes[ino]?.type !== 'file' || this.b.inodes[ino].chunks.length === 0) return false
      seen.add(ino)
      return true
    })
    this.batchBytes = options.batchBytes ?? 4 * 1024 * 1024
    this.parallel = options.parallel ?? 2
    this.stats = { enabled: true, files: this.files.length, filesDone: 0, errors: 0, done: this.files.length === 0, accessLog }
  }

  start(): void {
    this.done = this.run().finally(() => { this.stats.done = true })
  }

  /** Chunk batches in file order, skipping chunks already cached or on their way. */
  private *batches(): Generator<{ chunks: number[]; files: number }> {
    const queued = new Set<number>()
    let chunks: number[] = []
    let bytes = 0
    let files = 0
    for (const ino of this.files) {
      for (const c of this.b.inodes[ino].chunks) {
        if (queued.has(c) || this.fetcher.isCachedOrPending(c)) continue
        queued.add(c)
        chunks.push(c)
        bytes += this.b.chunks[c].storedSize
        if (bytes >= this.batchBytes) {
          yield { chunks, files }
          chunks = []
          bytes = 0
          files = 0
        }
      }
      files++
    }
    yield { chunks, files }
  }

  private async run(): Promise<void> {
    const it = this.batches()
    const worker = async (): Promise<void> => {
      while (!this.signal.aborted) {
        const next = it.next()
        if (next.done === true) return
        const { chunks, files } = next.value
        if (chunks.length > 0) {
          try {
            await this.fetcher.getChunks(chunks, { priority: 'prefetch', signal: this.signal, timeoutMs: 10 * 60_000 })
          } catch (err) {
            this.stats.errors++
            if (!this.signal.aborted) this.onError?.(err)
          }
        }
        this.stats.filesDone += files
      }
    }
    await Promise.all(Array.from({ length: this.parallel }, worker))
  }
}
