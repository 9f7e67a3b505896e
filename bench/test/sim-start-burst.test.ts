// The rollout simulation's client model on a start of many daemons at once, against a
// supernode slow enough that their registrations queue past the 2 s client timeout: the
// client of this tree waits out the busy answers and the swarm serves everyone from one
// origin read; the client and scheduler before issue 15 (no busy registrations, the origin
// at the first failure) send about half the daemons to the origin. Small and fast: 200
// daemons, one 8 MiB layer.

import { describe, expect, it } from 'vitest'

import { MEASURED } from '../sim/costs.ts'
import { simulate, type RolloutOptions } from '../sim/world.ts'

const LAYER = 8 << 20

function burst(old: boolean, registerS: number): ReturnType<typeof simulate> {
  const o: RolloutOptions = {
    nodes: 200, layers: [LAYER], supernodes: 1,
    hostBandwidth: 125e6, registryBandwidth: 1.25e9, supernodeBandwidth: 1.25e9,
    hostCores: 1, supernodeCores: 1, sharedCores: 0, rampS: 0,
    old, seed: 1, costs: { ...MEASURED, registerS }, limitS: 600
  }
  return simulate(o)
}

describe('rollout simulation: 200 daemons starting at once', () => {
  it('registers every daemon through a queue twice the client timeout, and the origin serves the layer once', () => {
    // 200 registrations at 20 ms each: 4 s of the supernode's loop.
    const r = burst(false, 0.02)
    expect(r.finished).toBe(200)
    expect(r.daemonsToOrigin).toBe(0)
    expect(r.registryEgressBytes).toBe(LAYER)
    expect(r.clientTimeouts).toBe(0)
    expect(r.perSupernode[0].deferred).toBeGreaterThan(0)
  })

  it('sends daemons to the origin with the client and scheduler before issue 15', () => {
    const r = burst(true, 0.02)
    expect(r.finished).toBe(200)
    expect(r.daemonsToOrigin).toBeGreaterThan(50)
    expect(r.registryEgressBytes).toBeGreaterThan(50 * LAYER)
  })
})
