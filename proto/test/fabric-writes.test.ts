// The fabric's write path: a session call is one socket write each way (a microtask's
// yamux frames as one Noise message, each message one write, window updates at half the
// window), bulk data larger than the largest window still arrives whole and in order, and
// session frames are split correctly whatever the chunking.

import { createHash } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import type { MessageStream } from '@libp2p/interface'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Uint8ArrayList } from 'uint8arraylist'

import {
  batchSends, COALESCE_MAX_BYTES, createFabricNode, FrameDecoder, lengthPrefixed, RpcSession, SchedulerRequest, SchedulerResponse,
  serveSession, type FabricNode, type NaiadError
} from '../src/index.ts'

const SESSION = '/naiad/test-writes/1.1.0'
const ECHO = '/naiad/test-echo/1.0.0'

describe('fabric writes', () => {
  let dir: string
  let client: FabricNode
  let server: FabricNode

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'naiad-writes-'))
    server = await createFabricNode({ dataDir: join(dir, 'server'), listen: ['/ip4/127.0.0.1/tcp/0'] })
    client = await createFabricNode({ dataDir: join(dir, 'client'), listen: ['/ip4/127.0.0.1/tcp/0'] })
    // An answer above 1,200 bytes: Noise encrypts it in parts (the worst case for writes).
    const parents = Array.from({ length: 8 }, (_, i) => ({ id: `peer-${i}`.padEnd(52, 'x'), multiaddrs: ['/ip4/127.0.0.1/tcp/1'.padEnd(80, '0')], bitmap: new Uint8Array(16), score: i, isSeed: false, dataPort: 0, dataTransport: '' }))
    await serveSession(server, SESSION, SchedulerRequest, SchedulerResponse, () => ({ paceMs: 5, parents: { task: undefined, parents, grant: new Uint8Array(180) } }))
    await server.handle(ECHO, (stream) => {
      stream.addEventListener('message', (evt) => {
        if (!stream.send(evt.data)) {
          stream.pause()
          stream.addEventListener('drain', () => stream.resume(), { once: true })
        }
      })
      stream.addEventListener('remoteCloseWrite', () => { void stream.close().catch(() => {}) })
    })
  })
  afterAll(async () => {
    await client?.stop()
    await server?.stop()
    if (dir !== undefined) await rm(dir, { recursive: true, force: true })
  })

  it('writes a session call and its answer with one socket write each', async () => {
    const s = new RpcSession(client, () => server.getMultiaddrs(), SESSION, SchedulerRequest, SchedulerResponse)
    const ask = (): Promise<unknown> => s.call({ getParents: { taskId: 't', limit: 8, digestEpoch: 0, digests: 0 } }, { timeoutMs: 10_000 })
    await ask() // the connection and the stream are set up
    const write = Socket.prototype.write
    let writes = 0
    Socket.prototype.write = function (this: Socket, ...args: Parameters<Socket['write']>) {
      writes++
      return write.apply(this, args)
    } as Socket['write']
    const n = 50
    try {
      for (let i = 0; i < n; i++) {
        const res = await ask() as { parents?: { parents: unknown[] } }
        expect(res.parents?.parents).toHaveLength(8)
      }
    } finally {
      Socket.prototype.write = write
    }
    // Before: a length, ciphertext parts and a tag per message, and a window update each way.
    expect(writes).toBe(2 * n)
    await s.close()
  })

  it('carries more than the largest window each way, whole and in order', async () => {
    const size = 24 * 1024 * 1024 // above yamux's 16 MiB window: the updates must keep coming
    const stream = await client.dialProtocol(server.getMultiaddrs(), ECHO, { signal: AbortSignal.timeout(30_000) })
    const sent = createHash('sha256')
    const got = createHash('sha256')
    let received = 0
    const done = new Promise<void>((resolve, reject) => {
      stream.addEventListener('message', (evt) => {
        for (const buf of evt.data instanceof Uint8Array ? [evt.data] : evt.data) got.update(buf)
        received += evt.data.byteLength
        if (received === size) resolve()
      })
      stream.addEventListener('close', (evt) => { if (received < size) reject(evt.error ?? new Error(`closed after ${received} bytes`)) })
    })
    let seed = 7
    for (let at = 0; at < size; at += 100_000) {
      const chunk = new Uint8Array(Math.min(100_000, size - at))
      for (let i = 0; i < chunk.length; i += 4096) chunk[i] = seed = (seed * 31 + 11) & 0xff
      sent.update(chunk)
      if (!stream.send(chunk)) await stream.onDrain({ signal: AbortSignal.timeout(30_000) })
    }
    await done
    expect(got.digest('hex')).toBe(sent.digest('hex'))
    await stream.close()
  }, 60_000)
})

describe('session frame decoder', () => {
  const frames = [new Uint8Array(0).fill(0), new Uint8Array(1).fill(1), new Uint8Array(200).fill(2), new Uint8Array(70_000).fill(3)]
  const wire = new Uint8ArrayList(...frames.map((f) => lengthPrefixed(f))).subarray()

  it('returns every frame, whole and in order, however the bytes are chunked', () => {
    for (const step of [1, 2, 3, 7, 128, 4096, wire.byteLength]) {
      const decoder = new FrameDecoder(1 << 20)
      const out: Uint8Array[] = []
      for (let at = 0; at < wire.byteLength; at += step) out.push(...decoder.decode(wire.subarray(at, at + step)))
      expect(out.map((f) => f.byteLength)).toEqual(frames.map((f) => f.byteLength))
      out.forEach((f, i) => expect(Buffer.from(f).equals(Buffer.from(frames[i]))).toBe(true))
    }
  })

  it('refuses a frame longer than the maximum as soon as its length is read', () => {
    const decoder = new FrameDecoder(1000)
    const code = (() => {
      try {
        decoder.decode(lengthPrefixed(new Uint8Array(1001)).subarray(0, 3))
        return 'ok'
      } catch (err) {
        return (err as NaiadError).code
      }
    })()
    expect(code).toBe('PROTO_ERR_MESSAGE_TOO_LARGE')
  })
})

describe('batched sends', () => {
  /** What batchSends reaches of a connection: send, close and the state it checks. */
  const fake = (): { conn: MessageStream; sent: number[][]; closed: boolean[] } => {
    const sent: number[][] = []
    const closed: boolean[] = []
    const conn = {
      status: 'open', writableNeedsDrain: false,
      send(data: Uint8Array | Uint8ArrayList): boolean {
        sent.push([...(data instanceof Uint8Array ? data : data.subarray())])
        return true
      },
      async close(): Promise<void> { closed.push(true) },
      abort(): void {}
    }
    return { conn: batchSends(conn as unknown as MessageStream), sent, closed }
  }

  it('sends the small frames of one microtask as one, in order', async () => {
    const { conn, sent } = fake()
    expect(conn.send(Uint8Array.of(1, 2))).toBe(true)
    expect(conn.send(new Uint8ArrayList(Uint8Array.of(3), Uint8Array.of(4)))).toBe(true)
    expect(sent).toHaveLength(0)
    await Promise.resolve()
    expect(sent).toEqual([[1, 2, 3, 4]])
  })

  it('sends what it holds before a large frame, and the large one at once', () => {
    const { conn, sent } = fake()
    conn.send(Uint8Array.of(1))
    conn.send(new Uint8Array(COALESCE_MAX_BYTES + 1).fill(9))
    expect(sent).toHaveLength(1)
    expect(sent[0][0]).toBe(1)
    expect(sent[0]).toHaveLength(COALESCE_MAX_BYTES + 2)
  })

  it('sends what it holds before the connection closes', async () => {
    const { conn, sent, closed } = fake()
    conn.send(Uint8Array.of(5))
    await conn.close()
    expect(sent).toEqual([[5]])
    expect(closed).toEqual([true])
  })
})
