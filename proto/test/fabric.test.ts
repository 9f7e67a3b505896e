import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { lpStream } from '@libp2p/utils'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import {
  call, createFabricNode, DataResponse, LeaveTaskRequest, LIMITS, NaiadError, SchedulerRequest, SchedulerResponse, serve,
  type FabricNode
} from '../src/index.ts'

describe('fabric', () => {
  let dir: string
  let a: FabricNode
  let b: FabricNode

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'naiad-fabric-'))
    a = await createFabricNode({ dataDir: join(dir, 'a'), listen: ['/ip4/127.0.0.1/tcp/0'] })
    b = await createFabricNode({ dataDir: join(dir, 'b'), listen: ['/ip4/127.0.0.1/tcp/0'] })
  })
  afterAll(async () => {
    await a.stop()
    await b.stop()
    await rm(dir, { recursive: true, force: true })
  })

  it('keeps its identity across restarts of the same data dir', async () => {
    const again = await createFabricNode({ dataDir: join(dir, 'a'), listen: ['/ip4/127.0.0.1/tcp/0'] })
    expect(again.peerId.toString()).toBe(a.peerId.toString())
    expect(again.peerId.type).toBe('Ed25519')
    await again.stop()
  })

  it('carries a typed request and response over Noise and yamux', async () => {
    await serve(b, '/naiad/test-echo/1.0.0', SchedulerRequest, SchedulerResponse, async (req, ctx) => {
      expect(ctx.remotePeer.toString()).toBe(a.peerId.toString())
      return { task: { id: req.getParents?.taskId ?? '', url: 'u', state: 'running', contentLength: -1, pieceSize: 4, pieceCount: -1, pieces: [], sha256: new Uint8Array(), backToSource: false, error: undefined, grant: new Uint8Array(), sourcePeer: '', digestEpoch: 0, piecesFrom: 0 } }
    })
    const res = await call(a, b.getMultiaddrs(), '/naiad/test-echo/1.0.0', SchedulerRequest, SchedulerResponse, { getParents: { taskId: 'abc', limit: 3, digestEpoch: 0, digests: 0 } })
    expect(res.task?.id).toBe('abc')
    expect(res.task?.contentLength).toBe(-1)
  })

  it('returns handler errors as typed errors', async () => {
    await serve(b, '/naiad/test-fail/1.0.0', SchedulerRequest, SchedulerResponse, async () => {
      throw new NaiadError('SN_ERR_TASK_NOT_FOUND', 'no such task')
    })
    const res = await call(a, b.getMultiaddrs(), '/naiad/test-fail/1.0.0', SchedulerRequest, SchedulerResponse, { leaveHost: true })
    expect(res.error?.code).toBe('SN_ERR_TASK_NOT_FOUND')
  })

  it('refuses a response larger than the maximum message size', async () => {
    await b.handle('/naiad/test-big/1.0.0', async (stream) => {
      const lp = lpStream(stream, { maxDataLength: 64 * 1024 * 1024 })
      await lp.read()
      await lp.write(DataResponse.encode({ sha256: new Uint8Array(LIMITS.maxMessageBytes + 10) }))
      await stream.close()
    })
    const err = await call(a, b.getMultiaddrs(), '/naiad/test-big/1.0.0', LeaveTaskRequest, DataResponse, { taskId: 't' }).catch((e: unknown) => e)
    expect((err as NaiadError).code).toBe('PROTO_ERR_MESSAGE_TOO_LARGE')
  })

  it('times out a call whose peer never answers', async () => {
    await b.handle('/naiad/test-silent/1.0.0', async () => { /* never answers */ })
    const started = Date.now()
    const err = await call(a, b.getMultiaddrs(), '/naiad/test-silent/1.0.0', LeaveTaskRequest, DataResponse, { taskId: 't' }, { timeoutMs: 300 }).catch((e: unknown) => e)
    expect((err as NaiadError).code).toBe('PROTO_ERR_TIMEOUT')
    expect(Date.now() - started).toBeLessThan(2000)
  })

  it('honours the caller\'s AbortSignal', async () => {
    const ac = new AbortController()
    setTimeout(() => ac.abort(), 100)
    const err = await call(a, b.getMultiaddrs(), '/naiad/test-silent/1.0.0', LeaveTaskRequest, DataResponse, { taskId: 't' }, { signal: ac.signal }).catch((e: unknown) => e)
    expect((err as NaiadError).code).toBe('PROTO_ERR_ABORTED')
  })
})
