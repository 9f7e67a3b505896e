// The progress notifier on its own: listeners hear every progress, waiters are woken once
// at the next change or when their signal fires, and nothing stays registered after either.

import { describe, expect, it } from 'vitest'

import { ProgressNotifier } from '../src/download/progress-notifier.ts'

/** Whether `p` settled by the time queued microtasks ran. */
async function settled(p: Promise<void>): Promise<boolean> {
  let done = false
  void p.then(() => { done = true })
  await new Promise((r) => setImmediate(r))
  return done
}

describe('progress notifier', () => {
  it('hands every emitted value to each listener until it unsubscribes', () => {
    const n = new ProgressNotifier<number>()
    const a: number[] = []
    const b: number[] = []
    const stopA = n.listen((p) => a.push(p))
    n.listen((p) => b.push(p))
    n.emit(1)
    stopA()
    n.emit(2)
    expect(a).toEqual([1])
    expect(b).toEqual([1, 2])
  })

  it('wakes a waiter at the next emit only, and a new wait waits for the one after', async () => {
    const n = new ProgressNotifier<number>()
    const first = n.changed()
    expect(await settled(first)).toBe(false)
    n.emit(1)
    expect(await settled(first)).toBe(true)
    const second = n.changed()
    expect(await settled(second)).toBe(false)
    n.emit(2)
    expect(await settled(second)).toBe(true)
  })

  it('wakes every waiter of one change', async () => {
    const n = new ProgressNotifier<number>()
    const waits = [n.changed(), n.changed(), n.changed()]
    n.emit(1)
    expect(await Promise.all(waits.map(settled))).toEqual([true, true, true])
  })

  it('ends a wait when its signal fires, and at once for a signal already aborted', async () => {
    const n = new ProgressNotifier<number>()
    const ac = new AbortController()
    const wait = n.changed(ac.signal)
    expect(await settled(wait)).toBe(false)
    ac.abort()
    expect(await settled(wait)).toBe(true)
    expect(await settled(n.changed(AbortSignal.abort()))).toBe(true)
  })

  it('lets go of the signal once woken (a long-lived signal does not gather listeners)', async () => {
    const n = new ProgressNotifier<number>()
    const ac = new AbortController()
    let added = 0
    let removed = 0
    const add = ac.signal.addEventListener.bind(ac.signal)
    const remove = ac.signal.removeEventListener.bind(ac.signal)
    ac.signal.addEventListener = ((...args: Parameters<typeof add>) => { added++; add(...args) }) as typeof add
    ac.signal.removeEventListener = ((...args: Parameters<typeof remove>) => { removed++; remove(...args) }) as typeof remove
    for (let i = 0; i < 5; i++) {
      const wait = n.changed(ac.signal)
      n.emit(i)
      await wait
    }
    expect({ added, removed }).toEqual({ added: 5, removed: 5 })
  })
})
