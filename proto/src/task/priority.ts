// Traffic classes: what a download is for, most urgent first. Clients name one (the local
// API's `priority`, `X-Naiad-Priority`, the `download` control command); the QoS seam serves
// the classes in this order when a plugin installs limits.

export type Priority = 'on-demand' | 'preheat' | 'prefetch'

export const PRIORITIES: readonly Priority[] = ['on-demand', 'preheat', 'prefetch']

export function isPriority(v: unknown): v is Priority {
  return typeof v === 'string' && (PRIORITIES as readonly string[]).includes(v)
}

/** The more urgent of two classes. */
export function higherPriority(a: Priority, b: Priority): Priority {
  return PRIORITIES.indexOf(a) <= PRIORITIES.indexOf(b) ? a : b
}
