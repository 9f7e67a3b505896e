// The QoS plugin's limiters on a fake clock: exact, deterministic numbers for token
// buckets, weighted bandwidth shares, slot preemption, tenant matching and admission.

import { describe, expect, it } from 'vitest'

import type { Clock } from '../src/plugins/qos/clock.ts'
import { QosPolicy } from '../src/plugins/qos/policy.ts'
import { PrioritySlots } from '../src/plugins/qos/priority-slots.ts'
import { parseQosSettings, QOS_DEFAULTS } from '../src/plugins/qos/settings.ts'
import { namesOf, Tenants } from '../src/plugins/qos/tenants.ts'
import { TokenBucket } from '../src/plugins/qos/token-bucket.ts'
import { WeightedShaper } from '../src/plugins/qos/weighted-shaper.ts'
import { QosHooks, type Traffic } from '@naiad/peer'

/** A clock that moves only when told to, firing due timers in order. */
class FakeClock implements Clock {
  private t = 0
  private seq = 0
  private readonly timers = new Map<number, { at: number; fn: () => void }>()

  now(): number {
    return this.t
  }

  setTimeout(fn: () => void, ms: number): unknown {
    const id = ++this.seq
    this.timers.set(id, { at: this.t + ms, fn })
    return id
  }

  clearTimeout(handle: unknown): void {
    this.timers.delete(handle as number)
  }

  /** Moves time forward by `ms`, running timers as they fall due and letting promises settle. */
  async advance(ms: number, step = 1): Promise<void> {
    const end = this.t + ms
    while (this.t < end) {
      this.t = Math.min(end, this.t + step)
      for (;;) {
        const due = [...this.timers.entries()].filter(([, v]) => v.at <= this.t).sort((a, b) => a[1].at - b[1].at)[0]
        if (due === undefined) break
        this.timers.delete(due[0])
        due[1].fn()
        await flush()
      }
      await flush()
    }
  }
}

async function flush(): Promise<void> {
  for (let i = 0; i < 5; i++) await Promise.resolve()
}

/** Keeps `cls` backlogged: one acquire of `bytes` after another, counting what got through. */
function backlog(shaper: WeightedShaper, cls: string, bytes: number, stop: AbortSignal): { got: number } {
  const out = { got: 0 }
  const loop = (): void => {
    shaper.acquire(bytes, cls, stop).then(() => {
      out.got += bytes
      loop()
    }, () => {})
  }
  // Two outstanding requests per class, as a download with several pieces in flight has.
  loop()
  loop()
  return out
}

const MiB = 1024 * 1024

describe('token bucket', () => {
  it('allows the burst at once, then the rate', () => {
    const clock = new FakeClock()
    const b = new TokenBucket(2, 3, clock)
    expect([b.tryTake(), b.tryTake(), b.tryTake(), b.tryTake()]).toEqual([true, true, true, false])
    expect(b.waitMs(1)).toBe(500)
    void clock.advance(499)
    expect(b.tryTake()).toBe(false)
  })

  it('refills at its rate and never above the burst', async () => {
    const clock = new FakeClock()
    const b = new TokenBucket(10, 5, clock)
    for (let i = 0; i < 5; i++) expect(b.tryTake()).toBe(true)
    await clock.advance(300)
    expect(b.level()).toBeCloseTo(3, 6)
    await clock.advance(10_000)
    expect(b.level()).toBe(5)
  })

  it('goes into debt for a take larger than the burst, and the debt holds the next one back', () => {
    const clock = new FakeClock()
    const b = new TokenBucket(1000, 100, clock)
    b.take(600)
    expect(b.level()).toBe(-500)
    // The next 100 tokens come only after the 500 owed: 600 ms.
    expect(b.waitMs(100)).toBe(600)
  })
})

describe('weighted shaper', () => {
  it('lets bytes through at its rate', async () => {
    const clock = new FakeClock()
    const s = new WeightedShaper({ rate: 10 * MiB, burst: 256 * 1024, weights: { a: 1 } }, clock)
    const stop = new AbortController()
    const a = backlog(s, 'a', 64 * 1024, stop.signal)
    await clock.advance(10_000, 5)
    stop.abort()
    // 10 s at 10 MiB/s plus the initial burst, within one request.
    expect(Math.abs(a.got - (100 * MiB + 256 * 1024))).toBeLessThanOrEqual(128 * 1024)
  })

  it('shares by weight between backlogged classes (70:20:10)', async () => {
    const clock = new FakeClock()
    const s = new WeightedShaper({ rate: 10 * MiB, weights: { 'on-demand': 70, preheat: 20, prefetch: 10 } }, clock)
    const stop = new AbortController()
    const od = backlog(s, 'on-demand', 64 * 1024, stop.signal)
    const ph = backlog(s, 'preheat', 64 * 1024, stop.signal)
    const pf = backlog(s, 'prefetch', 64 * 1024, stop.signal)
    // The initial burst goes to whoever asks first; shares are measured after it.
    await clock.advance(1_000, 5)
    const [od0, ph0, pf0] = [od.got, ph.got, pf.got]
    await clock.advance(10_000, 5)
    stop.abort()
    const [o, h, f] = [od.got - od0, ph.got - ph0, pf.got - pf0]
    const total = o + h + f
    expect(total).toBeGreaterThanOrEqual(100 * MiB - 64 * 1024)
    expect(o / total).toBeCloseTo(0.7, 2)
    expect(h / total).toBeCloseTo(0.2, 2)
    expect(f / total).toBeCloseTo(0.1, 2)
  })

  it('gives an idle class share to the others, in their own proportion', async () => {
    const clock = new FakeClock()
    const s = new WeightedShaper({ rate: 10 * MiB, weights: { 'on-demand': 70, preheat: 20, prefetch: 10 } }, clock)
    const stop = new AbortController()
    const od = backlog(s, 'on-demand', 64 * 1024, stop.signal)
    const ph = backlog(s, 'preheat', 64 * 1024, stop.signal)
    await clock.advance(1_000, 5)
    const [od0, ph0] = [od.got, ph.got]
    await clock.advance(10_000, 5)
    stop.abort()
    expect((od.got - od0) / (ph.got - ph0)).toBeCloseTo(3.5, 1)
    // Together they use the whole rate: prefetch's idle share is not lost.
    expect(od.got - od0 + ph.got - ph0).toBeGreaterThanOrEqual(100 * MiB - 64 * 1024)
  })

  it('lets a class that was idle start at the current share, not with banked credit', async () => {
    const clock = new FakeClock()
    const s = new WeightedShaper({ rate: 10 * MiB, weights: { 'on-demand': 70, preheat: 20 } }, clock)
    const stop = new AbortController()
    const ph = backlog(s, 'preheat', 64 * 1024, stop.signal)
    await clock.advance(5_000, 5)
    const before = ph.got
    const od = backlog(s, 'on-demand', 64 * 1024, stop.signal)
    await clock.advance(5_000, 5)
    stop.abort()
    // Preheat had the whole rate alone; once on-demand came, 70:20 from that moment on.
    expect(before).toBeGreaterThanOrEqual(50 * MiB)
    expect(od.got / (ph.got - before)).toBeCloseTo(3.5, 1)
  })

  it('rejects a waiter whose signal aborts, without holding up the others', async () => {
    const clock = new FakeClock()
    const s = new WeightedShaper({ rate: MiB, burst: 64 * 1024, weights: { a: 1, b: 1 } }, clock)
    await s.acquire(64 * 1024, 'a')
    const ac = new AbortController()
    const blocked = s.acquire(512 * 1024, 'a', ac.signal)
    const other = s.acquire(64 * 1024, 'b')
    ac.abort(new Error('gone'))
    await expect(blocked).rejects.toThrow('gone')
    await clock.advance(100)
    await expect(other).resolves.toBeUndefined()
  })

  it('is a no-op without a rate', async () => {
    const s = new WeightedShaper({ rate: 0, weights: { a: 1 } }, new FakeClock())
    await s.acquire(10 * 1024 * MiB, 'a')
    expect(s.served.get('a')).toBe(10 * 1024 * MiB)
  })
})

describe('priority slots', () => {
  it('hands freed slots to the most urgent waiting class first', async () => {
    const slots = new PrioritySlots(2, ['on-demand', 'preheat', 'prefetch'])
    const r1 = await slots.acquire('prefetch')
    const r2 = await slots.acquire('prefetch')
    const order: string[] = []
    const pf = slots.acquire('prefetch').then((r) => { order.push('prefetch'); return r })
    const ph = slots.acquire('preheat').then((r) => { order.push('preheat'); return r })
    const od = slots.acquire('on-demand').then((r) => { order.push('on-demand'); return r })
    r1()
    await flush()
    expect(order).toEqual(['on-demand'])
    r2()
    await flush()
    expect(order).toEqual(['on-demand', 'preheat'])
    ;(await od)()
    await flush()
    expect(order).toEqual(['on-demand', 'preheat', 'prefetch'])
    ;(await ph)()
    ;(await pf)()
    expect(slots.inUse).toBe(0)
  })

  it('makes a lower class wait while a higher one waits, even if a slot is about to free', async () => {
    const slots = new PrioritySlots(1, ['on-demand', 'preheat'])
    const r = await slots.acquire('preheat')
    const od = slots.acquire('on-demand')
    let lowGot = false
    const low = slots.acquire('preheat').then((x) => { lowGot = true; return x })
    r()
    ;(await od)()
    await flush()
    expect(lowGot).toBe(true)
    ;(await low)()
  })

  it('a released slot is released once only', async () => {
    const slots = new PrioritySlots(1, ['a'])
    const r = await slots.acquire('a')
    r()
    r()
    expect(slots.inUse).toBe(0)
  })
})

describe('tenants', () => {
  const settings = parseQosSettings({
    tenants: [
      { match: 'registry.example:5000/', rate: 100 },
      { match: 'registry.example:5000/team-a/', rate: 2, burst: 2, concurrency: 3, 'download-rate': '8MiB' },
      { match: 'http://files.example/team-b/', concurrency: 1 }
    ]
  })

  it('names a registry URL by host and repository path without /v2/', () => {
    expect(namesOf('https://registry.example:5000/v2/team-a/app/blobs/sha256:00')).toEqual([
      'https://registry.example:5000/v2/team-a/app/blobs/sha256:00',
      'registry.example:5000/team-a/app/blobs/sha256:00'
    ])
  })

  it('picks the longest matching prefix', () => {
    const t = new Tenants(settings.tenants, new FakeClock())
    expect(t.of('http://registry.example:5000/v2/team-a/app/manifests/latest')?.settings.match).toBe('registry.example:5000/team-a/')
    expect(t.of('http://registry.example:5000/v2/team-c/app/manifests/latest')?.settings.match).toBe('registry.example:5000/')
    expect(t.of('http://files.example/team-b/x.bin')?.settings.match).toBe('http://files.example/team-b/')
    expect(t.of('http://other.example/x')).toBeUndefined()
  })

  it('refuses requests over the rate with a Retry-After, and over the concurrency', async () => {
    const clock = new FakeClock()
    const p = new QosPolicy(settings, clock)
    const key = 'http://registry.example:5000/v2/team-a/app/blobs/sha256:00'
    const a1 = p.admit({ tenantKey: key, priority: 'on-demand' })
    const a2 = p.admit({ tenantKey: key, priority: 'on-demand' })
    const a3 = p.admit({ tenantKey: key, priority: 'on-demand' })
    expect([a1.admitted, a2.admitted, a3.admitted]).toEqual([true, true, false])
    expect(a3.admitted === false && a3.retryAfterSec).toBe(1)
    // Another tenant on the same daemon is not affected.
    expect(p.admit({ tenantKey: 'http://registry.example:5000/v2/team-c/app/blobs/sha256:00', priority: 'on-demand' }).admitted).toBe(true)
    await clock.advance(1000)
    const a4 = p.admit({ tenantKey: key, priority: 'on-demand' })
    expect(a4.admitted).toBe(true)
    // Three in progress: the next is refused for concurrency even with tokens left.
    await clock.advance(1000)
    const a5 = p.admit({ tenantKey: key, priority: 'on-demand' })
    expect(a5.admitted).toBe(false)
    if (a1.admitted) a1.release()
    expect(p.admit({ tenantKey: key, priority: 'on-demand' }).admitted).toBe(true)
  })

  it("limits a tenant's download bytes to its rate while another tenant runs free", async () => {
    const clock = new FakeClock()
    const p = new QosPolicy(settings, clock)
    const stop = new AbortController()
    const got = { a: 0, c: 0 }
    const run = (key: string, which: 'a' | 'c'): void => {
      const traffic: Traffic = { priority: 'on-demand', tenantKey: key, direction: 'download' }
      p.acquire(MiB, traffic, stop.signal).then(() => { got[which] += MiB; if (!stop.signal.aborted && got[which] < 1024 * MiB) run(key, which) }, () => {})
    }
    run('http://registry.example:5000/v2/team-a/app/blobs/sha256:00', 'a')
    run('http://registry.example:5000/v2/team-c/app/blobs/sha256:00', 'c')
    await clock.advance(5_000, 10)
    stop.abort()
    // 5 s at 8 MiB/s, plus the 2 MiB burst, within a piece.
    expect(Math.abs(got.a - 42 * MiB)).toBeLessThanOrEqual(MiB)
    expect(got.c).toBe(1024 * MiB)
  })
})

describe('settings', () => {
  it('has the documented defaults', () => {
    expect(parseQosSettings({})).toEqual(QOS_DEFAULTS)
  })

  it('takes sizes with units, per second', () => {
    const s = parseQosSettings({ 'download-rate': '40MiB/s', 'upload-rate': '10MiB', weights: { 'on-demand': 5, preheat: 3, prefetch: 1 } })
    expect(s.downloadRate).toBe(40 * MiB)
    expect(s.uploadRate).toBe(10 * MiB)
    expect(s.weights).toEqual({ 'on-demand': 5, preheat: 3, prefetch: 1 })
  })

  it('names the key of a bad value', () => {
    expect(() => parseQosSettings({ 'download-rate': 'fast' })).toThrow(/plugin-config\.qos\.download-rate/)
    expect(() => parseQosSettings({ weights: { urgent: 1 } })).toThrow(/plugin-config\.qos\.weights\.urgent/)
    expect(() => parseQosSettings({ tenants: [{ rate: 1 }] })).toThrow(/plugin-config\.qos\.tenants\[0\]\.match/)
    expect(() => parseQosSettings({ slot: 3 })).toThrow(/unknown setting/)
  })
})

describe('hooks', () => {
  it('are a no-op until an implementation is installed, and again after it is removed', async () => {
    const hooks = new QosHooks()
    expect(hooks.active).toBe(false)
    expect(hooks.admit({ tenantKey: 'x', priority: 'on-demand' }).admitted).toBe(true)
    const p = new QosPolicy(parseQosSettings({ tenants: [{ match: 'x', rate: 1, burst: 1 }] }), new FakeClock())
    const uninstall = hooks.install(p)
    expect(hooks.active).toBe(true)
    expect(hooks.admit({ tenantKey: 'x', priority: 'on-demand' }).admitted).toBe(true)
    expect(hooks.admit({ tenantKey: 'x', priority: 'on-demand' }).admitted).toBe(false)
    uninstall()
    expect(hooks.active).toBe(false)
    expect(hooks.admit({ tenantKey: 'x', priority: 'on-demand' }).admitted).toBe(true)
  })
})
