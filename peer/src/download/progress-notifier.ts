// Who hears of a download's progress: listeners get every new progress value, and waiters
// (a mirror or local-API response streaming servable bytes) are woken once at the next
// change. A waiter whose caller gave up goes away with its signal.

export class ProgressNotifier<T> {
  private readonly listeners = new Set<(p: T) => void>()
  private readonly waiters = new Set<() => void>()

  /** Calls `listener` with every progress emitted from now on; returns the unsubscribe. */
  listen(listener: (p: T) => void): () => void {
    this.listeners.add(listener)
    return () => this.listeners.delete(listener)
  }

  /** Resolves at the next emit(), or when `signal` fires. */
  changed(signal?: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        this.waiters.delete(done)
        signal?.removeEventListener('abort', done)
        resolve()
      }
      if (signal?.aborted === true) return resolve()
      this.waiters.add(done)
      signal?.addEventListener('abort', done, { once: true })
    })
  }

  emit(progress: T): void {
    for (const l of this.listeners) l(progress)
    // A copy: each waiter removes itself as it runs.
    for (const w of [...this.waiters]) w()
  }
}
