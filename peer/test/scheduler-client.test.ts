// The scheduler client tells a slow supernode from a dead one: single late answers leave
// it available (a busy supernode is not an outage), repeated ones or a refused dial mark
// it down, and the keep-alive probe brings it back. The same holds over a session
// (/naiad/scheduler/1.1.0, one stream for all calls) and against a supernode that only
// speaks 1.0.0 (a stream per call).

import { mkdtemp, rm } from 'node:fs/promises'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import pino from 'pino'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { NaiadError } from '@naiad/proto'
import { createFabricNode, PROTOCOLS, SchedulerRequest, SchedulerResponse, serve, serveSession, type FabricNode } from '@naiad/proto'
import { REFUSED_URL } from '@naiad/testkit'

import { FabricSchedulerClient } from '../src/scheduler/client.ts'

/**
 * The client's timeout where a test waits for calls to time out. Calls the fake supernode
 * answers must come back within it on a machine at load 40 (500 ms did not, nor 1.5 s once at load 20 with five other test files); stalled ones
 * are held STALL_MS, far past it, so that a late timer cannot turn a stall into an answer.
 */
const SHORT_MS = 2000
const STALL_MS = 30_000

describe.each([
  { kind: 'session (1.1.0)', session: true },
  { kind: 'stream per call (1.0.0 only)', session: false }
])('scheduler client availability, $kind', ({ session }) => {
  let dir: string
  let supernode: FabricNode
  let daemon: FabricNode
  let info: Server
  let infoUrl: string
  /** Calls the fake supernode leaves unanswered before it answers again. */
  let stall = 0
  /** The pace its answers ask for (a saturated supernode's signal). */
  let pace = 0
  /** Streams the supernode's handlers have seen (by their signal), and the callers. */
  const streams = new Set<AbortSignal>()
  const callers = new Set<string>()

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'naiad-sched-client-'))
    daemon = await createFabricNode({ dataDir: join(dir, 'd'), listen: ['/ip4/127.0.0.1/tcp/0'] })
    await startSupernode()
    info = createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ peerId: supernode.peerId.toString(), multiaddrs: supernode.getMultiaddrs().map(String) }))
    })
    await new Promise<void>((resolve) => info.listen(0, '127.0.0.1', resolve))
    infoUrl = `http://127.0.0.1:${(info.address() as AddressInfo).port}`
    // The first call pays for the connection and a cold code path: not under a test's short timeout.
    const warm = client(10_000)
    await warm.getParents('warm-up', 4)
    await warm.close()
  })

  /** The fake supernode: same identity each time, a new port. */
  const startSupernode = async (): Promise<void> => {
    supernode = await createFabricNode({ dataDir: join(dir, 'sn'), listen: ['/ip4/127.0.0.1/tcp/0'] })
    const handler = async (req: SchedulerRequest, ctx: { signal: AbortSignal; remotePeer: { toString(): string } }): Promise<Partial<SchedulerResponse>> => {
      streams.add(ctx.signal)
      callers.add(ctx.remotePeer.toString())
      if (stall > 0) {
        stall--
        // Never answers within the client's timeout (a session's signal lasts as long as its stream).
        await new Promise((resolve) => {
          const t = setTimeout(resolve, STALL_MS)
          ctx.signal.addEventListener('abort', () => { clearTimeout(t); resolve(undefined) }, { once: true })
        })
      }
      return { paceMs: pace, parents: { task: undefined, parents: [{ id: req.getParents?.taskId ?? '', multiaddrs: [], bitmap: new Uint8Array(), score: 0, isSeed: false, dataPort: 0, dataTransport: '' }], grant: new Uint8Array(0) } }
    }
    await serve(supernode, PROTOCOLS.scheduler, SchedulerRequest, SchedulerResponse, handler)
    if (session) await serveSession(supernode, PROTOCOLS.schedulerSession, SchedulerRequest, SchedulerResponse, handler)
  }

  afterAll(async () => {
    info?.close()
    await daemon?.stop()
    await supernode?.stop()
    if (dir !== undefined) await rm(dir, { recursive: true, force: true })
  })

  /** A short timeout where the test waits for timeouts; a generous one elsewhere (the machine is shared). */
  const client = (timeoutMs = SHORT_MS): FabricSchedulerClient => new FabricSchedulerClient(daemon, { supernodeUrl: infoUrl, timeoutMs, logger: pino({ level: 'silent' }) })
  const code = async (p: Promise<unknown>): Promise<string> => p.then(() => 'ok', (err: unknown) => (err as NaiadError).code)

  it('stays available after a late answer and goes down after three in a row', async () => {
    const c = client()
    expect(await code(c.getParents('t', 4))).toBe('ok')
    stall = 1
    expect(await code(c.getParents('t', 4))).toBe('PROTO_ERR_TIMEOUT')
    expect(c.available).toBe(true)
    expect(await code(c.getParents('t', 4))).toBe('ok')
    stall = 3
    for (let i = 0; i < 2; i++) {
      expect(await code(c.getParents('t', 4))).toBe('PROTO_ERR_TIMEOUT')
      expect(c.available).toBe(true)
    }
    expect(await code(c.getParents('t', 4))).toBe('PROTO_ERR_TIMEOUT')
    expect(c.available).toBe(false)
    // Slow, not gone: downloads may wait for it.
    expect(c.unavailableSince).toBeGreaterThan(0)
    // Down: calls fail at once until the keep-alive probe gets an answer.
    expect(await code(c.getParents('t', 4))).toBe('PROTO_ERR_DIAL')
    await c.announceHost({ id: '', hostname: 'h', ip: '', idc: '', location: '', multiaddrs: [], uploadSlots: 1, isSeed: false, labels: [], dataPort: 0, dataTransport: '' })
    expect(c.available).toBe(true)
    expect(c.unavailableSince).toBe(0)
    await c.close()
  })

  it('does not count a timeout towards "down" when other calls were answered meanwhile', async () => {
    const c = client()
    expect(await code(c.getParents('t', 4))).toBe('ok')
    stall = 1
    const late = code(c.getParents('slow', 4))
    await new Promise((resolve) => setTimeout(resolve, 50))
    expect(await code(c.getParents('t', 4))).toBe('ok')
    expect(await late).toBe('PROTO_ERR_TIMEOUT')
    // Two more in a row, with nothing answered: still two, not three.
    stall = 2
    for (let i = 0; i < 2; i++) expect(await code(c.getParents('t', 4))).toBe('PROTO_ERR_TIMEOUT')
    expect(c.available).toBe(true)
    expect(await code(c.getParents('t', 4))).toBe('ok')
    await c.close()
  })

  it('counts calls that time out together as one silence, and a keep-alive that times out like any call', async () => {
    // On a loaded machine the supernode (or this process) stalls once and every call in
    // flight times out at the same moment: that is one late answer, not three.
    const c = client()
    expect(await code(c.getParents('t', 4))).toBe('ok')
    stall = 3
    expect(await Promise.all([0, 1, 2].map((i) => code(c.getParents(`t-${i}`, 4))))).toEqual(['PROTO_ERR_TIMEOUT', 'PROTO_ERR_TIMEOUT', 'PROTO_ERR_TIMEOUT'])
    expect(c.available).toBe(true)
    stall = 1
    await expect(c.announceHost({ id: '', hostname: 'h', ip: '', idc: '', location: '', multiaddrs: [], uploadSlots: 1, isSeed: false, labels: [], dataPort: 0, dataTransport: '' })).rejects.toMatchObject({ code: 'PROTO_ERR_TIMEOUT' })
    expect(c.available).toBe(true)
    expect(await code(c.getParents('t', 4))).toBe('ok')
    await c.close()
  })

  it('gives a supernode that said it is saturated more patience before taking it for dead', async () => {
    const c = client()
    pace = 200
    expect(await code(c.getParents('t', 4))).toBe('ok')
    expect(c.paceMs).toBe(200)
    stall = 5
    for (let i = 0; i < 5; i++) {
      // Each poll of a task waits out the pace first (the client holds back earlier ones).
      await new Promise((resolve) => setTimeout(resolve, 220))
      expect(await code(c.getParents(`t-${i}`, 4))).toBe('PROTO_ERR_TIMEOUT')
      expect(c.available).toBe(true)
    }
    pace = 0
    expect(await code(c.getParents('t', 4))).toBe('ok')
    expect(c.paceMs).toBe(0)
    await c.close()
  })

  it('answers concurrent calls each with its own answer, over one stream when the supernode has sessions', async () => {
    const c = client(10_000)
    streams.clear()
    const n = 64
    const answers = await Promise.all(Array.from({ length: n }, (_, i) => c.getParents(`task-${i}`, 4)))
    expect(answers.map((a) => a.parents[0]?.id)).toEqual(Array.from({ length: n }, (_, i) => `task-${i}`))
    expect(streams.size).toBe(session ? 1 : n)
    expect(callers).toEqual(new Set([daemon.peerId.toString()]))
    // An aborted call fails alone, as PROTO_ERR_ABORTED, and does not count towards "down".
    const ac = new AbortController()
    const aborted = code(c.getParents('x', 4, ac.signal))
    ac.abort()
    expect(await aborted).toBe('PROTO_ERR_ABORTED')
    expect(c.available).toBe(true)
    expect(await code(c.getParents('t', 4))).toBe('ok')
    await c.close()
  })

  it('goes down when the supernode stops, and the probe reaches it again after a restart', async () => {
    const c = client(10_000)
    expect(await code(c.getParents('t', 4))).toBe('ok')
    const slow = code(c.getParents('t', 4)) // in flight while the supernode stops (answered or lost)
    await supernode.stop()
    expect(['ok', 'PROTO_ERR_DIAL']).toContain(await slow)
    expect(await code(c.getParents('t', 4))).toBe('PROTO_ERR_DIAL')
    expect(c.available).toBe(false)
    expect(await code(c.getParents('t', 4))).toBe('PROTO_ERR_DIAL') // down: no dial until the probe

    await startSupernode()
    streams.clear()
    await c.announceHost({ id: '', hostname: 'h', ip: '', idc: '', location: '', multiaddrs: [], uploadSlots: 1, isSeed: false, labels: [], dataPort: 0, dataTransport: '' })
    expect(c.available).toBe(true)
    const answers = await Promise.all(Array.from({ length: 16 }, (_, i) => c.getParents(`after-${i}`, 4)))
    expect(answers.map((a) => a.parents[0]?.id)).toEqual(Array.from({ length: 16 }, (_, i) => `after-${i}`))
    expect(streams.size).toBe(session ? 1 : 17)
    await c.close()
  })

  it('goes down at once when the supernode cannot be reached', async () => {
    const c = new FabricSchedulerClient(daemon, { supernodeUrl: REFUSED_URL, timeoutMs: SHORT_MS, logger: pino({ level: 'silent' }) })
    expect(await code(c.getParents('t', 4))).toBe('PROTO_ERR_DIAL')
    expect(c.available).toBe(false)
    // Nothing listens there: gone, not slow, and no download waits for it.
    expect(c.unavailableSince).toBe(0)
  })
})
