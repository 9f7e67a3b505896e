// The rule condition language: what it accepts, what it computes, and that it refuses
// anything that is not a condition over known facts (it is never handed to eval).

import { describe, expect, it } from 'vitest'

import { ConditionError, parseCondition } from '../src/plugins/health/expression.ts'
import { FACT_TYPES, readHealthSettings } from '../src/plugins/health/settings.ts'

const facts = {
  pieceFailureRate: 0.5, samples: 12, uploadErrorRate: 0, uploadSamples: 0, diskFreeBytes: 512 * 2 ** 20,
  diskFreeRatio: 0.01, clockSkewMs: 90_000, clockOffsetMs: -90_000, fuseAvailable: false, fuseDevice: true, fusermount: false
}
const holds = (src: string, f: Record<string, number | boolean | undefined> = facts): boolean => parseCondition(src, FACT_TYPES).test(f)

describe('health rule conditions', () => {
  it('compares, combines and negates', () => {
    expect(holds('pieceFailureRate > 0.3 and samples >= 10')).toBe(true)
    expect(holds('pieceFailureRate > 0.3 and samples >= 20')).toBe(false)
    expect(holds('pieceFailureRate > 0.9 or samples == 12')).toBe(true)
    expect(holds('not fuseAvailable')).toBe(true)
    expect(holds('!fuseAvailable && fuseDevice')).toBe(true)
    expect(holds('fusermount == false')).toBe(true)
    expect(holds('not (samples < 10 or pieceFailureRate <= 0.3)')).toBe(true)
    expect(holds('clockOffsetMs < -1m')).toBe(true)
    expect(holds('clockSkewMs > 2m')).toBe(false)
    expect(holds('diskFreeBytes < 1GiB and diskFreeRatio < 0.02')).toBe(true)
    expect(holds('uploadErrorRate != 0')).toBe(false)
  })

  it('binds "and" tighter than "or"', () => {
    expect(holds('samples > 100 and samples > 0 or samples == 12')).toBe(true)
    expect(holds('samples == 12 or samples > 0 and samples > 100')).toBe(true)
    expect(holds('(samples == 12 or samples > 0) and samples > 100')).toBe(false)
  })

  it('is false when a fact it reads was not reported', () => {
    expect(holds('not fuseAvailable', {})).toBe(false)
    expect(holds('samples >= 0', { samples: undefined })).toBe(false)
  })

  it('refuses code, unknown facts, type errors and junk with the column', () => {
    const bad = [
      'process.exit(1)', 'require("fs")', 'samples >= 10;', 'pieceFailureRate > 0.3 and', 'samples = 10',
      'nosuchfact > 1', 'fuseAvailable > 1', 'samples and fuseAvailable', 'samples', 'samples == true',
      '(samples > 1', 'samples > 1)', '10mb > samples', '`samples`', 'constructor > 1', '__proto__ == 1', ''
    ]
    for (const src of bad) expect(() => parseCondition(src, FACT_TYPES), src).toThrow(ConditionError)
    expect(() => parseCondition('samples >= 10 and nosuch', FACT_TYPES)).toThrow(/unknown fact "nosuch".*column 19/)
    expect(() => parseCondition('('.repeat(100) + 'true' + ')'.repeat(100), FACT_TYPES)).toThrow(/nested too deeply/)
  })

  it('names the rule key when the config holds a bad condition', () => {
    expect(() => readHealthSettings({ rules: [{ name: 'x', when: 'samples >', action: 'degrade' }] })).toThrow(/plugin-config\.health\.rules\[0\]\.when: the condition ends too early/)
    expect(() => readHealthSettings({ rules: [{ name: 'x', when: 'samples > 1', action: 'reboot' }] })).toThrow(/rules\[0\]\.action: expected one of heal, degrade, isolate/)
    expect(readHealthSettings({}).rules.map((r) => r.name)).toContain('failing-pieces')
  })
})
