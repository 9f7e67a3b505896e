// How far one download got: the bytes it stored from peers and from the origin, the run of
// stored pieces from the start, and whether the whole content is verified; and who hears
// of each change (progress-notifier.ts).

import { ProgressNotifier } from './progress-notifier.ts'
import type { TaskView } from './task-view.ts'
import type { DownloadProgress } from './types.ts'

export class TaskProgress {
  fromPeers = 0
  fromOrigin = 0
  /** The whole content matched its digest: every byte may be served. */
  finished = false
  /** Consecutive stored pieces from the start. */
  private prefixPieces = 0
  private readonly notifier = new ProgressNotifier<DownloadProgress>()
  private readonly taskId: string
  private readonly view: TaskView
  private readonly have: () => { has(num: number): boolean }

  /** `have`: the pieces in the store (its bitmap of the task). */
  constructor(taskId: string, view: TaskView, have: () => { has(num: number): boolean }) {
    this.taskId = taskId
    this.view = view
    this.have = have
  }

  /** Bytes stored by this download (not those that were already there). */
  get completedBytes(): number {
    return this.fromPeers + this.fromOrigin
  }

  /** A piece's bytes were stored by this download. */
  add(from: 'peer' | 'origin', length: number): void {
    if (from === 'peer') this.fromPeers += length
    else this.fromOrigin += length
  }

  /** Extends the stored prefix over the pieces now in the store. */
  advance(): void {
    const have = this.have()
    while (have.has(this.prefixPieces)) this.prefixPieces++
  }

  /** Bytes from the start that are verified and may be served now (see TaskView.servable). */
  servable(): number {
    return this.view.servable(this.prefixPieces, this.finished)
  }

  snapshot(): DownloadProgress {
    return {
      taskId: this.taskId,
      completedBytes: this.completedBytes,
      totalBytes: this.view.contentLength,
      fromPeers: this.fromPeers,
      fromOrigin: this.fromOrigin,
      servableBytes: this.servable()
    }
  }

  listen(listener: (p: DownloadProgress) => void): () => void {
    return this.notifier.listen(listener)
  }

  /** Resolves at the next emit(), or when `signal` fires. */
  changed(signal?: AbortSignal): Promise<void> {
    return this.notifier.changed(signal)
  }

  /** Tells listeners and waiters the progress now. */
  emit(): void {
    this.notifier.emit(this.snapshot())
  }
}
