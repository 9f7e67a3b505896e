// CPU time of one getParents on a 200-peer task (10,000 peers over 50 tasks, as in
// scheduler-scale) of 128 pieces, this tree's Scheduler against another build's, side by
// side in one process, alternating rounds: the scheduler's own share of a call, without the
// transport.
//
//   node bench/load/get-parents-cost.ts /tmp/p99-main     # a checkout of main with node_modules

import { fileURLToPath } from 'node:url'

import type { Host } from '@naiad/proto'

const alt = process.argv[2]
if (alt === undefined) {
  process.stderr.write('usage: get-parents-cost.ts ALT_CHECKOUT_DIR\n')
  process.exit(2)
}
const none = { markTask() {}, markPieces() {}, markPeer() {}, deletePeer() {}, markHost() {} }
const host = (i: number): Host => ({ id: '', hostname: `sim-${i}`, ip: '127.0.0.1', idc: `idc-${i % 4}`, location: `zone|rack-${i % 16}`, multiaddrs: [`/ip4/127.0.0.1/tcp/${20000 + i}`], uploadSlots: 4, isSeed: false, labels: [], dataPort: 0, dataTransport: '' })
const TASK = 'a'.repeat(64)
const P = 128, PS = 4 << 20
interface Cost { getParents(hostId: string, taskId: string, limit: number, known: undefined): unknown }
async function build(dir: string): Promise<Cost> {
  const { Scheduler } = await import(`${dir}/supernode/src/scheduler/scheduler.ts`) as { Scheduler: new (o: { hostTtlMs: number }, p: typeof none) => Cost & Record<string, (...a: unknown[]) => unknown> }
  const s = new Scheduler({ hostTtlMs: 3_600_000 }, none)
  // The same swarm in both builds: a fixed pseudo-random sequence.
  let seed = 1
  const rnd = (): number => { seed = (seed * 16807) % 2147483647; return seed / 2147483647 }
  for (let i = 0; i < 200; i++) {
    const id = `peer-${i}`
    s.announceHost(id, host(i))
    s.registerTask(id, { taskId: TASK, url: 'http://o/t', headers: [], digest: '', range: '', filter: [] })
    if (i === 0) s.reportPieces(id, { taskId: TASK, results: Array.from({ length: P }, (_, n) => ({ num: n, parentId: '', length: PS, costMs: 0, sha256: new Uint8Array(32).fill(n), errorCode: '' })), contentLength: P * PS, pieceSize: PS, pieceCount: P, sha256: new Uint8Array(32), state: 'succeeded', error: undefined })
    else s.reportPieces(id, { taskId: TASK, results: Array.from({ length: P }, (_, n) => n).filter(() => rnd() < 0.5).map((n) => ({ num: n, parentId: `peer-${Math.floor(rnd() * i)}`, length: PS, costMs: 20, sha256: new Uint8Array(0), errorCode: '' })), contentLength: 0, pieceSize: 0, pieceCount: 0, sha256: new Uint8Array(0), state: '', error: undefined })
  }
  return s
}
const built = { main: await build(alt), this: await build(fileURLToPath(new URL('../..', import.meta.url))) }
const N = 4000
const res: Record<string, number[]> = { main: [], this: [] }
for (let round = 0; round < 6; round++) {
  for (const k of (round % 2 === 0 ? ['main', 'this'] : ['this', 'main']) as Array<'main' | 'this'>) {
    const s = built[k]
    const c0 = process.cpuUsage()
    for (let j = 0; j < N; j++) s.getParents(`peer-${1 + (j % 199)}`, TASK, 8, undefined)
    const c = process.cpuUsage(c0)
    if (round > 0) res[k].push((c.user + c.system) / N)
  }
}
const med = (xs: number[]): number => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)]
console.log(`getParents CPU µs per call, 200-peer task, 128 pieces (median of 5 alternating rounds of ${N}): alt ${med(res.main).toFixed(1)}, this ${med(res.this).toFixed(1)}, this / alt ${(med(res.this) / med(res.main)).toFixed(2)}`)
