import { useEffect, useRef, useState } from 'preact/hooks'

import { ApiError, get } from './api.ts'

export interface Polled<T> {
  data: T | undefined
  error: ApiError | Error | undefined
  /** When the last answer arrived (ms since the epoch). */
  at: number
  refresh: () => void
}

/** Listeners told when any poll gets a 401, so the app can ask for a token once. */
const unauthorized = new Set<() => void>()
export function onUnauthorized(fn: () => void): () => void {
  unauthorized.add(fn)
  return () => { unauthorized.delete(fn) }
}

/**
 * GETs `path` now and every `intervalMs` (live updates without a reload), skipping turns
 * while the tab is hidden. `path` null pauses. A 404 is an answer too: a plugin that is not
 * loaded leaves its section empty with a note, not an error.
 */
export function usePoll<T>(path: string | null, intervalMs = 2000): Polled<T> {
  const [state, setState] = useState<Omit<Polled<T>, 'refresh'>>({ data: undefined, error: undefined, at: 0 })
  const [tick, setTick] = useState(0)
  const inFlight = useRef(false)
  useEffect(() => {
    if (path === null) return
    let stopped = false
    const controller = new AbortController()
    const load = async (): Promise<void> => {
      if (inFlight.current || (document.hidden && state.at !== 0)) return
      inFlight.current = true
      try {
        const data = await get<T>(path, AbortSignal.any([controller.signal, AbortSignal.timeout(10_000)]))
        if (!stopped) setState({ data, error: undefined, at: Date.now() })
      } catch (err) {
        if (stopped) return
        if (err instanceof ApiError && err.status === 401) for (const fn of unauthorized) fn()
        setState((s) => ({ ...s, error: err as Error, at: Date.now() }))
      } finally {
        inFlight.current = false
      }
    }
    void load()
    const timer = setInterval(() => { void load() }, intervalMs)
    return () => { stopped = true; controller.abort(); clearInterval(timer) }
  }, [path, intervalMs, tick])
  return { ...state, refresh: () => setTick((n) => n + 1) }
}
