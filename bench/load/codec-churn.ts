// Bytes of ArrayBuffers (memory outside V8's heap, what Node reports as `arrayBuffers`) the
// session codec allocates per scheduler call, this tree's against another checkout's, in
// one process: encoding and framing a getParents answer of scheduler-scale's size (8
// parents, a grant), and reading and decoding a daemon's report batch. At 10,000 peers the
// supernode's major GCs were all started by V8's external memory limit, which counts every
// such buffer until a scavenge frees it (bench/README.md, "What holds the heap"). The
// process runs with a young generation large enough that no GC frees anything mid-count.
//
//   node bench/load/codec-churn.ts /tmp/prev-heap     # a checkout of main with node_modules

import { spawnSync } from 'node:child_process'
import { PerformanceObserver } from 'node:perf_hooks'
import { fileURLToPath } from 'node:url'

import type * as Proto from '@naiad/proto'

type ProtoModule = typeof Proto
const CALLS = 4000
const here = fileURLToPath(new URL('../..', import.meta.url))

const parent = (i: number): Proto.Parent => ({
  id: `12D3KooW${String(i).padStart(44, 'x')}`, multiaddrs: [`/ip4/127.1.0.${i}/tcp/${40000 + i}/p2p/12D3KooW${String(i).padStart(44, 'x')}`],
  bitmap: new Uint8Array(16).fill(0x5a), score: 0.5 + i / 100, isSeed: false, dataPort: 0, dataTransport: ''
})
const answer: Partial<Proto.SchedulerResponse> = { parents: { task: undefined, parents: Array.from({ length: 8 }, (_, i) => parent(i)), grant: new Uint8Array(180).fill(7) }, paceMs: 1200, features: 1 }
const batch: Partial<Proto.SchedulerRequest> = {
  reportBatch: {
    reports: [{
      taskId: 'a'.repeat(64), contentLength: 0, pieceSize: 0, pieceCount: 0, sha256: new Uint8Array(0), state: '', error: undefined,
      results: Array.from({ length: 3 }, (_, num) => ({ num, parentId: `12D3KooW${'y'.repeat(44)}`, length: 1 << 20, costMs: 20, sha256: new Uint8Array(0), errorCode: '' }))
    }]
  }
}

/** How a session frames an answer and reads a frame: this tree's functions, or what main did inline. */
function framing(proto: ProtoModule): { answer(id: number, value: Partial<Proto.SchedulerResponse>): Uint8Array; read(buf: Uint8Array): { id: number; body: Uint8Array } } {
  const p = proto as ProtoModule & Partial<{ sessionFrame: typeof Proto.sessionFrame; readSessionFrame: typeof Proto.readSessionFrame }>
  const schema = proto.SchedulerResponse as Partial<Pick<typeof Proto.SchedulerResponse, 'encodeTo'>> & typeof Proto.SchedulerResponse
  const sessionFrame = p.sessionFrame
  return {
    answer: sessionFrame !== undefined && schema.encodeTo !== undefined
      ? (id, value) => schema.encodeTo(value, (body) => sessionFrame(id, body))
      : (id, value) => proto.lengthPrefixed(proto.SessionFrame.encode({ id, body: proto.SchedulerResponse.encode(value) })),
    read: p.readSessionFrame ?? ((buf) => proto.SessionFrame.decode(buf))
  }
}

/** ArrayBuffer bytes per call of `fn`, or NaN if a GC ran meanwhile (it would have freed some). */
async function perCall(fn: () => unknown): Promise<{ bytes: number; gcs: number }> {
  // What earlier calls left is freed now (the sweep of ArrayBuffers finishes after the GC), not during the count.
  ;(globalThis as { gc?: () => void }).gc?.()
  await new Promise((resolve) => setTimeout(resolve, 200))
  let gcs = 0
  const obs = new PerformanceObserver((list) => { gcs += list.getEntries().length })
  obs.observe({ entryTypes: ['gc'] })
  const keep: unknown[] = new Array(CALLS)
  const before = process.memoryUsage().arrayBuffers
  for (let i = 0; i < CALLS; i++) keep[i] = fn()
  const after = process.memoryUsage().arrayBuffers
  // GC entries arrive after the count: a turn of the loop to collect them.
  await new Promise((resolve) => setImmediate(resolve))
  obs.disconnect()
  return { bytes: (after - before) / CALLS, gcs }
}

async function measure(dir: string): Promise<Record<string, { bytes: number; gcs: number }>> {
  const proto = await import(`${dir}/proto/src/index.ts`) as ProtoModule
  const { answer: frame, read } = framing(proto)
  // A frame as the session's FrameDecoder hands it on, its length prefix taken off.
  const wireBatch = proto.SessionFrame.encode({ id: 7, body: proto.SchedulerRequest.encode(batch) })
  // Warm-up: the first calls allocate what is kept (scratch space, pools).
  for (let i = 0; i < 200; i++) { frame(1, answer); proto.SchedulerRequest.decode(read(wireBatch).body) }
  return {
    'encode and frame a getParents answer': await perCall(() => frame(1, answer)),
    'read and decode a report batch': await perCall(() => proto.SchedulerRequest.decode(read(wireBatch).body))
  }
}

if (process.argv[2] === '--measure') {
  process.stdout.write(JSON.stringify(await measure(process.argv[3])))
} else {
  const alt = process.argv[2]
  if (alt === undefined) {
    process.stderr.write('usage: codec-churn.ts ALT_CHECKOUT_DIR\n')
    process.exit(2)
  }
  const run = (dir: string): Record<string, { bytes: number; gcs: number }> => {
    // A young generation far larger than what the counts allocate: nothing is freed mid-count.
    const r = spawnSync(process.execPath, ['--expose-gc', '--max-semi-space-size=256', '--min-semi-space-size=256', fileURLToPath(import.meta.url), '--measure', dir], { encoding: 'utf8' })
    if (r.status !== 0) throw new Error(`measuring ${dir}: ${r.stderr}`)
    return JSON.parse(r.stdout) as Record<string, { bytes: number; gcs: number }>
  }
  const a = run(alt)
  const t = run(here)
  for (const k of Object.keys(t)) {
    const gc = a[k].gcs + t[k].gcs > 0 ? ` (GCs during the count: ${a[k].gcs} / ${t[k].gcs}, figures low)` : ''
    console.log(`${k}: alt ${a[k].bytes.toFixed(0)} B, this ${t[k].bytes.toFixed(0)} B of ArrayBuffers per call${gc}`)
  }
}
