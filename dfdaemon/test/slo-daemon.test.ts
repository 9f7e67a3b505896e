// The daemon half of the slo plugin on its own: timelines built from the download events,
// and the bounded buffer that holds traces while the supernode cannot be reached. The
// whole path through real processes is in supernode/test/slo.test.ts.

import { mkdtemp, rm } from 'node:fs/promises'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { pino } from 'pino'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createFabricNode, type FabricNode } from '@naiad/proto'

import { Timelines, traceUrl } from '../src/plugins/slo/timelines.ts'
import { TraceSender } from '../src/plugins/slo/trace-sender.ts'
import { readDaemonSettings } from '../src/plugins/slo/index.ts'

describe('slo plugin, daemon half', () => {
  it('splits bytes by peer, seed and origin, keeps back-to-source reasons, and closes on the end event', () => {
    let clock = 1000
    const tl = new Timelines({ now: () => clock })
    tl.started({ taskId: 't1', url: 'https://registry.test/v2/app/blobs/sha256:ab?X-Amz-Signature=secret' })
    clock = 1005
    tl.registered({ taskId: 't1', scheduled: true })
    clock = 1100
    tl.pieceStored({ taskId: 't1', length: 4, source: 'peer', parentId: 'seed', seed: true })
    tl.pieceStored({ taskId: 't1', length: 4, source: 'peer', parentId: 'p1', seed: false })
    tl.pieceFailed({ taskId: 't1' })
    tl.pieceStored({ taskId: 't1', length: 4, source: 'peer', parentId: 'p1', seed: false })
    clock = 1200
    tl.backToSource({ taskId: 't1', reason: 'no parent is reachable' })
    tl.pieceStored({ taskId: 't1', length: 2, source: 'origin', parentId: '' })
    // Events of a task this daemon did not see start are ignored.
    tl.pieceStored({ taskId: 'other', length: 99, source: 'origin', parentId: '' })
    clock = 1300
    const t = tl.succeeded({ taskId: 't1', contentLength: 14, durationMs: 290 })!
    expect(t).toMatchObject({
      taskId: 't1', url: 'https://registry.test/v2/app/blobs/sha256:ab', result: 'succeeded', scheduled: true,
      startedAtMs: 1000, registeredAtMs: 1005, firstPieceAtMs: 1100, finishedAtMs: 1300, durationMs: 290, contentLength: 14,
      bytesPeer: 8, bytesSeed: 4, bytesOrigin: 2, pieces: 4, pieceFailures: 1,
      backToSource: [{ atMs: 1200, reason: 'no parent is reachable' }]
    })
    expect(t.parents).toEqual([{ peerId: 'seed', isSeed: true, bytes: 4, pieces: 1 }, { peerId: 'p1', isSeed: false, bytes: 8, pieces: 2 }])
    expect(tl.size).toBe(0)
    expect(tl.succeeded({ taskId: 't1', contentLength: 14, durationMs: 1 })).toBeUndefined()

    tl.started({ taskId: 't2', url: 'http://o/x' })
    clock = 1450
    const f = tl.failed({ taskId: 't2', code: 'DFD_ERR_ORIGIN_STATUS', message: 'origin answered 404' })!
    expect(f).toMatchObject({ result: 'failed', errorCode: 'DFD_ERR_ORIGIN_STATUS', durationMs: 150, registeredAtMs: -1, firstPieceAtMs: -1, contentLength: -1 })
    expect(traceUrl('not a url')).toBe('')
  })

  it('keeps at most maxOpen timelines, dropping the oldest', () => {
    const tl = new Timelines({ maxOpen: 2 })
    for (const id of ['a', 'b', 'c']) tl.started({ taskId: id, url: 'http://o/x' })
    expect(tl.size).toBe(2)
    expect(tl.failed({ taskId: 'a', code: 'X', message: '' })).toBeUndefined()
    expect(tl.failed({ taskId: 'c', code: 'X', message: '' })).toBeDefined()
  })

  it('validates its settings, naming the key', () => {
    expect(readDaemonSettings({}, 'http://sn:8002')).toMatchObject({ supernode: 'http://sn:8002', maxBuffered: 1000, retryMs: 2000 })
    expect(() => readDaemonSettings({ maxBuffered: 0 }, 'http://sn:8002')).toThrow(/plugin-config\.slo\.maxBuffered/)
    expect(() => readDaemonSettings({ retryInterval: 'often' }, 'http://sn:8002')).toThrow(/plugin-config\.slo\.retryInterval/)
    expect(() => readDaemonSettings({ supernode: 'sn:8002' }, undefined)).toThrow(/plugin-config\.slo\.supernode/)
  })

  describe('trace sender', () => {
    let dir: string
    let node: FabricNode
    let down: Server
    let downUrl: string

    beforeAll(async () => {
      dir = await mkdtemp(join(tmpdir(), 'naiad-slo-sender-'))
      node = await createFabricNode({ dataDir: dir, listen: ['/ip4/127.0.0.1/tcp/0'] })
      // A supernode HTTP API that answers 503: the sender cannot learn where to send.
      down = createServer((_req, res) => res.writeHead(503).end())
      await new Promise<void>((r) => down.listen(0, '127.0.0.1', r))
      downUrl = `http://127.0.0.1:${(down.address() as AddressInfo).port}`
    })

    afterAll(async () => {
      await node?.stop()
      await new Promise<void>((r) => down?.close(() => r()) ?? r())
      await rm(dir, { recursive: true, force: true })
    })

    it('buffers at most maxBuffered traces while the supernode is unreachable, dropping the oldest', async () => {
      const sender = new TraceSender(node, pino({ level: 'silent' }), { supernodeUrl: downUrl, maxBuffered: 3, batchSize: 10, retryMs: 50, timeoutMs: 2000 })
      const tl = new Timelines()
      for (let i = 0; i < 5; i++) {
        tl.started({ taskId: `t${i}`, url: 'http://o/x' })
        sender.add(tl.failed({ taskId: `t${i}`, code: 'X', message: '' })!)
      }
      const until = Date.now() + 10_000
      while (sender.status().failures === 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 20))
      const s = sender.status()
      expect(s).toMatchObject({ buffered: 3, dropped: 2, sent: 0 })
      expect(s.failures).toBeGreaterThan(0)
      expect(s.lastError?.code).toBe('PROTO_ERR_DIAL')
      await sender.close()
    })
  })
})
