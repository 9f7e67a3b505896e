// The daemon half of the slo plugin on its own: timelines built from the download events,
// and the bounded buffer that holds traces while the supernode cannot be reached. The
// whole path through real processes is in supernode/test/slo.test.ts.

import { pino } from 'pino'
import { describe, expect, it } from 'vitest'
import { loadSettings, NaiadError } from '@naiad/proto'

import type { SupernodeLink } from '../src/plugin-api/context.ts'
import { SLO_DAEMON_SETTINGS } from '../src/plugins/slo/index.ts'
import { Timelines, traceUrl } from '../src/plugins/slo/timelines.ts'
import { TraceSender } from '../src/plugins/slo/trace-sender.ts'

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
    const load = (raw: Record<string, unknown>): unknown => loadSettings(SLO_DAEMON_SETTINGS, raw, 'plugin-config.slo')
    expect(load({})).toMatchObject({ maxBuffered: 1000, retryInterval: 2000, timeout: 5000, batchSize: 100 })
    expect(() => load({ maxBuffered: 0 })).toThrow(/plugin-config\.slo\.maxBuffered/)
    expect(() => load({ retryInterval: 'often' })).toThrow(/plugin-config\.slo\.retryInterval/)
    // The supernode is the daemon's own: a setting of its own is an unknown key now.
    expect(() => load({ supernode: 'http://sn:8002' })).toThrow(/plugin-config\.slo\.supernode: unknown setting/)
  })

  describe('trace sender', () => {
    /** A supernode that cannot be reached, as the daemon's link reports it; it counts the calls. */
    const unreachable = (): SupernodeLink & { calls: number } => ({
      calls: 0,
      async call() {
        this.calls++
        throw new NaiadError('PROTO_ERR_DIAL', 'supernode unavailable')
      }
    })

    it('buffers at most maxBuffered traces while the supernode is unreachable, dropping the oldest', async () => {
      const link = unreachable()
      const sender = new TraceSender(link, pino({ level: 'silent' }), { maxBuffered: 3, batchSize: 10, retryMs: 50, timeoutMs: 2000 })
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
      expect(link.calls).toBeGreaterThan(0)
      await sender.close()
    })
  })
})
