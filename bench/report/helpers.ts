// Small pieces every benchmark uses.

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 === 1 ? s[m] : (s[m - 1] + s[m]) / 2
}

/** Waits for `p`, or rejects as soon as `signal` aborts (Ctrl-C, the run's time limit). */
export async function withSignal<T>(p: Promise<T>, signal: AbortSignal, what: string): Promise<T> {
  signal.throwIfAborted()
  let onAbort: (() => void) | undefined
  try {
    return await Promise.race([p, new Promise<never>((_, reject) => {
      onAbort = () => reject(new Error(`${what}: ${(signal.reason as Error)?.message ?? 'aborted'}`))
      signal.addEventListener('abort', onAbort, { once: true })
    })])
  } finally {
    if (onAbort !== undefined) signal.removeEventListener('abort', onAbort)
  }
}
