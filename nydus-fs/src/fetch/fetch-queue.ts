// Two-priority admission for network fetches. On-demand reads take any free slot;
// prefetch gets at most a few slots and only while no read is waiting, so a container's
// own reads never queue behind background work. A read that needs a chunk a queued
// prefetch is about to fetch promotes that prefetch (its ticket) instead of waiting behind it.

import { NaiadError, type Priority } from '@naiad/proto/contracts'

/** The daemon's classes a lazy mount uses: a container's reads (on-demand) and background prefetch. */
export type FetchPriority = Extract<Priority, 'on-demand' | 'prefetch'>

/** The priority of one fetch; shared and mutable so that it can be promoted while queued. */
export interface Ticket {
  priority: FetchPriority
}

interface Waiter {
  ticket: Ticket
  start: () => void
}

export interface FetchQueueOptions {
  /** Fetches in flight at once, all priorities. */
  concurrency: number
  /** Of those, at most this many for prefetch. */
  prefetchConcurrency: number
}

export class FetchQueue {
  private readonly concurrency: number
  private readonly prefetchConcurrency: number
  private active = 0
  private activePrefetch = 0
  private readonly waiting: Waiter[] = []

  constructor(options: FetchQueueOptions) {
    this.concurrency = options.concurrency
    this.prefetchConcurrency = options.prefetchConcurrency
  }

  get idle(): boolean {
    return this.active === 0 && this.waiting.length === 0
  }

  async run<T>(ticket: Ticket, signal: AbortSignal, fn: () => Promise<T>): Promise<T> {
    const admitted = await this.admit(ticket, signal)
    try {
      return await fn()
    } finally {
      this.active--
      if (admitted === 'prefetch') this.activePrefetch--
      this.pump()
    }
  }

  /** Starts whatever may start now (after a promotion, or a slot freed). */
  pump(): void {
    while (true) {
      const read = this.waiting.findIndex((w) => w.ticket.priority === 'on-demand')
      if (read >= 0 && this.canStart('on-demand', true)) { this.waiting.splice(read, 1)[0].start(); continue }
      const pre = read >= 0 ? -1 : this.waiting.findIndex((w) => w.ticket.priority === 'prefetch')
      if (pre >= 0 && this.canStart('prefetch', false)) { this.waiting.splice(pre, 1)[0].start(); continue }
      return
    }
  }

  private canStart(priority: FetchPriority, readWaiting: boolean): boolean {
    if (this.active >= this.concurrency) return false
    if (priority === 'on-demand') return true
    return !readWaiting && this.activePrefetch < this.prefetchConcurrency
  }

  private take(priority: FetchPriority): FetchPriority {
    this.active++
    if (priority === 'prefetch') this.activePrefetch++
    return priority
  }

  private admit(ticket: Ticket, signal: AbortSignal): Promise<FetchPriority> {
    signal.throwIfAborted()
    const readWaiting = this.waiting.some((w) => w.ticket.priority === 'on-demand')
    if (!(ticket.priority === 'prefetch' && this.waiting.length > 0) && this.canStart(ticket.priority, readWaiting)) {
      return Promise.resolve(this.take(ticket.priority))
    }
    return new Promise<FetchPriority>((resolve, reject) => {
      const onAbort = (): void => {
        const i = this.waiting.indexOf(waiter)
        if (i >= 0) this.waiting.splice(i, 1)
        reject(signal.reason ?? new NaiadError('NFS_ERR_FETCH', 'aborted while queued'))
      }
      const waiter: Waiter = {
        ticket,
        start: () => { signal.removeEventListener('abort', onAbort); resolve(this.take(ticket.priority)) }
      }
      signal.addEventListener('abort', onAbort, { once: true })
      this.waiting.push(waiter)
    })
  }
}
