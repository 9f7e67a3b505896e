// Sessions carry many pipelined calls on one stream: answers find their calls by ID, a call
// that times out fails alone, and a session whose peer restarts is opened again.

import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import {
  createFabricNode, lengthPrefixed, NaiadError, readSessionFrame, RpcSession, SchedulerRequest, SchedulerResponse, serveSession, SessionFrame, sessionFrame,
  type FabricNode, type SchedulerRequest as Req, type SchedulerResponse as Res
} from '../src/index.ts'

const PROTOCOL = '/naiad/test-session/1.1.0'

const code = async (p: Promise<unknown>): Promise<string> => p.then(() => 'ok', (err: unknown) => (err as NaiadError).code)

describe('rpc session', () => {
  let dir: string
  /** The server's fabric port: 0 at first, then the one it bound, so that a restart comes back at its address. */
  let port = 0
  let client: FabricNode
  let server: FabricNode
  /** Streams the server has seen, and the most requests it held at once. */
  const streams = new Set<AbortSignal>()
  let handling = 0
  let maxHandling = 0
  const peers = new Set<string>()

  const startServer = async (): Promise<void> => {
    server = await createFabricNode({ dataDir: join(dir, 'server'), listen: [`/ip4/127.0.0.1/tcp/${port}`] })
    port = Number(/\/tcp\/(\d+)/.exec(server.getMultiaddrs()[0].toString())![1])
    await serveSession(server, PROTOCOL, SchedulerRequest, SchedulerResponse, async (req: Req, ctx): Promise<Partial<Res>> => {
      streams.add(ctx.signal)
      peers.add(ctx.remotePeer.toString())
      const taskId = req.getParents?.taskId ?? ''
      if (taskId === 'fail') throw new NaiadError('SN_ERR_TASK_NOT_FOUND', 'no such task')
      handling++
      maxHandling = Math.max(maxHandling, handling)
      try {
        // Stalled calls answer after 3 s (far past their callers' timeouts); the others after
        // a random few milliseconds, so that answers overtake each other.
        const ms = taskId === 'stall' ? 3000 : Math.random() * 20
        await new Promise((resolve) => setTimeout(resolve, ms))
      } finally {
        handling--
      }
      return { task: { id: taskId, url: `u-${req.getParents?.limit ?? 0}`, state: 'running', contentLength: -1, pieceSize: 4, pieceCount: -1, pieces: [], sha256: new Uint8Array(), backToSource: false, error: undefined, grant: new Uint8Array(), sourcePeer: '', digestEpoch: 0, piecesFrom: 0 } }
    })
  }

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'naiad-session-'))
    client = await createFabricNode({ dataDir: join(dir, 'client'), listen: ['/ip4/127.0.0.1/tcp/0'] })
    await startServer()
  })
  afterAll(async () => {
    await client?.stop()
    await server?.stop()
    if (dir !== undefined) await rm(dir, { recursive: true, force: true })
  })

  const session = (): RpcSession<typeof SchedulerRequest.fields, typeof SchedulerResponse.fields> =>
    new RpcSession(client, () => server.getMultiaddrs(), PROTOCOL, SchedulerRequest, SchedulerResponse)
  const ask = (s: ReturnType<typeof session>, taskId: string, limit = 0, timeoutMs = 10_000): Promise<Res> =>
    s.call({ getParents: { taskId, limit, digestEpoch: 0, digests: 0 } }, { timeoutMs })

  it('carries many concurrent calls on one stream, each answer to its own call', async () => {
    streams.clear()
    maxHandling = 0
    const s = session()
    const n = 300
    const answers = await Promise.all(Array.from({ length: n }, (_, i) => ask(s, `task-${i}`, i)))
    answers.forEach((res, i) => {
      expect(res.task?.id).toBe(`task-${i}`)
      expect(res.task?.url).toBe(`u-${i}`)
    })
    expect(streams.size).toBe(1)
    expect(maxHandling).toBeGreaterThan(1) // pipelined, not one at a time
    expect(peers).toEqual(new Set([client.peerId.toString()])) // the caller is the authenticated peer
    expect(s.inFlight).toBe(0)
    await s.close()
  })

  it('fails a call that times out or is aborted alone; the stream goes on', async () => {
    streams.clear()
    const s = session()
    expect(await code(ask(s, 'warm-up'))).toBe('ok')
    const stalled = code(ask(s, 'stall', 0, 300))
    const ac = new AbortController()
    const aborted = code(s.call({ getParents: { taskId: 'stall', limit: 0, digestEpoch: 0, digests: 0 } }, { signal: ac.signal, timeoutMs: 10_000 }))
    const others = Promise.all(Array.from({ length: 50 }, (_, i) => ask(s, `other-${i}`)))
    ac.abort()
    expect(await stalled).toBe('PROTO_ERR_TIMEOUT')
    expect(await aborted).toBe('PROTO_ERR_ABORTED')
    expect((await others).map((r) => r.task?.id)).toEqual(Array.from({ length: 50 }, (_, i) => `other-${i}`))
    // After the stalled calls' late answers arrive (and are dropped), the stream still works.
    await new Promise((resolve) => setTimeout(resolve, 3200))
    expect((await ask(s, 'after')).task?.id).toBe('after')
    expect(streams.size).toBe(1)
    expect(s.inFlight).toBe(0)
    await s.close()
  })

  it('returns handler errors in the error field', async () => {
    const s = session()
    const res = await ask(s, 'fail')
    expect(res.error?.code).toBe('SN_ERR_TASK_NOT_FOUND')
    expect((await ask(s, 'fine')).task?.id).toBe('fine')
    await s.close()
  })

  it('fails the calls in flight when the peer goes away and opens a new stream when it is back', async () => {
    streams.clear()
    const s = session()
    expect((await ask(s, 'before')).task?.id).toBe('before')
    const inFlight = code(ask(s, 'stall', 0, 20_000))
    await new Promise((resolve) => setTimeout(resolve, 100))
    await server.stop()
    expect(await inFlight).toBe('PROTO_ERR_DIAL')
    expect(s.open).toBe(false)
    expect(await code(ask(s, 'while-down', 0, 2000))).toBe('PROTO_ERR_DIAL')

    await startServer() // same identity, same port
    streams.clear()
    const answers = await Promise.all(Array.from({ length: 20 }, (_, i) => ask(s, `again-${i}`)))
    expect(answers.map((r) => r.task?.id)).toEqual(Array.from({ length: 20 }, (_, i) => `again-${i}`))
    expect(streams.size).toBe(1)
    await s.close()
  })
})

describe('session frames', () => {
  const bodies = [new Uint8Array(0), new Uint8Array([7]), new Uint8Array(200).fill(3), new Uint8Array(20_000).map((_, i) => i & 0xff)]
  const ids = [0, 1, 127, 128, 300, 2 ** 32 - 1]

  it('are built in one buffer, byte for byte what the codec and a length prefix make', () => {
    for (const id of ids) {
      for (const body of bodies) {
        const frame = sessionFrame(id, body)
        expect(Buffer.from(frame).equals(Buffer.from(lengthPrefixed(SessionFrame.encode({ id, body }))))).toBe(true)
        expect(frame.buffer.byteLength).toBe(frame.byteLength)
      }
    }
  })

  it('are read without a copy of the body, as the codec reads them, and odd ones go to the codec', () => {
    for (const id of ids) {
      for (const body of bodies) {
        const bytes = SessionFrame.encode({ id, body })
        const frame = readSessionFrame(bytes)
        expect(frame.id).toBe(id)
        expect(Buffer.from(frame.body).equals(Buffer.from(body))).toBe(true)
        if (body.length > 0) expect(frame.body.buffer).toBe(bytes.buffer)
      }
    }
    // Body before ID, an unknown field, a truncated body: what SessionFrame.decode makes of them.
    const reordered = new Uint8Array([0x12, 0x01, 0x09, 0x08, 0x05])
    expect(readSessionFrame(reordered)).toEqual(SessionFrame.decode(reordered))
    const extra = new Uint8Array([0x08, 0x05, 0x12, 0x01, 0x09, 0x18, 0x01])
    expect(readSessionFrame(extra).id).toBe(5)
    expect(Array.from(readSessionFrame(extra).body)).toEqual([9])
    expect(() => readSessionFrame(new Uint8Array([0x08, 0x05, 0x12, 0x04, 0x09]))).toThrow(NaiadError)
  })
})
