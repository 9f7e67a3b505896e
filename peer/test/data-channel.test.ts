// The data channel in one process: a piece store on each side, a server and a client
// proven to each other by their identity keys, pieces verified as they arrive. Both
// transports; a wrong identity, a refused admission or grant, a corrupt piece, a live piece
// streamed while its source writes it, cancellation and a dead server.

import { createHash, X509Certificate } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { generateKeyPair } from '@libp2p/crypto/keys'
import pino from 'pino'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { FRAME_HEADER_BYTES, NaiadError } from '@naiad/proto'
import { makeBlob } from '@naiad/testkit'

import { OPEN_ACCESS, type PeerAccess } from '../src/access/access.ts'
import { DataClient, type DataTarget } from '../src/channel/data-client.ts'
import { DataServer } from '../src/channel/data-server.ts'
import { nodeIdentity, peerIdOfCertificate, type NodeIdentity } from '../src/channel/identity.ts'
import { PieceWriter } from '../src/download/piece-writer.ts'
import { StagingPool } from '../src/download/staging.ts'
import { LivePieces } from '../src/storage/live-pieces.ts'
import { DiskPieceStore } from '../src/storage/piece-store.ts'

const PIECE = 1024 * 1024
const TASK = 'a'.repeat(64)
const logger = pino({ level: 'silent' })
const staging = new StagingPool()
const sha = (b: Uint8Array): Buffer => createHash('sha256').update(b).digest()

async function identity(): Promise<NodeIdentity> {
  return nodeIdentity(await generateKeyPair('Ed25519'))
}

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p
  } catch (err) {
    return (err as NaiadError).code ?? (err as Error).message
  }
  return 'resolved'
}

describe.each(['tls', 'tcp'] as const)('data channel over %s', (transport) => {
  let dir: string
  let up: DiskPieceStore
  let down: DiskPieceStore
  let live: LivePieces
  let server: DataServer
  let client: DataClient
  let serverId: NodeIdentity
  let clientId: NodeIdentity
  let blob: Buffer
  let target: DataTarget
  let serverAccess: PeerAccess
  let source = false

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'naiad-dc-'))
    up = new DiskPieceStore({ dir: join(dir, 'up'), quota: 1 << 30 })
    down = new DiskPieceStore({ dir: join(dir, 'down'), quota: 1 << 30 })
    live = new LivePieces()
    serverId = await identity()
    clientId = await identity()
    blob = makeBlob(4 * PIECE + 123, 'dc')
    up.ensureTask(TASK, 'http://origin/blob', PIECE)
    for (let num = 0; num < 4; num++) {
      const data = blob.subarray(num * PIECE, (num + 1) * PIECE)
      await up.writePiece(TASK, { num, offset: num * PIECE, length: data.length, sha256: sha(data) }, data)
    }
    down.ensureTask(TASK, 'http://origin/blob', PIECE)
    serverAccess = { ...OPEN_ACCESS }
    source = false
    server = new DataServer({
      store: up, live, isSource: () => source, identity: serverId,
      access: { credential: () => serverAccess.credential(), admit: (p, c, s) => serverAccess.admit(p, c, s), authorize: (p, t, g) => serverAccess.authorize(p, t, g) },
      logger
    }, { host: '127.0.0.1', port: 0, transport, slots: 8, chunkBytes: 256 * 1024 })
    await server.start()
    client = new DataClient({ identity: clientId, access: OPEN_ACCESS, logger }, { connectTimeoutMs: 5000, idleMs: 30_000 })
    target = { peerId: serverId.peerId, host: '127.0.0.1', port: server.port, transport }
  })

  afterEach(async () => {
    client.close()
    await server.stop()
    await up.close()
    await down.close()
    await rm(dir, { recursive: true, force: true })
  })

  async function fetchPiece(num: number, options: { expected?: Uint8Array; fromSource?: boolean; live?: boolean; to?: DataTarget; signal?: AbortSignal } = {}): Promise<PieceWriter> {
    const length = num === 4 ? 123 : PIECE
    const reservation = await down.reserve(TASK, length)
    const writer = new PieceWriter({
      store: down, taskId: TASK, piece: { num, offset: num * PIECE, length },
      expected: options.expected ?? sha(blob.subarray(num * PIECE, num * PIECE + length)), fromSource: options.fromSource ?? false, reservation, staging
    })
    try {
      await client.fetch(options.to ?? target, { taskId: TASK, num, grant: new Uint8Array([7]), live: options.live ?? false }, writer, { signal: options.signal ?? AbortSignal.timeout(10_000), idleMs: 5000 })
    } finally {
      await writer.settled()
      reservation.release()
    }
    return writer
  }

  it('moves pieces on one connection, pipelined, each verified and stored', async () => {
    await Promise.all([0, 1, 2, 3].map((num) => fetchPiece(num)))
    expect([...down.bitmap(TASK).pieces()]).toEqual([0, 1, 2, 3])
    expect((await down.read(TASK, 0, 4 * PIECE)).equals(blob.subarray(0, 4 * PIECE))).toBe(true)
    expect(server.activeUploads).toBe(0)
  })

  it('ends a stored piece with the whole content\'s digest once the task is complete, and without it before', async () => {
    const before = await fetchPiece(0, { fromSource: true })
    expect(before.contentSha256).toBeUndefined()
    await up.writePiece(TASK, { num: 4, offset: 4 * PIECE, length: 123, sha256: sha(blob.subarray(4 * PIECE)) }, blob.subarray(4 * PIECE))
    up.setTaskLength(TASK, blob.length, 5)
    up.complete(TASK, sha(blob))
    const after = await fetchPiece(1, { fromSource: true })
    expect(Buffer.from(after.contentSha256!).equals(sha(blob))).toBe(true)
  })

  it('hands the socket each DATA frame alone, header and bytes in one buffer', async () => {
    // Under TLS the buffers of one writev are joined into a fresh copy before they are
    // encrypted: piece bytes must never go out that way (a corked header + chunk did).
    const writev = vi.spyOn(Socket.prototype, '_writev')
    const write = vi.spyOn(Socket.prototype, '_write')
    try {
      await Promise.all([0, 1, 2, 3].map((num) => fetchPiece(num)))
      // Node passes a writev plain buffers, or { chunk } entries when they are not all buffers.
      const gathered = writev.mock.calls.flatMap(([chunks]) => chunks.map((c) => ((c as { chunk?: Buffer }).chunk ?? (c as unknown as Buffer)).length))
      expect(gathered.filter((n) => n > 4096)).toEqual([])
      const whole = write.mock.calls.filter(([chunk]) => (chunk as Buffer).length === FRAME_HEADER_BYTES + 256 * 1024)
      expect(whole).toHaveLength(16)
    } finally {
      writev.mockRestore()
      write.mockRestore()
    }
    expect((await down.read(TASK, 0, 4 * PIECE)).equals(blob.subarray(0, 4 * PIECE))).toBe(true)
  })

  it('refuses a server whose key is not the peer ID it was dialled as', async () => {
    const other = await identity()
    expect(await codeOf(fetchPiece(0, { to: { ...target, peerId: other.peerId } }))).toBe('PROTO_ERR_IDENTITY')
    expect(down.hasPiece(TASK, 0)).toBe(false)
  })

  it('stores nothing of a piece whose bytes do not match the trusted digest', async () => {
    expect(await codeOf(fetchPiece(1, { expected: sha(Buffer.from('something else')) }))).toBe('DFD_ERR_PIECE_DIGEST')
    expect(down.hasPiece(TASK, 1)).toBe(false)
    // The connection stays usable for the next piece.
    await fetchPiece(2)
    expect(down.hasPiece(TASK, 2)).toBe(true)
  })

  it('sends nothing to a peer without a grant, and nothing at all to a peer admission refuses', async () => {
    const seen: Array<{ peer: string; grant: number[] }> = []
    serverAccess.authorize = (peer, _task, grant) => { seen.push({ peer, grant: [...grant] }); return false }
    expect(await codeOf(fetchPiece(0))).toBe('DFD_ERR_PIECE_FORBIDDEN')
    expect(seen).toEqual([{ peer: clientId.peerId, grant: [7] }])
    serverAccess.authorize = () => true
    client.close()
    client = new DataClient({ identity: clientId, access: OPEN_ACCESS, logger }, { connectTimeoutMs: 5000, idleMs: 30_000 })
    const admitted: string[] = []
    serverAccess.admit = (peer) => { admitted.push(peer); return false }
    expect(['DFD_ERR_PIECE_FORBIDDEN', 'PROTO_ERR_DIAL', 'PROTO_ERR_DECODE']).toContain(await codeOf(fetchPiece(0)))
    expect(admitted).toEqual([clientId.peerId])
    expect(down.hasPiece(TASK, 0)).toBe(false)
  })

  it('streams a live piece from the source as it is written, checked against the digest that ends it', async () => {
    source = true
    const task = 'b'.repeat(64)
    up.ensureTask(task, 'http://origin/live', PIECE)
    down.ensureTask(task, 'http://origin/live', PIECE)
    live.begin(task)
    const data = blob.subarray(0, PIECE)
    const reservation = await down.reserve(task, PIECE)
    const writer = new PieceWriter({ store: down, taskId: task, piece: { num: 0, offset: 0, length: PIECE }, expected: undefined, fromSource: true, reservation, staging })
    const fetched = client.fetch(target, { taskId: task, num: 0, grant: new Uint8Array(0), live: true }, writer, { signal: AbortSignal.timeout(10_000), idleMs: 5000 })
    // The source opens the piece only after the request is waiting, and writes it in steps.
    await new Promise((r) => setTimeout(r, 50))
    const upRes = await up.reserve(task, PIECE)
    expect(writer.headerAt).toBe(0)
    const opened = Date.now()
    const lp = live.open(task, 0, 0, PIECE)
    for (let pos = 0; pos < PIECE; pos += PIECE / 4) {
      await up.writeAt(task, pos, data.subarray(pos, pos + PIECE / 4))
      lp.advance(pos + PIECE / 4)
      await new Promise((r) => setTimeout(r, 10))
    }
    lp.settle({ sha256: sha(data) })
    up.commitPiece(task, { num: 0, offset: 0, length: PIECE, sha256: sha(data) }, upRes)
    live.close(task, 0)
    await fetched
    expect(writer.sha256?.equals(sha(data))).toBe(true)
    expect((await down.read(task, 0, PIECE)).equals(data)).toBe(true)
    // The answer came when the source opened the piece, not when it was asked for (the pull timeline's wait on a live piece).
    expect(writer.headerAt).toBeGreaterThanOrEqual(opened)
    live.end(task, new NaiadError('PROTO_ERR_ABORTED', 'done'))
  })

  it('does not take a live piece\'s closing digest from a parent that is not the source', async () => {
    source = true
    const task = 'c'.repeat(64)
    up.ensureTask(task, 'http://origin/live2', PIECE)
    down.ensureTask(task, 'http://origin/live2', PIECE)
    live.begin(task)
    const reservation = await down.reserve(task, PIECE)
    const writer = new PieceWriter({ store: down, taskId: task, piece: { num: 0, offset: 0, length: PIECE }, expected: undefined, fromSource: false, reservation, staging })
    const fetched = codeOf(client.fetch(target, { taskId: task, num: 0, grant: new Uint8Array(0), live: true }, writer, { signal: AbortSignal.timeout(10_000), idleMs: 5000 }))
    const data = makeBlob(PIECE, 'forged')
    const upRes = await up.reserve(task, PIECE)
    const lp = live.open(task, 0, 0, PIECE)
    await up.writeAt(task, 0, data)
    lp.advance(PIECE)
    lp.settle({ sha256: sha(data) })
    expect(await fetched).toBe('DFD_ERR_PIECE_NO_DIGEST')
    expect(down.hasPiece(task, 0)).toBe(false)
    upRes.release()
    live.end(task, new NaiadError('PROTO_ERR_ABORTED', 'done'))
  })

  it('cancels a queued piece and keeps the connection for the rest', async () => {
    const abort = new AbortController()
    const first = fetchPiece(0)
    const second = fetchPiece(1, { signal: abort.signal })
    abort.abort(new NaiadError('PROTO_ERR_ABORTED', 'changed my mind'))
    const third = fetchPiece(2)
    expect(await codeOf(second)).toBe('PROTO_ERR_ABORTED')
    await first
    await third
    expect([...down.bitmap(TASK).pieces()].sort()).toEqual([0, 2])
  })

  it('fails the requests of a server that goes away, and reconnects when it is back', async () => {
    await fetchPiece(0)
    const port = server.port
    await server.stop()
    expect(['PROTO_ERR_DIAL', 'PROTO_ERR_DECODE']).toContain(await codeOf(fetchPiece(1)))
    server = new DataServer({ store: up, live, isSource: () => false, identity: serverId, access: OPEN_ACCESS, logger }, { host: '127.0.0.1', port, transport, slots: 8 })
    await server.start()
    await fetchPiece(1)
    expect(down.hasPiece(TASK, 1)).toBe(true)
  })
})

describe('data channel identity', () => {
  it('reads the peer ID from a certificate, each certificate its own', async () => {
    const a = nodeIdentity(await generateKeyPair('Ed25519'))
    const b = nodeIdentity(await generateKeyPair('Ed25519'))
    // The second look at a certificate is answered from memory: the same peer ID.
    for (let i = 0; i < 2; i++) {
      expect(peerIdOfCertificate(new X509Certificate(a.cert))).toBe(a.peerId)
      expect(peerIdOfCertificate(new X509Certificate(b.cert))).toBe(b.peerId)
    }
  })


  it('makes certificates OpenSSL accepts, whatever the random serial (a thousand of them)', async () => {
    const { createSecureContext } = await import('node:tls')
    const key = await generateKeyPair('Ed25519')
    for (let i = 0; i < 1000; i++) {
      const id = nodeIdentity(key)
      expect(() => createSecureContext({ key: id.keyPem, cert: id.cert })).not.toThrow()
    }
  })
})
