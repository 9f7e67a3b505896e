// The MembershipStore contract, run by every implementation (see cluster/membership.ts).
// Liveness is judged by the store's clock, which a test cannot move on PostgreSQL: the
// cases use margins one way only (a heartbeat is at least N ms old after waiting N ms).

import { setTimeout as sleep } from 'node:timers/promises'

import { expect, it } from 'vitest'

import type { MembershipStore } from '../src/cluster/membership.ts'

const A = { id: '12D3KooWAaAaAaAaAaAaAaAaAaAaAaAaAaAaAaAaAaAaAaAaAaAa', apiUrl: 'http://10.0.0.1:8002', multiaddrs: ['/ip4/10.0.0.1/tcp/8003/p2p/12D3KooWAaAaAaAaAaAaAaAaAaAaAaAaAaAaAaAaAaAaAaAaAaAa'] }
const B = { id: '12D3KooWBbBbBbBbBbBbBbBbBbBbBbBbBbBbBbBbBbBbBbBbBbBb', apiUrl: 'http://10.0.0.2:8002', multiaddrs: [] }

/** `make` gives two handles on one fresh store, as two supernodes see it. */
export function membershipSuite(make: () => Promise<[MembershipStore, MembershipStore]>): void {
  it('membership: heartbeats make members live for ttl, ordered by id; addresses are refreshed; leave removes at once', async () => {
    const [one, two] = await make()
    await two.heartbeat(B)
    await one.heartbeat({ ...A, apiUrl: 'http://old:8002' })
    await one.heartbeat(A)
    const live = await two.live(60_000)
    expect(live.map((m) => m.id)).toEqual([A.id, B.id])
    expect(live[0]).toMatchObject({ apiUrl: A.apiUrl, multiaddrs: A.multiaddrs })
    // seenAt is the store's clock: on PostgreSQL the database's, close to ours on this machine.
    expect(Math.abs(live[0].seenAt - Date.now())).toBeLessThan(60_000)
    await one.leave(A.id)
    expect((await two.live(60_000)).map((m) => m.id)).toEqual([B.id])
  })

  it('membership: a member whose last heartbeat is older than ttl is not live', async () => {
    const [one, two] = await make()
    await one.heartbeat(A)
    await sleep(1500)
    await two.heartbeat(B)
    expect((await one.live(1000)).map((m) => m.id)).toEqual([B.id])
    expect((await one.live(60_000)).map((m) => m.id)).toEqual([A.id, B.id])
  })
}
