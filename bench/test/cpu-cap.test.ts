// The arithmetic and parsing behind scheduler-scale's --supernode-cpu: the cap's CFS quota and
// period, the option's checks, reading this process's group and a group's throttling counters,
// and the clear failure on a machine without the v1 cpu controller. Making real groups needs
// root and cgroup v1, which CI machines need not have: the benchmark itself exercises that.

import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { describe, expect, it } from 'vitest'

import { cfsBandwidth, createCpuCaps, ownGroup, parentShares, parseCpuFraction, parseCpuStat, RESERVE_SHARES, throttleDelta, underCap } from '../lib/cpu-cap.ts'

describe('cfsBandwidth', () => {
  it('gives the fraction of a 10 ms period', () => {
    expect(cfsBandwidth(0.3)).toEqual({ periodUs: 10_000, quotaUs: 3_000 })
    expect(cfsBandwidth(1.5)).toEqual({ periodUs: 10_000, quotaUs: 15_000 })
  })

  it('stretches the period when the quota would be under the kernel minimum of 1 ms', () => {
    expect(cfsBandwidth(0.05)).toEqual({ periodUs: 20_000, quotaUs: 1_000 })
    expect(cfsBandwidth(0.03)).toEqual({ periodUs: 33_334, quotaUs: 1_000 })
    // The period stops at the kernel's 1 s; the quota then stays at 1 ms.
    expect(cfsBandwidth(0.0001)).toEqual({ periodUs: 1_000_000, quotaUs: 1_000 })
  })

  it('refuses a cap that is not positive', () => {
    expect(() => cfsBandwidth(0)).toThrow(/positive/)
    expect(() => cfsBandwidth(Number.NaN)).toThrow(/positive/)
  })
})

describe('parentShares', () => {
  it('weighs the parent as all its capped children together, within the kernel limit', () => {
    expect(parentShares(1)).toBe(RESERVE_SHARES)
    expect(parentShares(3)).toBe(3 * RESERVE_SHARES)
    expect(parentShares(0)).toBe(RESERVE_SHARES)
    expect(parentShares(100)).toBe(262_144)
  })
})

describe('parseCpuFraction', () => {
  it('takes a positive number of cores up to the machine', () => {
    expect(parseCpuFraction('0.3', '--supernode-cpu', 2)).toBe(0.3)
    expect(parseCpuFraction('2', '--supernode-cpu', 2)).toBe(2)
  })

  it('refuses what is not a positive number, or more than the machine has', () => {
    for (const v of ['', '0', '-0.5', 'half', 'NaN', 'Infinity']) expect(() => parseCpuFraction(v, '--supernode-cpu', 2)).toThrow(/--supernode-cpu must be a positive number/)
    expect(() => parseCpuFraction('3', '--supernode-cpu', 2)).toThrow(/more than the machine's 2 cores/)
  })
})

describe('underCap', () => {
  it('allows the fraction of the wall time plus a few ticks of /proc accounting', () => {
    expect(underCap(6.0, 20, 0.3)).toBe(true)
    expect(underCap(6.04, 20, 0.3)).toBe(true)
    expect(underCap(6.2, 20, 0.3)).toBe(false)
  })
})

describe('ownGroup', () => {
  it('finds the cpu controller, alone or mounted with others', () => {
    expect(ownGroup('9:name=systemd:/\n4:memory:/x\n1:cpu:/\n0::/\n')).toBe('/')
    expect(ownGroup('5:cpu,cpuacct:/docker/abc\n3:cpuset:/\n')).toBe('/docker/abc')
    // cpuset and cpuacct are other controllers.
    expect(ownGroup('3:cpuset:/a\n2:cpuacct:/b\n0::/c\n')).toBeUndefined()
  })
})

describe('cpu.stat', () => {
  const a = 'nr_periods 100\nnr_throttled 40\nthrottled_time 2500000000\nnr_bursts 0\nburst_time 0\n'
  const b = 'nr_periods 350\nnr_throttled 140\nthrottled_time 9000000000\nnr_bursts 0\nburst_time 0\n'

  it('reads the periods, throttled periods and time held back', () => {
    expect(parseCpuStat(a)).toEqual({ periods: 100, throttled: 40, throttledS: 2.5 })
  })

  it('gives the counters over a window', () => {
    expect(throttleDelta(parseCpuStat(a), parseCpuStat(b))).toEqual({ periods: 250, throttled: 100, throttledS: 6.5 })
  })
})

describe('createCpuCaps', () => {
  it('fails with a message naming what is missing where there is no v1 cpu controller', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'cpu-cap-'))
    try {
      await expect(createCpuCaps(0.3, 'test', dir)).rejects.toThrow(/cgroup v1 cpu controller with CFS bandwidth control .*cpu\.cfs_quota_us/)
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })
})
