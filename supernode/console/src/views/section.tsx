import type { ComponentChildren } from 'preact'

import type { Polled } from '../hooks.ts'
import { ApiError } from '../api.ts'

/** A panel with a title, a count, and what went wrong with its data (a 404: the plugin is not loaded). */
export function Section({ id, title, count, polled, children, actions }: { id: string; title: string; count?: number; polled?: Polled<unknown>; children: ComponentChildren; actions?: ComponentChildren }) {
  const err = polled?.error
  const note = err === undefined
    ? null
    : err instanceof ApiError && err.status === 404
      ? <p class="note">Not available: the plugin that serves it is not loaded on this supernode.</p>
      : <p class="error">Cannot load: {err.message}</p>
  return (
    <section id={id} class="panel">
      <header><h2>{title}{count !== undefined ? <span class="count">{count}</span> : null}</h2>{actions}</header>
      {note}
      {children}
    </section>
  )
}
