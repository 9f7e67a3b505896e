// The scheduler client tells a slow supernode from a dead one: single late answers leave
// it available (a busy supernode is not an outage), repeated ones or a refused dial mark
// it down, and the keep-alive probe brings it back.

import { mkdtemp, rm } from 'node:fs/promises'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import pino from 'pino'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { NaiadError} from '@naiad/proto';
import { createFabricNode, PROTOCOLS, SchedulerRequest, SchedulerResponse, serve, type FabricNode } from '@naiad/proto'

import { FabricSchedulerClient } from '../src/scheduler/client.ts'

describe('scheduler client availability', () => {
  let dir: string
  let supernode: FabricNode
  let daemon: FabricNode
  let info: Server
  let infoUrl: string
  /** Calls the fake supernode leaves unanswered before it answers again. */
  let stall = 0

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'naiad-sched-client-'))
    supernode = await createFabricNode({ dataDir: join(dir, 'sn'), listen: ['/ip4/127.0.0.1/tcp/0'] })
    daemon = await createFabricNode({ dataDir: join(dir, 'd'), listen: ['/ip4/127.0.0.1/tcp/0'] })
    await serve(supernode, PROTOCOLS.scheduler, SchedulerRequest, SchedulerResponse, async (_req, ctx) => {
      if (stall > 0) {
        stall--
        await new Promise((resolve) => ctx.signal.addEventListener('abort', resolve, { once: true }))
      }
      return { parents: { task: undefined, parents: [] } }
    })
    info = createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ peerId: supernode.peerId.toString(), multiaddrs: supernode.getMultiaddrs().map(String) }))
    })
    await new Promise<void>((resolve) => info.listen(0, '127.0.0.1', resolve))
    infoUrl = `http://127.0.0.1:${(info.address() as AddressInfo).port}`
  })

  afterAll(async () => {
    info?.close()
    await daemon?.stop()
    await supernode?.stop()
    if (dir !== undefined) await rm(dir, { recursive: true, force: true })
  })

  const client = (): FabricSchedulerClient => new FabricSchedulerClient(daemon, { supernodeUrl: infoUrl, timeoutMs: 400, logger: pino({ level: 'silent' }) })
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
    // Down: calls fail at once until the keep-alive probe gets an answer.
    expect(await code(c.getParents('t', 4))).toBe('PROTO_ERR_DIAL')
    await c.announceHost({ id: '', hostname: 'h', ip: '', idc: '', location: '', multiaddrs: [], uploadSlots: 1, isSeed: false, labels: [] })
    expect(c.available).toBe(true)
  })

  it('goes down at once when the supernode cannot be reached', async () => {
    const c = new FabricSchedulerClient(daemon, { supernodeUrl: 'http://127.0.0.1:1', timeoutMs: 400, logger: pino({ level: 'silent' }) })
    expect(await code(c.getParents('t', 4))).toBe('PROTO_ERR_DIAL')
    expect(c.available).toBe(false)
  })
})
