// CPU time the serving side of a scheduler session spends per call, transport included
// (session framing, yamux, Noise, socket writes), this tree's fabric against another
// build's, side by side in one process, alternating rounds. The handler answers at once
// from a fixed answer of scheduler-scale's sizes (a report_batch's results, a getParents
// of 8 parents with a grant), so what is measured is the fabric, not the scheduler
// (get-parents-cost.ts measures that). The callers are this tree's in a child process: 48
// sessions, each a daemon's beat of two report batches and a getParents, one call in flight.
//
//   node bench/load/session-cost.ts /tmp/tail-main     # a checkout of main with node_modules

import { fork } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

import { multiaddr } from '@multiformats/multiaddr'
import type * as Proto from '@naiad/proto'

const PROTOCOL = '/naiad/session-cost/1.1.0'
const SESSIONS = 48
const BEATS = 40 // per session and round: 3 calls each
const ROUNDS = 7 // the first of each build is a warm-up

type ProtoModule = typeof Proto
const here = fileURLToPath(new URL('../..', import.meta.url))
const protoOf = (dir: string): Promise<ProtoModule> => import(`${dir}/proto/src/index.ts`) as Promise<ProtoModule>

const parentAnswer = (i: number): Proto.Parent => ({
  id: `12D3KooW${String(i).padStart(44, 'x')}`, multiaddrs: [`/ip4/127.1.0.${i}/tcp/${40000 + i}/p2p/12D3KooW${String(i).padStart(44, 'x')}`],
  bitmap: new Uint8Array(16).fill(0x5a), score: 0.5 + i / 100, isSeed: false, dataPort: 0, dataTransport: ''
})
const GRANT = new Uint8Array(180).fill(7)

async function clients(): Promise<void> {
  const proto = await protoOf(here)
  const dir = await mkdtemp(join(tmpdir(), 'naiad-session-cost-c-'))
  const nodes = await Promise.all(Array.from({ length: SESSIONS }, (_, i) => proto.createFabricNode({ dataDir: join(dir, `c${i}`), listen: [] })))
  const report: Partial<Proto.SchedulerRequest> = {
    reportBatch: { reports: [{ taskId: 'a'.repeat(64), results: [0, 1, 2].map((num) => ({ num, parentId: `12D3KooW${'y'.repeat(44)}`, length: 1 << 20, costMs: 20, sha256: new Uint8Array(0), errorCode: '' })), contentLength: 0, pieceSize: 0, pieceCount: 0, sha256: new Uint8Array(0), state: '', error: undefined }] }
  }
  const poll: Partial<Proto.SchedulerRequest> = { getParents: { taskId: 'a'.repeat(64), limit: 8, digestEpoch: 1, digests: 128 } }
  const sessions = new Map<string, Array<Proto.RpcSession<typeof proto.SchedulerRequest.fields, typeof proto.SchedulerResponse.fields>>>()
  process.on('message', (msg: { target: string } | 'exit') => {
    if (msg === 'exit') {
      void Promise.all(nodes.map((n) => n.stop())).then(() => rm(dir, { recursive: true, force: true })).then(() => process.exit(0))
      return
    }
    void (async () => {
      let list = sessions.get(msg.target)
      if (list === undefined) {
        const target = multiaddr(msg.target)
        list = nodes.map((n) => new proto.RpcSession(n, () => target, PROTOCOL, proto.SchedulerRequest, proto.SchedulerResponse))
        sessions.set(msg.target, list)
      }
      await Promise.all(list.map(async (s) => {
        for (let b = 0; b < BEATS; b++) {
          await s.call(report, { timeoutMs: 30_000 })
          await s.call(report, { timeoutMs: 30_000 })
          await s.call(poll, { timeoutMs: 30_000 })
        }
      }))
      process.send!('done')
    })().catch((err: unknown) => { process.stderr.write(`${String(err)}\n`); process.exit(1) })
  })
  process.send!('ready')
}

async function main(alt: string): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'naiad-session-cost-'))
  const builds = { alt: await protoOf(alt), this: await protoOf(here) }
  const servers: Record<string, { node: Proto.FabricNode; addr: string }> = {}
  for (const [k, proto] of Object.entries(builds)) {
    const node = await proto.createFabricNode({ dataDir: join(dir, k), listen: ['/ip4/127.0.0.1/tcp/0'] })
    const parents = { task: undefined, parents: Array.from({ length: 8 }, (_, i) => parentAnswer(i)), grant: GRANT }
    await proto.serveSession(node, PROTOCOL, proto.SchedulerRequest, proto.SchedulerResponse, (req) => req.reportBatch !== undefined
      ? { results: req.reportBatch.reports.map(() => ({ code: '', message: '' })), paceMs: 1200, features: 1 }
      : { parents, paceMs: 1200, features: 1 })
    servers[k] = { node, addr: node.getMultiaddrs()[0].toString() }
  }
  const child = fork(fileURLToPath(import.meta.url), ['--clients'], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  let exited: ((err: Error) => void) | undefined
  child.once('exit', (code) => exited?.(new Error(`the callers exited (${code})`)))
  const next = (): Promise<unknown> => new Promise((resolve, reject) => {
    exited = reject
    child.once('message', resolve)
  })
  await next()
  const calls = SESSIONS * BEATS * 3
  const res: Record<string, number[]> = { alt: [], this: [] }
  for (let round = 0; round < ROUNDS; round++) {
    for (const k of (round % 2 === 0 ? ['alt', 'this'] : ['this', 'alt'])) {
      const c0 = process.cpuUsage()
      child.send({ target: servers[k].addr })
      await next()
      const c = process.cpuUsage(c0)
      if (round > 0) res[k].push((c.user + c.system) / calls)
    }
  }
  child.send('exit')
  for (const s of Object.values(servers)) await s.node.stop()
  await rm(dir, { recursive: true, force: true })
  const med = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]
  console.log(`serving side's CPU µs per session call (median of ${ROUNDS - 1} alternating rounds of ${calls} calls over ${SESSIONS} sessions): alt ${med(res.alt).toFixed(1)} [${res.alt.map((x) => x.toFixed(1)).join(' ')}], this ${med(res.this).toFixed(1)} [${res.this.map((x) => x.toFixed(1)).join(' ')}], this / alt ${(med(res.this) / med(res.alt)).toFixed(2)}`)
}

if (process.argv.includes('--clients')) await clients()
else {
  const alt = process.argv[2]
  if (alt === undefined) {
    process.stderr.write('usage: session-cost.ts ALT_CHECKOUT_DIR\n')
    process.exit(2)
  }
  await main(alt)
}
