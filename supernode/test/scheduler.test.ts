// The scheduler on its own: who fetches from the origin, whose piece digests are trusted,
// which parents a peer is offered and in what order. Persistence is a recording fake.

import { createHash } from 'node:crypto'

import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { Bitmap, NaiadError, type Host, type PieceResult, type ReportPiecesRequest } from '@naiad/proto'

import { Scheduler, type HostState, type PeerState, type SchedulerOptions, type SchedulerPersistence, type TaskState } from '../src/scheduler/scheduler.ts'
import { health, locality, scoreCandidate, WEIGHTS } from '../src/scheduler/scoring.ts'

const TTL = 30_000
const SEED = 'seed'
const PIECE = 4 * 1024 * 1024

const taskId = (name: string): string => createHash('sha256').update(name).digest('hex')
const digest = (num: number): Uint8Array => createHash('sha256').update(`piece ${num}`).digest()

type Call = [method: keyof SchedulerPersistence, ...args: unknown[]]

class RecordingPersistence implements SchedulerPersistence {
  readonly calls: Call[] = []
  markTask(task: TaskState): void { this.calls.push(['markTask', task.id, task.state]) }
  markPieces(task: TaskState, nums: number[]): void { this.calls.push(['markPieces', task.id, [...nums]]) }
  markPeer(taskId: string, peer: PeerState): void { this.calls.push(['markPeer', taskId, peer.hostId, peer.state]) }
  deletePeer(taskId: string, hostId: string): void { this.calls.push(['deletePeer', taskId, hostId]) }
  markHost(host: HostState): void { this.calls.push(['markHost', host.info.id]) }
  of(method: keyof SchedulerPersistence): unknown[][] {
    return this.calls.filter((c) => c[0] === method).map((c) => c.slice(1))
  }
}

function hostInfo(id: string, extra: Partial<Host> = {}): Host {
  return { id, hostname: id, ip: '10.0.0.1', idc: '', location: '', multiaddrs: [`/dns4/${id}/tcp/65002`], uploadSlots: 4, isSeed: false, labels: [], dataPort: 0, dataTransport: '', ...extra }
}

const ok = (num: number, parentId = '', extra: Partial<PieceResult> = {}): PieceResult =>
  ({ num, parentId, length: PIECE, costMs: 0, sha256: new Uint8Array(0), errorCode: '', ...extra })
const bad = (num: number, parentId: string, errorCode: string): PieceResult =>
  ({ num, parentId, length: 0, costMs: 0, sha256: new Uint8Array(0), errorCode })

function report(id: string, results: PieceResult[], extra: Partial<ReportPiecesRequest> = {}): ReportPiecesRequest {
  return { taskId: id, results, contentLength: -1, pieceSize: 0, pieceCount: -1, sha256: new Uint8Array(0), state: '', error: undefined, ...extra }
}

describe('Scheduler', () => {
  let persist: RecordingPersistence
  let triggered: TaskState[]
  let now: number
  const T = taskId('blob')
  const URL = 'http://origin/blob'

  beforeEach(() => {
    persist = new RecordingPersistence()
    triggered = []
    vi.useFakeTimers({ toFake: ['Date'] })
    now = Date.UTC(2025, 0, 1)
    vi.setSystemTime(now)
  })
  afterEach(() => {
    vi.useRealTimers()
  })

  function advance(ms: number): void {
    now += ms
    vi.setSystemTime(now)
  }

  function withSeed(extra: Partial<SchedulerOptions> = {}): Scheduler {
    const s = new Scheduler({ hostTtlMs: TTL, seedHostId: SEED, triggerSeed: (t) => triggered.push(t), ...extra }, persist)
    s.announceHost(SEED, hostInfo(SEED))
    return s
  }

  function noSeed(): Scheduler {
    return new Scheduler({ hostTtlMs: TTL }, persist)
  }

  function register(s: Scheduler, host: string, id = T, url = URL): ReturnType<Scheduler['registerTask']> {
    if (!s.hosts.has(host)) s.announceHost(host, hostInfo(host))
    return s.registerTask(host, { taskId: id, url, headers: [], digest: '', range: '', filter: [] })
  }

  /** The trusted peer publishes metadata and digests for `count` pieces. */
  function publish(s: Scheduler, host: string, count: number, state = ''): void {
    s.reportPieces(host, report(T, Array.from({ length: count }, (_, n) => ok(n, '', { sha256: digest(n) })), {
      contentLength: count * PIECE, pieceSize: PIECE, pieceCount: count, state
    }))
  }

  const parentIds = (s: Scheduler, host: string, limit = 0): string[] => s.getParents(host, T, limit).parents.map((p) => p.id)
  const scores = (s: Scheduler, host: string): Map<string, number> => new Map(s.getParents(host, T, 32).parents.map((p) => [p.id, p.score]))

  describe('registerTask', () => {
    it('with a seed: triggers it once, and makes it the trusted back-to-source peer', () => {
      const s = withSeed()
      const info = register(s, 'a')
      expect(info.backToSource).toBe(false)
      expect(info.state).toBe('running')
      expect(info.id).toBe(T)
      expect(info.url).toBe(URL)
      expect(triggered).toHaveLength(1)
      expect(triggered[0].id).toBe(T)
      const task = s.tasks.get(T)!
      expect(task.backSourcePeer).toBe(SEED)
      expect(task.peers.get(SEED)?.state).toBe('running')
      expect(persist.of('markPeer')).toContainEqual([T, SEED, 'running'])
      expect(persist.of('markTask').at(-1)).toEqual([T, 'running'])

      expect(register(s, 'b').backToSource).toBe(false)
      expect(register(s, 'a').backToSource).toBe(false)
      // The seed's own registration (what triggerSeed leads to) is told to go to the origin.
      expect(register(s, SEED).backToSource).toBe(true)
      expect(triggered).toHaveLength(1)
      expect(s.tasks.get(T)!.backSourcePeer).toBe(SEED)
    })

    it('without a seed: the first peer goes to the origin and is trusted, later ones are not', () => {
      const s = noSeed()
      expect(register(s, 'a').backToSource).toBe(true)
      expect(s.tasks.get(T)!.backSourcePeer).toBe('a')
      expect(register(s, 'b').backToSource).toBe(false)
      expect(register(s, 'c').backToSource).toBe(false)
      expect(s.tasks.get(T)!.backSourcePeer).toBe('a')
    })

    it('a seed configured without triggerSeed behaves as no seed', () => {
      const s = new Scheduler({ hostTtlMs: TTL, seedHostId: SEED }, persist)
      expect(register(s, 'a').backToSource).toBe(true)
      expect(s.tasks.get(T)!.backSourcePeer).toBe('a')
    })

    it('tells the back-to-source peer to go to the origin again when it registers again', () => {
      // A daemon that restarted mid-download registers again; it is still the only
      // trusted source, so it must be told to fetch from the origin, not to wait for parents.
      const s = noSeed()
      expect(register(s, 'a').backToSource).toBe(true)
      expect(register(s, 'a').backToSource).toBe(true)
    })

    it('does not send anyone to the origin once the task succeeded', () => {
      const s = noSeed()
      register(s, 'a')
      publish(s, 'a', 2, 'succeeded')
      expect(s.tasks.get(T)!.state).toBe('succeeded')
      const info = register(s, 'b')
      expect(info.backToSource).toBe(false)
      expect(info.state).toBe('succeeded')
      expect(info.pieces.map((p) => p.num)).toEqual([0, 1])
    })

    it('rejects a malformed task ID or a missing URL with SN_ERR_BAD_REQUEST', () => {
      const s = noSeed()
      for (const [id, url] of [['nope', URL], [T.toUpperCase(), URL], [T, '']]) {
        try {
          register(s, 'a', id, url)
          expect.unreachable()
        } catch (err) {
          expect(err).toBeInstanceOf(NaiadError)
          expect((err as NaiadError).code).toBe('SN_ERR_BAD_REQUEST')
        }
      }
      expect(s.tasks.size).toBe(0)
    })

    it('resets a failed task and triggers the seed again on the next registration', () => {
      const s = withSeed()
      register(s, 'a')
      register(s, SEED)
      s.reportPieces(SEED, report(T, [], { state: 'failed', error: { code: 'DFD_ERR_ORIGIN_STATUS', message: '503' } }))
      const failed = s.getParents('a', T, 4).task!
      expect(failed.state).toBe('failed')
      expect(failed.error).toEqual({ code: 'DFD_ERR_ORIGIN_STATUS', message: '503' })

      const info = register(s, 'b')
      expect(triggered).toHaveLength(2)
      expect(info.state).toBe('running')
      expect(info.error).toBeUndefined()
      expect(info.backToSource).toBe(false)
      expect(s.tasks.get(T)!.peers.get(SEED)?.state).toBe('running')
      expect(register(s, SEED).backToSource).toBe(true)
    })

    it('records a default error when the trusted peer fails without one', () => {
      const s = noSeed()
      register(s, 'a')
      s.reportPieces('a', report(T, [], { state: 'failed' }))
      expect(s.tasks.get(T)!.error).toEqual({ code: 'DFD_ERR_TASK_FAILED', message: 'back-to-source failed' })
    })

    it('without a seed, a failed task hands the origin to the next peer', () => {
      const s = noSeed()
      register(s, 'a')
      s.reportPieces('a', report(T, [], { state: 'failed' }))
      expect(register(s, 'b').backToSource).toBe(true)
      expect(s.tasks.get(T)!.backSourcePeer).toBe('b')
      expect(s.tasks.get(T)!.error).toBeUndefined()
    })

    it('a failed peer that registers again runs again and keeps its pieces', () => {
      const s = noSeed()
      register(s, 'a')
      register(s, 'b')
      s.reportPieces('b', report(T, [ok(3, 'a')], { state: 'failed' }))
      expect(s.tasks.get(T)!.peers.get('b')?.state).toBe('failed')
      register(s, 'b')
      const b = s.tasks.get(T)!.peers.get('b')!
      expect(b.state).toBe('running')
      expect([...b.bitmap.pieces()]).toEqual([3])
    })
  })

  describe('reportPieces', () => {
    it('publishes digests and task metadata from the trusted peer', () => {
      const s = withSeed()
      register(s, 'a')
      s.reportPieces(SEED, report(T, [ok(0, '', { sha256: digest(0), length: PIECE }), ok(1, '', { sha256: digest(1), length: 17 })], {
        contentLength: PIECE + 17, pieceSize: PIECE, pieceCount: 2
      }))
      const info = s.getParents('a', T, 4).task!
      expect(info).toMatchObject({ contentLength: PIECE + 17, pieceSize: PIECE, pieceCount: 2, state: 'running' })
      expect(info.pieces).toEqual([{ num: 0, length: PIECE, sha256: digest(0) }, { num: 1, length: 17, sha256: digest(1) }])
      expect(persist.of('markPieces')).toEqual([[T, [0, 1]]])

      // A digest, once published, is not replaced.
      s.reportPieces(SEED, report(T, [ok(0, '', { sha256: digest(99) })]))
      expect(s.tasks.get(T)!.pieces.get(0)?.sha256).toEqual(digest(0))
      expect(persist.of('markPieces')).toHaveLength(1)

      const whole = createHash('sha256').update('all').digest()
      s.reportPieces(SEED, report(T, [], { state: 'succeeded', sha256: whole }))
      expect(s.tasks.get(T)!.state).toBe('succeeded')
      expect(register(s, 'b').sha256).toEqual(whole)
    })

    it('from any other peer only updates its bitmap: its digests, metadata and state are ignored', () => {
      const s = withSeed()
      register(s, 'a')
      register(s, 'b')
      s.reportPieces(SEED, report(T, [ok(0, '', { sha256: digest(0) })], { contentLength: 3 * PIECE, pieceSize: PIECE, pieceCount: 3 }))
      s.reportPieces('a', report(T, [ok(0, SEED), ok(1, '', { sha256: digest(666) }), ok(2, '', { sha256: digest(777) })], {
        contentLength: 1, pieceSize: 1, pieceCount: 1, sha256: digest(5)
      }))
      const task = s.tasks.get(T)!
      expect([...task.pieces.keys()]).toEqual([0])
      expect(task).toMatchObject({ contentLength: 3 * PIECE, pieceSize: PIECE, pieceCount: 3 })
      expect([...task.peers.get('a')!.bitmap.pieces()]).toEqual([0, 1, 2])
      expect(persist.of('markPieces')).toEqual([[T, [0]]])

      s.reportPieces('a', report(T, [], { state: 'succeeded', sha256: digest(5) }))
      expect(task.state).toBe('running')
      expect(task.sha256).toHaveLength(0)
      expect(task.peers.get('a')?.state).toBe('succeeded')

      // b now sees a's pieces in a's bitmap.
      const parent = s.getParents('b', T, 4).parents.find((p) => p.id === 'a')
      expect(parent?.bitmap).toEqual(new Uint8Array([0b111]))
    })

    it('ignores digests that are not 32 bytes long', () => {
      const s = noSeed()
      register(s, 'a')
      s.reportPieces('a', report(T, [ok(0, '', { sha256: new Uint8Array(31) })], { pieceSize: PIECE, pieceCount: 1, contentLength: PIECE }))
      expect(s.tasks.get(T)!.pieces.size).toBe(0)
      expect(s.tasks.get(T)!.peers.get('a')!.bitmap.has(0)).toBe(true)
    })

    it('credits the parent of a good piece and measures its bandwidth', () => {
      const s = noSeed()
      register(s, 'a')
      register(s, 'b')
      s.reportPieces('b', report(T, [ok(0, 'a', { length: 1_000_000, costMs: 100 })]))
      const a = s.hosts.get('a')!
      expect(a.goodPieces).toBe(1)
      expect(a.bandwidth).toBe(10_000_000)
      s.reportPieces('b', report(T, [ok(1, 'a', { length: 1_000_000, costMs: 1000 })]))
      expect(a.bandwidth).toBeCloseTo(10_000_000 * 0.8 + 1_000_000 * 0.2)
      expect(persist.of('markHost')).toContainEqual(['a'])
    })

    it('rejects reports for unknown tasks with SN_ERR_TASK_NOT_FOUND', () => {
      const s = noSeed()
      for (const fn of [() => s.reportPieces('a', report(T, [])), () => s.getParents('a', T, 4)]) {
        try {
          fn()
          expect.unreachable()
        } catch (err) {
          expect((err as NaiadError).code).toBe('SN_ERR_TASK_NOT_FOUND')
        }
      }
    })
  })

  describe('getParents', () => {
    /** Seed holding pieces 0..count-1 (published), and peers registered. */
    function swarm(count: number, ...peers: string[]): Scheduler {
      const s = withSeed()
      for (const p of peers) register(s, p)
      register(s, SEED)
      publish(s, SEED, count)
      return s
    }

    it('offers holders of missing pieces, never the requester itself', () => {
      const s = swarm(4, 'a', 'b')
      s.reportPieces('a', report(T, [ok(0, SEED), ok(1, SEED)]))
      expect(parentIds(s, 'b').sort()).toEqual(['a', SEED])
      expect(parentIds(s, 'a')).toEqual([SEED])
      const res = s.getParents('b', T, 4)
      const a = res.parents.find((p) => p.id === 'a')!
      expect(a.multiaddrs).toEqual(['/dns4/a/tcp/65002'])
      expect(a.bitmap).toEqual(new Uint8Array([0b11]))
      expect(res.task?.id).toBe(T)
    })

    it('skips candidates that hold nothing the requester lacks', () => {
      const s = swarm(2, 'a', 'b')
      s.reportPieces('a', report(T, [ok(0, SEED)]))
      s.reportPieces('b', report(T, [ok(0, SEED), ok(1, SEED)]))
      expect(parentIds(s, 'b')).toEqual([])
      expect(parentIds(s, 'a').sort()).toEqual(['b', SEED])
    })

    it('excludes failed peers', () => {
      const s = swarm(2, 'a', 'b')
      s.reportPieces('a', report(T, [ok(0, SEED)], { state: 'failed' }))
      expect(parentIds(s, 'b')).toEqual([SEED])
    })

    it('offers succeeded peers', () => {
      const s = swarm(2, 'a', 'b')
      s.reportPieces('a', report(T, [ok(0, SEED), ok(1, SEED)], { state: 'succeeded' }))
      expect(parentIds(s, 'b')).toContain('a')
    })

    it('excludes, for that requester only, a parent it caught sending a corrupt piece', () => {
      const s = swarm(2, 'a', 'b', 'c')
      s.reportPieces('a', report(T, [ok(0, SEED), ok(1, SEED)]))
      expect(parentIds(s, 'b')).toContain('a')
      s.reportPieces('b', report(T, [bad(0, 'a', 'DFD_ERR_PIECE_DIGEST')]))
      expect(parentIds(s, 'b')).toEqual([SEED])
      expect(parentIds(s, 'c').sort()).toEqual(['a', SEED])
      expect(s.hosts.get('a')!.badPieces).toBe(1)
      // Not forgotten when b registers again (e.g. after failing).
      s.reportPieces('b', report(T, [], { state: 'failed' }))
      register(s, 'b')
      expect(parentIds(s, 'b')).toEqual([SEED])
    })

    it('excludes hosts not seen within hostTtlMs, except the seed', () => {
      const s = swarm(2, 'a', 'b')
      s.reportPieces('a', report(T, [ok(0, SEED)]))
      expect(parentIds(s, 'b')).toContain('a')
      advance(TTL + 1)
      // b is the requester (and so just seen); a and the seed have been silent.
      expect(parentIds(s, 'b')).toEqual([SEED])
      s.announceHost('a', hostInfo('a'))
      expect(parentIds(s, 'b')).toContain('a')
      advance(TTL)
      expect(parentIds(s, 'b')).toContain('a') // exactly the TTL is still fresh
    })

    it('offers the seed again once a failed task starts over, whatever its children failed to get from it before', () => {
      const s = swarm(4, 'a')
      // The seed's origin read breaks: the child's pieces from it fail, then the seed reports the task failed.
      s.reportPieces('a', report(T, [bad(0, SEED, 'DFD_ERR_ORIGIN_TRUNCATED'), bad(1, SEED, 'DFD_ERR_PIECE_UNAVAILABLE'), bad(2, SEED, 'DFD_ERR_PIECE_UNAVAILABLE')]))
      s.reportPieces(SEED, report(T, [], { state: 'failed' }))
      expect(s.hosts.get(SEED)!.consecutiveFailures).toBe(3)
      register(s, 'a')
      expect(triggered).toHaveLength(2)
      register(s, SEED)
      publish(s, SEED, 4)
      expect(parentIds(s, 'a')).toEqual([SEED])
    })

    it('excludes hosts with three consecutive failures until they recover', () => {
      const s = swarm(3, 'a', 'b', 'c')
      s.reportPieces('a', report(T, [ok(0, SEED), ok(1, SEED), ok(2, SEED)]))
      s.reportPieces('b', report(T, [bad(0, 'a', 'DFD_ERR_PIECE_UNAVAILABLE'), bad(1, 'a', 'DFD_ERR_UPLOAD_BUSY')]))
      expect(parentIds(s, 'b')).toContain('a')
      s.reportPieces('c', report(T, [bad(0, 'a', 'DFD_ERR_TIMEOUT')]))
      expect(s.hosts.get('a')!.consecutiveFailures).toBe(3)
      expect(parentIds(s, 'b')).not.toContain('a')
      expect(parentIds(s, 'c')).not.toContain('a')
      // A good piece served resets the streak.
      s.reportPieces('c', report(T, [ok(2, 'a')]))
      expect(parentIds(s, 'b')).toContain('a')
      // So does announcing again.
      for (let i = 0; i < 3; i++) s.reportPieces('b', report(T, [bad(0, 'a', 'DFD_ERR_TIMEOUT')]))
      expect(parentIds(s, 'b')).not.toContain('a')
      s.announceHost('a', hostInfo('a'))
      expect(parentIds(s, 'b')).toContain('a')
    })

    it('lets running peers swap pieces both ways (a cycle is harmless: every piece is verified)', () => {
      const s = swarm(4, 'a', 'b', 'c')
      // a fetched piece 0 from b; a also holds piece 3, which b lacks.
      s.reportPieces('b', report(T, [ok(0, SEED), ok(1, SEED)]))
      s.reportPieces('a', report(T, [ok(0, 'b'), ok(3, SEED)]))
      expect(parentIds(s, 'b')).toContain('a')
      expect(parentIds(s, 'a')).toContain('b')
      // Longer cycles too: c fetched from a, which fetched from b; b may still fetch from c.
      s.reportPieces('c', report(T, [ok(3, 'a'), ok(2, SEED)]))
      expect(parentIds(s, 'b')).toContain('c')
    })

    describe('the seed sends each piece about once', () => {
      const seedPieces = (s: Scheduler, host: string): number[] => {
        const seed = s.getParents(host, T, 32).parents.find((p) => p.isSeed)
        return seed === undefined ? [] : [...Bitmap.from(seed.bitmap).pieces()]
      }

      it('hands each seed-only piece to one child, round the children in turn, two each at most with nine', () => {
        const children = ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i']
        const s = swarm(20, ...children)
        // A child is never more than one grant ahead of the least served other one: asked in
        // turn, the children get pieces in turn, in the order the seed reads the origin in.
        const first = children.map((c) => seedPieces(s, c))
        expect(first).toEqual(children.map((_, i) => [i]))
        const second = children.map((c) => seedPieces(s, c))
        expect(second).toEqual(children.map((_, i) => [i, i + 9]))
        // Nine children: 16 / 9 rounds down to one, but each may hold two; no more.
        expect(seedPieces(s, 'a')).toEqual([0, 9])
        expect(new Set(second.flat()).size).toBe(18)
      })

      it('keeps an eager child at most one grant ahead of the others', () => {
        const s = swarm(16, 'a', 'b', 'c', 'd')
        expect(seedPieces(s, 'a')).toEqual([0])
        expect(seedPieces(s, 'a')).toEqual([0])
        expect(seedPieces(s, 'b')).toEqual([1])
        expect(seedPieces(s, 'c')).toEqual([2])
        expect(seedPieces(s, 'd')).toEqual([3])
        expect(seedPieces(s, 'a')).toEqual([0, 4])
      })

      it('hands the seed pieces round in turn in a swarm larger than the candidate pool', () => {
        const children = Array.from({ length: 100 }, (_, i) => `c${i}`)
        const s = swarm(300, ...children)
        expect(children.map((c) => seedPieces(s, c))).toEqual(children.map((_, i) => [i]))
        expect(children.map((c) => seedPieces(s, c))).toEqual(children.map((_, i) => [i, i + 100]))
        // A hundred children share the window: two grants each at most.
        expect(seedPieces(s, 'c0')).toEqual([0, 100])
      })

      it('offers a piece another child holds from that child, not from the seed', () => {
        const s = swarm(8, 'a', 'b', 'c')
        const a = seedPieces(s, 'a')
        expect(seedPieces(s, 'b')).toEqual([1])
        expect(seedPieces(s, 'c')).toEqual([2])
        expect(seedPieces(s, 'a')).toEqual([...a, 3])
        s.reportPieces('a', report(T, [ok(a[0], SEED)]))
        const parents = s.getParents('c', T, 32).parents
        expect(parents.map((p) => p.id)).toContain('a')
        expect(seedPieces(s, 'c')).not.toContain(a[0])
        // a holds it now, so that grant is spent and a may take a fresh one.
        const again = seedPieces(s, 'a')
        expect(again).toContain(3)
        expect(again).not.toContain(a[0])
      })

      it('passes a grant on when it lapses or its child fails', () => {
        const s = swarm(2, 'a', 'b', 'c')
        const a = seedPieces(s, 'a')
        const b = seedPieces(s, 'b')
        expect([a, b]).toEqual([[0], [1]])
        expect(seedPieces(s, 'c')).toEqual([])
        s.reportPieces('b', report(T, [], { state: 'failed' }))
        expect(seedPieces(s, 'c')).toEqual(b)
        advance(2_000)
        register(s, 'e')
        expect(seedPieces(s, 'e')).toEqual(a)
      })

      it('offers everything once the seed is done and every piece is out', () => {
        const s = swarm(2, 'a', 'b')
        s.reportPieces('a', report(T, [ok(0, SEED)]))
        // The seed has finished, but piece 1 is still on the seed alone: granted, one child.
        s.reportPieces(SEED, report(T, [], { state: 'succeeded', sha256: digest(99) }))
        expect(seedPieces(s, 'b')).toEqual([1])
        s.reportPieces('a', report(T, [ok(1, SEED)], { state: 'succeeded' }))
        // Now a slow holder can be bypassed: the seed offers both pieces (b still prefers a).
        expect(seedPieces(s, 'b')).toEqual([0, 1])
      })

      it('a lone child is granted every seed piece (its own window paces it, not the polls)', () => {
        const s = swarm(20, 'a')
        expect(seedPieces(s, 'a')).toEqual([...Array(20).keys()])
        s.reportPieces('a', report(T, [ok(0, SEED), ok(1, SEED), ok(2, SEED)]))
        expect(seedPieces(s, 'a')).toEqual([...Array(17).keys()].map((n) => n + 3))
      })

      it('takes back what a lone child was granted beyond the window once a second child runs', () => {
        const s = swarm(40, 'a')
        expect(seedPieces(s, 'a')).toEqual([...Array(40).keys()])
        register(s, 'b')
        // b is handed a piece a no longer holds a grant for; a keeps its lowest 16, which its
        // own window may have asked for already.
        const b = seedPieces(s, 'b')
        expect(b.length).toBeGreaterThan(0)
        expect(b.every((n) => n >= 16)).toBe(true)
        const a = seedPieces(s, 'a')
        expect(a.slice(0, 16)).toEqual([...Array(16).keys()])
        expect(a.some((n) => b.includes(n))).toBe(false)
      })

      it('offers the pieces the seed is still fetching, so that a child streams them as they arrive', () => {
        const s = withSeed()
        register(s, 'a')
        register(s, 'b')
        // The seed knows the layout (the origin's headers) but holds no piece yet.
        s.reportPieces(SEED, report(T, [], { contentLength: 40 * PIECE, pieceSize: PIECE, pieceCount: 40 }))
        const seen = s.getParents('a', T, 32).parents.find((p) => p.isSeed)
        expect(seen).toBeDefined()
        expect([...Bitmap.from(seen!.bitmap).pieces()]).toEqual([0])
        // In turn: each child streams different pieces, and can pass them to the other.
        expect(seedPieces(s, 'b')).toEqual([1])
        expect(seedPieces(s, 'a')).toEqual([0, 2])
        expect(seedPieces(s, 'b')).toEqual([1, 3])
        // Pieces granted while coming stay granted while the origin is slow.
        advance(60_000)
        s.announceHost('a', hostInfo('a'))
        s.announceHost('b', hostInfo('b'))
        expect(seedPieces(s, 'a')).toEqual([0, 2, 4])
      })
    })

    it('respects the limit (8 by default, at most 32)', () => {
      const peers = Array.from({ length: 40 }, (_, i) => `p${i}`)
      const s = swarm(1, 'me', ...peers)
      for (const p of peers) s.reportPieces(p, report(T, [ok(0, SEED)]))
      expect(parentIds(s, 'me', 1)).toHaveLength(1)
      expect(parentIds(s, 'me', 0)).toHaveLength(8)
      expect(parentIds(s, 'me', 100)).toHaveLength(32)
    })

    it('ranks by score, highest first', () => {
      const s = swarm(4, 'a', 'b', 'c')
      s.reportPieces('a', report(T, [ok(0, SEED)]))
      const ranked = s.getParents('c', T, 32).parents.map((p) => p.score)
      expect(ranked).toEqual([...ranked].sort((x, y) => y - x))
    })

    it('scores a holder of rare pieces above a holder of common ones', () => {
      const s = noSeed()
      for (const p of ['src', 'rare', 'common1', 'common2', 'me']) register(s, p)
      publish(s, 'src', 4)
      s.reportPieces('src', report(T, [], { state: 'succeeded' }))
      // 'rare' alone (besides the source) holds piece 1; piece 0 is everywhere.
      s.reportPieces('rare', report(T, [ok(1, 'src')]))
      s.reportPieces('common1', report(T, [ok(0, 'src')]))
      s.reportPieces('common2', report(T, [ok(0, 'src')]))
      // Equalise everything else the scores depend on.
      for (const h of ['src', 'rare', 'common1', 'common2']) Object.assign(s.hosts.get(h)!, { goodPieces: 0, badPieces: 0, failedPieces: 0, bandwidth: 0 })
      advance(2_000) // the edges to src no longer count as busy upload slots
      const sc = scores(s, 'me')
      expect(sc.get('rare')!).toBeGreaterThan(sc.get('common1')!)
      expect(sc.get('common1')).toBeCloseTo(sc.get('common2')!)
      expect(parentIds(s, 'me').indexOf('rare')).toBeLessThan(parentIds(s, 'me').indexOf('common1'))
    })

    it('counts pieces past the first bitmap byte, and what the requester holds there', () => {
      const s = noSeed()
      for (const p of ['src', 'a', 'b', 'me']) register(s, p)
      publish(s, 'src', 40)
      s.reportPieces('src', report(T, [], { state: 'succeeded' }))
      // a and b each hold one piece in a later byte; the requester already has b's.
      s.reportPieces('a', report(T, [ok(33, 'src')]))
      s.reportPieces('b', report(T, [ok(17, 'src')]))
      s.reportPieces('me', report(T, [ok(17, 'src')]))
      advance(2_000) // the edges to src no longer count as busy upload slots
      expect(parentIds(s, 'me')).toContain('a')
      expect(parentIds(s, 'me')).not.toContain('b')
    })

    it('scores a parent in the requester\'s data centre higher', () => {
      const s = swarm(2, 'near', 'far', 'me')
      s.announceHost('me', hostInfo('me', { idc: 'dc1', location: 'eu|fr|par' }))
      s.announceHost('near', hostInfo('near', { idc: 'dc1', location: 'eu|fr|par' }))
      s.announceHost('far', hostInfo('far', { idc: 'dc9', location: 'us|ca|sfo' }))
      for (const p of ['near', 'far']) s.reportPieces(p, report(T, [ok(0, SEED)]))
      const sc = scores(s, 'me')
      expect(sc.get('near')! - sc.get('far')!).toBeCloseTo(WEIGHTS.locality)
    })

    it('scores a parent that sent bad pieces lower', () => {
      const s = swarm(2, 'good', 'liar', 'victim', 'me')
      for (const p of ['good', 'liar']) s.reportPieces(p, report(T, [ok(0, SEED)]))
      const before = scores(s, 'me')
      expect(before.get('liar')).toBeCloseTo(before.get('good')!)
      s.reportPieces('victim', report(T, [bad(0, 'liar', 'DFD_ERR_PIECE_DIGEST')]))
      const after = scores(s, 'me')
      expect(after.get('liar')!).toBeLessThan(after.get('good')!)
      expect(after.get('good')).toBeCloseTo(before.get('good')!)
    })

    it('scores a parent with busy upload slots lower', () => {
      const s = swarm(4, 'busy', 'idle', 'k1', 'k2', 'me')
      for (const p of ['busy', 'idle']) s.reportPieces(p, report(T, [ok(0, SEED), ok(1, SEED)]))
      for (const k of ['k1', 'k2']) s.reportPieces(k, report(T, [ok(0, 'busy')]))
      // The good pieces also credited 'busy'; undo that so only the children differ.
      Object.assign(s.hosts.get('busy')!, { goodPieces: 0 })
      const sc = scores(s, 'me')
      expect(sc.get('idle')! - sc.get('busy')!).toBeCloseTo(WEIGHTS.freeSlots * (2 / 4))
    })

    it('applies plugin filters and scorers', () => {
      const s = swarm(2, 'a', 'b', 'me')
      for (const p of ['a', 'b']) s.reportPieces(p, report(T, [ok(0, SEED)]))
      s.filters.push((c) => c.peer.hostId !== 'b')
      s.scorers.push((c) => (c.peer.hostId === 'a' ? 10 : 0))
      const res = s.getParents('me', T, 8).parents
      expect(res.map((p) => p.id)).toEqual(['a', SEED])
      expect(res[0].score).toBeGreaterThan(10)
    })
  })

  describe('leaving', () => {
    it('leaveHost removes the host\'s peers from every task and stops offering it', () => {
      const s = noSeed()
      const T2 = taskId('other')
      register(s, 'a')
      register(s, 'a', T2, 'http://origin/other')
      register(s, 'b')
      register(s, 'c')
      s.reportPieces('b', report(T, [ok(0, 'a')]))
      s.leaveHost('b')
      expect(s.tasks.get(T)!.peers.has('b')).toBe(false)
      expect(s.hosts.get('b')!.gone).toBe(true)
      expect(persist.of('deletePeer')).toEqual([[T, 'b']])
      expect(parentIds(s, 'c')).not.toContain('b')

      s.leaveHost('a')
      expect(s.tasks.get(T)!.peers.has('a')).toBe(false)
      expect(s.tasks.get(T2)!.peers.has('a')).toBe(false)
      expect(persist.of('deletePeer')).toEqual([[T, 'b'], [T, 'a'], [T2, 'a']])
      s.leaveHost('unknown')
      expect(persist.of('deletePeer')).toHaveLength(3)
    })

    it('when the back-to-source peer leaves, the next registration picks a new one', () => {
      const s = noSeed()
      register(s, 'a')
      register(s, 'b')
      s.leaveHost('a')
      expect(register(s, 'c').backToSource).toBe(true)
      expect(s.tasks.get(T)!.backSourcePeer).toBe('c')
    })

    it('leaveTask removes one peer', () => {
      const s = noSeed()
      register(s, 'a')
      register(s, 'b')
      s.leaveTask('b', T)
      expect([...s.tasks.get(T)!.peers.keys()]).toEqual(['a'])
      expect(persist.of('deletePeer')).toEqual([[T, 'b']])
      s.leaveTask('b', T)
      s.leaveTask('b', taskId('nope'))
      expect(persist.of('deletePeer')).toHaveLength(1)
    })
  })

  it('announceHost records the host, marks the seed and persists it', () => {
    const s = withSeed()
    s.announceHost('a', hostInfo('wrong-id', { isSeed: true }))
    expect(s.hosts.get('a')!.info.id).toBe('a')
    expect(s.hosts.get('a')!.info.isSeed).toBe(false)
    expect(s.hosts.get(SEED)!.info.isSeed).toBe(true)
    expect(s.hosts.get('a')!.lastSeen).toBe(now)
    expect(persist.of('markHost')).toEqual([[SEED], ['a']])
  })
})

describe('scoring', () => {
  const h = (extra: Partial<Host>): Host => hostInfo('x', extra)
  const state = (extra: Partial<HostState> = {}): HostState =>
    ({ info: hostInfo('x'), lastSeen: 0, bandwidth: 0, goodPieces: 0, badPieces: 0, failedPieces: 0, consecutiveFailures: 0, gone: false, ...extra })

  it('locality: same idc is worth half, the rest is the shared location prefix', () => {
    expect(locality(undefined, h({ idc: 'a' }))).toBe(0)
    expect(locality(h({}), h({}))).toBe(0)
    expect(locality(h({ idc: 'a' }), h({ idc: 'a' }))).toBe(0.5)
    expect(locality(h({ idc: 'a' }), h({ idc: 'b' }))).toBe(0)
    expect(locality(h({ location: 'eu|fr|par' }), h({ location: 'eu|fr|lyon' }))).toBeCloseTo(0.5 * 2 / 3)
    expect(locality(h({ idc: 'a', location: 'eu|fr' }), h({ idc: 'a', location: 'eu|fr' }))).toBe(1)
    expect(locality(h({ location: 'eu' }), h({ location: 'us|ca' }))).toBe(0)
    // Levels compare whole: a level that is a prefix of the other's is not the same level.
    expect(locality(h({ location: 'eu|fr' }), h({ location: 'eu|fra' }))).toBeCloseTo(0.5 * 1 / 2)
    expect(locality(h({ location: 'eu' }), h({ location: 'eu|fr|par' }))).toBeCloseTo(0.5 * 1 / 3)
    expect(locality(h({ location: 'eu||par' }), h({ location: 'eu||lyon' }))).toBeCloseTo(0.5 * 2 / 3)
  })

  it('health: 1 when clean, lower with bad, failed and consecutive failures', () => {
    expect(health(state())).toBe(1)
    expect(health(state({ badPieces: 1 }))).toBeCloseTo(1 / 3)
    expect(health(state({ failedPieces: 5 }))).toBeCloseTo(1 / 2)
    expect(health(state({ consecutiveFailures: 1 }))).toBeCloseTo(1 / 2)
    expect(health(state({ badPieces: 1 }))).toBeLessThan(health(state({ failedPieces: 1 })))
  })

  it('scoreCandidate weighs the terms, each in [0, 1]', () => {
    const peer: PeerState = { hostId: 'x', state: 'running', bitmap: undefined as never, parents: new Map(), blocked: new Set(), updatedAt: 0 }
    const best = scoreCandidate({ peer, host: state({ bandwidth: 100, info: h({ idc: 'a', location: 'l' }) }), useful: 10, children: 0 },
      { requester: h({ idc: 'a', location: 'l' }), maxBandwidth: 100, missing: 10 })
    expect(best).toBeCloseTo(1)
    const worst = scoreCandidate({ peer, host: state({ bandwidth: 0, info: h({ uploadSlots: 2 }) }), useful: 0, children: 5 },
      { requester: undefined, maxBandwidth: 100, missing: 10 })
    expect(worst).toBeCloseTo(WEIGHTS.health)
    // Unknown bandwidth everywhere counts as average.
    const unknown = scoreCandidate({ peer, host: state(), useful: 0, children: 4 }, { requester: undefined, maxBandwidth: 0, missing: 1 })
    expect(unknown).toBeCloseTo(WEIGHTS.health + WEIGHTS.bandwidth * 0.5)
  })
})
