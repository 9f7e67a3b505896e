// Load generator for the scheduler-scale scenario: one process simulating many peers, each
// with its own Ed25519 identity (the scheduler knows a peer by the Noise-authenticated key of
// its connection, never by a message field), speaking the real scheduler protocol over the
// fabric (libp2p: TCP + Noise + yamux) to one supernode, or to several of one cluster.
//
//   node bench/load/scheduler-peers.ts --supernode MULTIADDR/p2p/ID --http URL --token JOIN_TOKEN
//        --origin URL --first 0 --count 250 --tasks 5 --pieces 128 --keys DIR --live 32 --duration 20s
//        [--model daemon --rate 30 | --model rounds --batch 4 --parents-every 2]
//
// Every peer joins the cluster first, as a dfdaemon does (a join request with the token's
// proof to the supernode's HTTP API, then a fabric node that shows its credential); task t
// is `ORIGIN/scheduler-scale/task-t`, which the origin serves to anyone (a public task).
//
// Peer i belongs to task i % tasks. The supernode runs without a seed, so the first peer to
// register a task is its back-to-source peer; it publishes the piece digests and succeeds.
//
// Phase 1 (register, on start): every peer of the range connects, announces its host,
// registers its task, reports a random half of the pieces (from random peers of its task)
// and disconnects; `--live` peers at a time. Prints {"registered":N,"ms":…}.
// Phase 2 (on a line `connect` on stdin; `--model daemon`): `--live` peers, spread over the
// range, connect and announce; prints {"connected":N}. Phase 3 (load, on a line `go`, so
// that all generators start together), for `--duration`, by model:
//   daemon (default): each connected peer behaves as a downloading dfdaemon: it fetches
//     `--rate` pieces a second (a fresh download of its task: leave, register, every piece
//     once in random order, succeeded, again; the first joined at a random piece, so that the
//     downloads do not end together; each piece from one of the parents the last getParents
//     named), reports them on a beat of `--beat` (the pace when longer; the last ones at
//     once, as a dfdaemon's completed download does) and asks
//     for parents every `--poll` (the supernode's pace when longer, as a dfdaemon does),
//     naming the digests it holds. The offered load is live × rate reports a second.
//   rounds: `--live` sessions at a time; a session takes the next peer of the range,
//     connects and runs rounds as fast as answers come: one reportPieces of `--batch`
//     results and every `--parents-every` rounds a getParents, `--rounds` rounds, then the
//     next peer takes its place (a closed loop: what the supernode sustains flat out).
// getParents calls are timed. Prints one summary line at the end.
// Calls go over one scheduler session per peer (/naiad/scheduler/1.1.0, as a dfdaemon's
// do); `--protocol stream` uses a stream per call (1.0.0, daemons before sessions) instead,
// to compare the two side by side.
// Several supernodes (`--supernode` and `--http` given once for each, in the same order, all
// live in one cluster): the peers behave like a dfdaemon's cluster client. Each joins at one
// of them (peer i at supernode i mod n: the credential holds at every member), dials each and
// announces its host to each, registers its task with the task's owner (proto's ownerOf over
// the supernodes' IDs) and sends that task's calls there only. The summary counts the piece
// reports each supernode acknowledged.
// Everything is bounded: the duration, a call timeout of 5 s, and stdin closing stops it.

import { mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import { monitorEventLoopDelay } from 'node:perf_hooks'
import { createInterface } from 'node:readline'
import { parseArgs } from 'node:util'

import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { tcp, type TCPSocketOptions } from '@libp2p/tcp'
import { multiaddr } from '@multiformats/multiaddr'
import { createLibp2p } from 'libp2p'
import {
  ClusterVerifier, guardNode, joinRequest, lazyWindowUpdates, MemberGuard, batchedWrites, PROTOCOLS, RpcSession, SchedulerRequest, SchedulerResponse, call, loadIdentity,
  ownerOf, parseDuration, parseToken, raiseRemote, taskIdOf, type FabricNode, type PieceResult
} from '@naiad/proto'

const { values } = parseArgs({
  options: {
    supernode: { type: 'string', multiple: true },
    http: { type: 'string', multiple: true },
    token: { type: 'string' },
    origin: { type: 'string' },
    first: { type: 'string', default: '0' },
    count: { type: 'string', default: '100' },
    tasks: { type: 'string', default: '5' },
    pieces: { type: 'string', default: '128' },
    keys: { type: 'string' },
    live: { type: 'string', default: '32' },
    duration: { type: 'string', default: '20s' },
    batch: { type: 'string', default: '4' },
    'parents-every': { type: 'string', default: '2' },
    rounds: { type: 'string', default: '50' },
    model: { type: 'string', default: 'daemon' },
    rate: { type: 'string', default: '30' },
    beat: { type: 'string', default: '100ms' },
    poll: { type: 'string', default: '250ms' },
    warmup: { type: 'string', default: '2s' },
    protocol: { type: 'string', default: 'session' }
  }
})
if (values.supernode === undefined || values.keys === undefined || values.http === undefined || values.token === undefined || values.origin === undefined ||
  values.supernode.length !== values.http.length) {
  process.stderr.write('usage: scheduler-peers.ts (--supernode MULTIADDR --http URL)… --token JOIN_TOKEN --origin URL --keys DIR [--first N --count N --tasks N --pieces N --live N --duration D --model daemon|rounds --rate N --beat D --poll D --batch N --parents-every N --rounds N --protocol session|stream]\n')
  process.exit(2)
}
/** The supernodes, in the order given; a task's calls go to targets[ownerIndex(t)]. */
const targets = values.supernode.map((a) => multiaddr(a))
const https = values.http
const memberIds = values.supernode.map((a) => a.slice(a.lastIndexOf('/p2p/') + 5))
if (values.supernode.some((a) => !a.includes('/p2p/'))) {
  process.stderr.write('--supernode: each multiaddr must end in /p2p/<id>\n')
  process.exit(2)
}
const first = Number(values.first)
const count = Number(values.count)
const tasks = Number(values.tasks)
const pieceCount = Number(values.pieces)
const live = Number(values.live)
const durationMs = parseDuration(values.duration, '--duration')
const warmupMs = parseDuration(values.warmup, '--warmup')
const batch = Number(values.batch)
const parentsEvery = Number(values['parents-every'])
const rounds = Number(values.rounds)
const model = values.model
const rate = Number(values.rate)
const beatMs = parseDuration(values.beat, '--beat')
const pollMs = parseDuration(values.poll, '--poll')
if (model !== 'daemon' && model !== 'rounds') {
  process.stderr.write(`--model is daemon or rounds, not ${model}\n`)
  process.exit(2)
}
if (values.protocol !== 'session' && values.protocol !== 'stream') {
  process.stderr.write(`--protocol is session or stream, not ${values.protocol}\n`)
  process.exit(2)
}
const perCall = values.protocol === 'stream'
const joinToken = parseToken(values.token)
const verifier = new ClusterVerifier(joinToken.claims.cluster!)
/** Each peer's membership credential, earned once (phase 2 reconnects the same peers). */
const credentials = new Map<number, Uint8Array>()
const PIECE_SIZE = 4 * 1024 * 1024
const CALL_TIMEOUT_MS = 5_000

const stop = new AbortController()
let go: () => void = () => {}
let connect: () => void = () => {}
const started = new Promise<void>((resolve) => { go = resolve })
const connecting = new Promise<void>((resolve) => { connect = resolve })
const stdin = createInterface({ input: process.stdin })
stdin.on('line', (line) => {
  if (line.trim() === 'go') go()
  if (line.trim() === 'connect') connect()
})
stdin.on('close', () => { stop.abort(new Error('stdin closed')); connect(); go() })

const out = (msg: Record<string, unknown>): void => { process.stdout.write(`${JSON.stringify(msg)}\n`) }

const taskUrl = (t: number): string => `${values.origin}/scheduler-scale/task-${t}`
/** The scheduler recomputes a task's ID from its URL: every generator derives the same. */
const taskId = (t: number): string => taskIdOf({ url: taskUrl(t) })
/** Index of the supernode that owns task t, as a daemon's cluster client works it out. */
const owners = Array.from({ length: tasks }, (_, t) => memberIds.indexOf(ownerOf(taskId(t), memberIds)!))
const ownerIndex = (t: number): number => owners[t]
const peerIds = new Map<number, string>()
const random = (n: number): number => Math.floor(Math.random() * n)

export interface Stats {
  reportCalls: number
  pieceReports: number
  /** Piece reports acknowledged by each supernode (in the order given). */
  pieceReportsBy: number[]
  parentsCalls: number
  parentsMs: number[]
  /** When each timed getParents went out, ms into the window. */
  parentsAt: number[]
  /** get_parents answered SN_ERR_BUSY (in the window). */
  busy: number
  /** Piece results produced in the window (daemon model): what was offered. */
  offered: number
  /** The largest pace an answer asked for, and the pace of answers summed (for the mean). */
  paceMaxMs: number
  paceSumMs: number
  paceAnswers: number
  errors: number
  errorCodes: Record<string, number>
  sessions: number
  connectMs: number[]
}
const fresh = (): Stats => ({ reportCalls: 0, pieceReports: 0, pieceReportsBy: targets.map(() => 0), parentsCalls: 0, parentsMs: [], parentsAt: [], busy: 0, offered: 0, paceMaxMs: 0, paceSumMs: 0, paceAnswers: 0, errors: 0, errorCodes: {}, sessions: 0, connectMs: [] })

/** A peer's way to the schedulers: its fabric node and, unless --protocol stream, a session with each supernode. */
interface Peer {
  node: FabricNode
  sessions: Array<RpcSession<typeof SchedulerRequest.fields, typeof SchedulerResponse.fields>>
}

/** A call to supernode `k` (the only one when there is one); raises the answer's error. */
async function rpc(peer: Peer, req: Partial<SchedulerRequest>, k = 0): Promise<SchedulerResponse> {
  const res = await rawCall(peer, req, k)
  raiseRemote(res.error)
  return res
}

/** A call whose answer may carry an error (SN_ERR_BUSY): returns the answer without raising it. */
async function rawCall(peer: Peer, req: Partial<SchedulerRequest>, k = 0): Promise<SchedulerResponse> {
  const options = { signal: stop.signal, timeoutMs: CALL_TIMEOUT_MS }
  return perCall
    ? call(peer.node, targets[k], PROTOCOLS.scheduler, SchedulerRequest, SchedulerResponse, req, options)
    : peer.sessions[k].call(req, options)
}

/** The host announced to every supernode, as a cluster daemon does (any of them may pick it as a parent). */
async function announceAll(peer: Peer, req: Partial<SchedulerRequest>): Promise<void> {
  await Promise.all(targets.map((_, k) => rpc(peer, req, k)))
}

/**
 * Peer i's own loopback source address (127.1.0.0/16 and up): the supernode sees every
 * synthetic peer come from its own host, as real peers would, so libp2p's per-host inbound
 * rate limit (5 connections/s) applies per peer, not to the whole load generator.
 */
const sourceIp = (i: number): string => `127.${1 + (i >> 16)}.${(i >> 8) & 255}.${(i & 255)}`

/** Connection set-ups in flight in this process (libp2p refuses more than 10 unfinished inbound handshakes). */
let opening = 0
const OPEN_AT_ONCE = 3

/** Peer i's fabric node: the same stack as a dfdaemon's (createFabricNode), dialling from its own address. */
async function open(i: number): Promise<Peer> {
  while (opening >= OPEN_AT_ONCE) await new Promise((r) => setTimeout(r, 2))
  opening++
  try {
    const node = await createLibp2p({
      privateKey: await loadIdentity(join(values.keys!, `peer-${i}`)),
      addresses: { listen: [] },
      // localAddress is handed on to net.connect, though TCPSocketOptions does not list it.
      transports: [tcp({ dialOpts: { localAddress: sourceIp(i) } as TCPSocketOptions })],
      connectionEncrypters: [batchedWrites(noise())],
      streamMuxers: [lazyWindowUpdates(yamux())],
      connectionMonitor: { enabled: false }
    })
    peerIds.set(i, node.peerId.toString())
    let credential = credentials.get(i)
    if (credential === undefined) {
      const res = await fetch(`${https[i % https.length]}/api/v1/join`, {
        method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(joinRequest(joinToken, node.peerId.toString())), signal: stop.signal
      })
      const body = await res.json() as { credential?: string; message?: string }
      if (!res.ok || body.credential === undefined) throw new Error(`peer ${i} could not join: HTTP ${res.status} ${body.message ?? ''}`)
      credential = Buffer.from(body.credential, 'base64')
      credentials.set(i, credential)
    }
    const own = credential
    await guardNode(node, new MemberGuard({ verifier: () => verifier, credential: () => own, revoked: () => false }))
    // Connect now, retrying refusals (the supernode's pending-handshake limit), so that the
    // scheduler calls after this measure the scheduler rather than connection set-up. Every
    // supernode at once, as a dfdaemon's cluster client reaches its members (each member's
    // client dials on its first call, and the host is announced to all together): one at a
    // time made registering with three cost 2.4-2.8 times one. Each supernode still sees at
    // most OPEN_AT_ONCE handshakes from this process.
    const dial = async (target: (typeof targets)[number]): Promise<void> => {
      for (let attempt = 0; ; attempt++) {
        try {
          await node.dial(target, { signal: AbortSignal.any([stop.signal, AbortSignal.timeout(CALL_TIMEOUT_MS)]) })
          return
        } catch (err) {
          dialRetries++
          if (attempt >= 8 || stop.signal.aborted) throw err
          await new Promise((r) => setTimeout(r, 20 * 2 ** attempt))
        }
      }
    }
    try {
      await Promise.all(targets.map(dial))
    } catch (err) {
      await node.stop()
      throw err
    }
    return { node, sessions: targets.map((target) => new RpcSession(node, () => target, PROTOCOLS.schedulerSession, SchedulerRequest, SchedulerResponse)) }
  } finally {
    opening--
  }
}
let dialRetries = 0

/** A parent for piece results: another peer of the same task whose ID this process knows. */
function parentFor(i: number): string {
  for (let k = 0; k < 4; k++) {
    const j = first + random(count)
    if (j !== i && j % tasks === i % tasks && peerIds.has(j)) return peerIds.get(j)!
  }
  return ''
}

/** Piece results for peer i, each from the parent `parent` names (a random peer of its task unless told). */
const pieces = (nums: number[], i: number, parent = (): string => parentFor(i)): PieceResult[] =>
  nums.map((num) => ({ num, parentId: parent(), length: PIECE_SIZE, costMs: 20 + random(80), sha256: new Uint8Array(0), errorCode: '' }))

async function register(i: number): Promise<void> {
  const peer = await open(i)
  try {
    const t = i % tasks
    const k = ownerIndex(t)
    await announceAll(peer, { announceHost: { id: '', hostname: `sim-${i}`, ip: sourceIp(i), idc: `idc-${i % 4}`, location: `zone|rack-${i % 16}`, multiaddrs: [`/ip4/${sourceIp(i)}/tcp/${20000 + (i % 40000)}`], uploadSlots: 4, isSeed: false, labels: [], dataPort: 0, dataTransport: '' } })
    const res = await rpc(peer, { registerTask: { taskId: taskId(t), url: taskUrl(t), headers: [], digest: '', range: '', filter: [] } }, k)
    if (res.task?.backToSource === true) {
      // The trusted peer: publishes the task's metadata and every piece digest, then succeeds.
      const all = Array.from({ length: pieceCount }, (_, n) => ({ num: n, parentId: '', length: PIECE_SIZE, costMs: 0, sha256: new Uint8Array(32).fill(n & 0xff), errorCode: '' }))
      await rpc(peer, { reportPieces: { taskId: taskId(t), results: all, contentLength: pieceCount * PIECE_SIZE, pieceSize: PIECE_SIZE, pieceCount, sha256: new Uint8Array(32).fill(7), state: 'succeeded', error: undefined } }, k)
    } else {
      const nums = Array.from({ length: pieceCount }, (_, n) => n).filter(() => Math.random() < 0.5)
      await rpc(peer, { reportPieces: { taskId: taskId(t), results: pieces(nums, i), contentLength: 0, pieceSize: 0, pieceCount: 0, sha256: new Uint8Array(0), state: '', error: undefined } }, k)
    }
  } finally {
    await peer.node.stop()
  }
}

/** Runs `worker` over items with at most `n` at once, until the items run out or `until` says stop. */
async function pool(n: number, next: () => number | undefined, worker: (i: number) => Promise<void>): Promise<void> {
  await Promise.all(Array.from({ length: n }, async () => {
    for (let i = next(); i !== undefined && !stop.signal.aborted; i = next()) await worker(i)
  }))
}

function countError(s: Stats, err: unknown): void {
  s.errors++
  const code = (err as { code?: string }).code ?? (err as Error).name ?? 'Error'
  s.errorCodes[code] = (s.errorCodes[code] ?? 0) + 1
  if (s.errors <= 3) process.stderr.write(`scheduler-peers: ${(err as Error).message} ${String((err as Error).cause ?? '')}\n`)
}

// ---------------------------------------------------------------- phase 1

const reg = fresh()
const t0 = performance.now()
await mkdir(values.keys, { recursive: true })
let nextReg = first
await pool(live, () => (nextReg < first + count ? nextReg++ : undefined), async (i) => {
  try {
    await register(i)
  } catch (err) {
    countError(reg, err)
  }
})
out({ registered: count - reg.errors, errors: reg.errors, errorCodes: reg.errorCodes, ms: Math.round(performance.now() - t0) })

// ---------------------------------------------------------------- phase 2 (daemon model)

const hostOf = (i: number): Partial<SchedulerRequest> => ({
  announceHost: { id: '', hostname: `sim-${i}`, ip: '127.0.0.1', idc: `idc-${i % 4}`, location: `zone|rack-${i % 16}`, multiaddrs: [`/ip4/127.0.0.1/tcp/${20000 + (i % 40000)}`], uploadSlots: 4, isSeed: false, labels: [], dataPort: 0, dataTransport: '' }
})
const registration = (t: number): Partial<SchedulerRequest> => ({ registerTask: { taskId: taskId(t), url: taskUrl(t), headers: [], digest: '', range: '', filter: [] } })

await connecting
const load = fresh()
/** Peers connected for the daemon model: spread evenly over this process's range (and so over the tasks). */
const connected: Array<{ i: number; peer: Peer }> = []
if (model === 'daemon') {
  const step = Math.max(1, Math.floor(count / live))
  let k = 0
  await pool(Math.min(live, 8), () => (k < live && k * step < count ? first + step * k++ : undefined), async (i) => {
    const c0 = performance.now()
    try {
      const peer = await open(i)
      await announceAll(peer, hostOf(i))
      connected.push({ i, peer })
      load.connectMs.push(Math.round((performance.now() - c0) * 10) / 10)
    } catch (err) {
      countError(load, err)
    }
  })
}
out({ connected: connected.length })

// ---------------------------------------------------------------- phase 3

await started
const cpu0 = process.cpuUsage()
const start = performance.now()
/** Wall clock at the start of the window, so that a run's timings line up with other processes' (loop-probe.ts). */
const startedAt = Date.now()
// This process's own event-loop lag in the window: a getParents timed here includes the time
// its answer waited for this loop, which a daemon with one task would not (it reads the same
// latency next to the supernode's). Reset at the end of the warm-up, read at the end.
const ownLag = monitorEventLoopDelay({ resolution: 5 })
ownLag.enable()
setTimeout(() => ownLag.reset(), warmupMs).unref()
const measureFrom = start + warmupMs
const end = start + durationMs
const deadline = setTimeout(() => stop.abort(new Error('duration over')), durationMs + CALL_TIMEOUT_MS + 2000)
const inWindow = (t: number): boolean => t >= measureFrom && t <= end
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)))

/** Keeps a timed getParents (sent at q0, answered at q1). */
function timed(q0: number, q1: number): void {
  if (load.parentsMs.length >= 500_000) return
  load.parentsMs.push(Math.round((q1 - q0) * 100) / 100)
  load.parentsAt.push(Math.round(q0 - measureFrom))
}

/** Notes the pace an answer asked for. */
function paced(res: SchedulerResponse): number {
  if (inWindow(performance.now())) {
    load.paceMaxMs = Math.max(load.paceMaxMs, res.paceMs)
    load.paceSumMs += res.paceMs
    load.paceAnswers++
  }
  return res.paceMs
}

/**
 * One downloading daemon: pieces arrive at `rate` a second; results go out on the beat (or
 * the pace), at most one report in flight; parents are polled every `poll` (or the pace),
 * naming the digests held. When every piece is in, the download starts over.
 */
async function daemon(i: number, peer: Peer): Promise<void> {
  const t = i % tasks
  const id = taskId(t)
  const k = ownerIndex(t)
  let pace = 0
  let known = { epoch: 0, count: 0 }
  let order: number[] = []
  let next = 0
  let pending: PieceResult[] = []
  // The parents the last getParents answer named: a daemon fetches its pieces from those, and
  // its reports name them. Drawn from every peer of the task instead, a second's reports
  // named thousands of hosts, whose counters the supernode then kept and wrote.
  let given: string[] = []
  const parentOf = (): string => (given.length > 0 ? given[random(given.length)] : parentFor(i))
  const restart = async (): Promise<void> => {
    await rpc(peer, { leaveTask: { taskId: id } }, k)
    paced(await rpc(peer, registration(t), k))
    order = Array.from({ length: pieceCount }, (_, n) => n)
    for (let k = order.length - 1; k > 0; k--) {
      const j = random(k + 1)
      const x = order[k]
      order[k] = order[j]
      order[j] = x
    }
    next = 0
  }
  // Daemons start their downloads when their pulls begin, not in one millisecond: each
  // synthetic daemon starts at a random point of the first poll interval and keeps a beat of
  // its own phase (as a dfdaemon's ReportBatcher does per process). Started together, the
  // 768 of them sent their first calls, and every call a pace later, in one burst that no
  // fleet of real daemons sends. The start falls in the warm-up, which is not counted.
  // For the same reason the first download is joined part-way, at a random piece of its
  // order: every download lasts the same pieces at the same rate, so daemons that all began
  // at piece 0 finished together, and every 4-5 s the 768 of them left, registered again and
  // polled in the same quarter second (10,000 peers: the window's p99 was set by those waves,
  // 124-191 ms in the seconds they fell in). A fleet's downloads are at every stage at once.
  await sleep(Math.random() * pollMs)
  await restart()
  next = random(order.length)
  let produced = performance.now()
  let finished = false
  const reporter = async (): Promise<void> => {
    await sleep(Math.random() * beatMs)
    while (performance.now() < end && !stop.signal.aborted) {
      // The next beat, or the moment the download's last piece is in if that comes first: a
      // dfdaemon sends its final report when its download completes (peer-task.ts flushes it
      // then), not on the beat. Waiting for the beat left the peer idle half a pace on
      // average before its next download, so a longer pace cut the load it offered. A final
      // report that failed waits for the beat like any other: at once, it would retry in a
      // tight loop.
      const lastInMs = finished ? Infinity : produced + ((order.length - next) / rate) * 1000 - performance.now() + 1
      await sleep(Math.min(Math.max(beatMs, pace), lastInMs))
      const now = performance.now()
      // Pieces that arrived since the last beat: the download goes on whatever the reports do.
      const due = Math.floor(((now - produced) / 1000) * rate)
      produced += (due / rate) * 1000
      for (let k = 0; k < due && !finished; k++) {
        pending.push(...pieces([order[next++]], i, parentOf))
        if (inWindow(now)) load.offered++
        finished = next >= order.length
      }
      if (pending.length === 0 && !finished) continue
      const results = pending
      pending = []
      try {
        const res = await rpc(peer, { reportPieces: { taskId: id, results, contentLength: 0, pieceSize: 0, pieceCount: 0, sha256: new Uint8Array(0), state: finished ? 'succeeded' : '', error: undefined } }, k)
        pace = paced(res)
        if (inWindow(performance.now())) {
          load.reportCalls++
          load.pieceReports += results.length
          load.pieceReportsBy[k] += results.length
        }
        if (finished) {
          // The next download starts where this one ended (no time lost to the reports).
          await restart()
          finished = false
        }
      } catch (err) {
        pending = results.concat(pending)
        countError(load, err)
      }
    }
  }
  const poller = async (): Promise<void> => {
    while (performance.now() < end && !stop.signal.aborted) {
      await sleep(Math.max(pollMs, pace))
      const q0 = performance.now()
      if (q0 >= end) break
      try {
        const res = await rawCall(peer, { getParents: { taskId: id, limit: 8, digestEpoch: known.epoch, digests: known.count } }, k)
        const q1 = performance.now()
        pace = paced(res)
        if (res.error?.code === 'SN_ERR_BUSY') {
          if (inWindow(q0)) load.busy++
          continue
        }
        raiseRemote(res.error)
        const task = res.parents?.task
        if (task !== undefined && task.digestEpoch !== 0) known = { epoch: task.digestEpoch, count: task.piecesFrom + task.pieces.length }
        if (res.parents !== undefined && res.parents.parents.length > 0) given = res.parents.parents.map((p) => p.id)
        if (inWindow(q0) && q1 <= end) {
          load.parentsCalls++
          timed(q0, q1)
        }
      } catch (err) {
        countError(load, err)
      }
    }
  }
  await Promise.all([reporter(), poller()])
}

/** Where each peer got to in its pieces (rounds model): a session continues where the peer's last one stopped. */
const progress = new Map<number, number>()
let nextPeer = first

/** One closed-loop session (rounds model). */
async function session(i: number): Promise<void> {
  const c0 = performance.now()
  let peer: Peer | undefined
  try {
    peer = await open(i)
    const t = i % tasks
    const k = ownerIndex(t)
    // The first call dials: connection set-up is timed apart from the scheduler's work.
    await announceAll(peer, hostOf(i))
    if (load.connectMs.length < 100_000) load.connectMs.push(Math.round((performance.now() - c0) * 10) / 10)
    load.sessions++
    for (let r = 0; r < rounds && performance.now() < end && !stop.signal.aborted; r++) {
      const p = progress.get(i) ?? random(pieceCount)
      const nums = Array.from({ length: batch }, (_, k) => (p + k) % pieceCount)
      progress.set(i, (p + batch) % pieceCount)
      try {
        await rpc(peer, { reportPieces: { taskId: taskId(t), results: pieces(nums, i), contentLength: 0, pieceSize: 0, pieceCount: 0, sha256: new Uint8Array(0), state: '', error: undefined } }, k)
        if (inWindow(performance.now())) {
          load.reportCalls++
          load.pieceReports += batch
          load.pieceReportsBy[k] += batch
        }
      } catch (err) {
        countError(load, err)
      }
      if ((r + 1) % parentsEvery !== 0 || performance.now() >= end) continue
      const q0 = performance.now()
      try {
        await rpc(peer, { getParents: { taskId: taskId(t), limit: 8, digestEpoch: 0, digests: 0 } }, k)
        const q1 = performance.now()
        if (q0 >= measureFrom && q1 <= end) {
          load.parentsCalls++
          timed(q0, q1)
        }
      } catch (err) {
        countError(load, err)
      }
    }
  } catch (err) {
    countError(load, err)
  } finally {
    try {
      await peer?.node.stop()
    } catch { /* already closed */ }
  }
}

if (model === 'daemon') {
  load.sessions = connected.length
  await Promise.all(connected.map(({ i, peer }) => daemon(i, peer).catch((err: unknown) => countError(load, err))))
} else {
  await pool(live, () => {
    if (performance.now() >= end) return undefined
    const i = nextPeer
    nextPeer = nextPeer + 1 >= first + count ? first : nextPeer + 1
    return i
  }, session)
}
clearTimeout(deadline)
ownLag.disable()
const cpu = process.cpuUsage(cpu0)
const lagMs = (ns: number): number => Math.round(ns / 1e5) / 10
out({
  done: true, windowMs: Math.round(end - measureFrom), startedAt, warmupMs, dialRetries, cpuS: (cpu.user + cpu.system) / 1e6,
  loopLagP50Ms: lagMs(ownLag.percentile(50)), loopLagP99Ms: lagMs(ownLag.percentile(99)), loopLagMaxMs: lagMs(ownLag.max), ...load
})
for (const { peer } of connected) {
  try {
    await peer.node.stop()
  } catch { /* already closed */ }
}
// Stay until told (stdin closes), so the caller's CPU accounting still finds this process.
await Promise.race([new Promise((r) => stop.signal.addEventListener('abort', r, { once: true })), new Promise((r) => setTimeout(r, 30_000))])
process.exit(0)
