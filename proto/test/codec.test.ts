// The schema-driven wire codec: every core message round-trips, absent fields decode to
// proto3 defaults, unknown fields are skipped, malformed input fails with a typed error,
// and the bytes are the ones any protobuf implementation writes and reads.

import protobuf from 'protobufjs'
import { describe, expect, it } from 'vitest'

import {
  f, GetParentsRequest, GetParentsResponse, Header, Host, LeaveTaskRequest, message, NaiadError, Parent, PieceDigest,
  DataEnd, DataHello, DataRequest, DataResponse, PieceResult, RegisterTaskRequest, ReportBatch, ReportPiecesRequest, RpcError, SchedulerRequest,
  SchedulerResponse, TaskInfo, ControlRequest, ControlResponse, type Fields, type MessageOf, type MessageSchema
} from '../src/index.ts'

const hex = (bytes: Uint8Array): string => Buffer.from(bytes).toString('hex')
const bytesOf = (s: string): Uint8Array => new Uint8Array(Buffer.from(s.replace(/\s+/g, ''), 'hex'))
const sha = (seed: number): Uint8Array => new Uint8Array(32).map((_, i) => (seed * 31 + i) & 0xff)

/** Bytes fields compared by content: a decoded field may be a Buffer (a Uint8Array subclass). */
function norm(v: unknown): unknown {
  if (v instanceof Uint8Array) return `bytes:${hex(v)}`
  if (Array.isArray(v)) return v.map(norm)
  if (v !== null && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, norm(x)]))
  return v
}

function expectDecodeError(fn: () => unknown): void {
  let caught: unknown
  try {
    fn()
  } catch (err) {
    caught = err
  }
  expect(caught).toBeInstanceOf(NaiadError)
  expect((caught as NaiadError).code).toBe('PROTO_ERR_DECODE')
}

// Every field of every schema set to a value other than its default.
const rpcError: RpcError = { code: 'DFD_ERR_TIMEOUT', message: 'took too long ⏱' }
const host: Host = {
  id: '12D3KooWQ', hostname: 'node-7', ip: '10.1.2.3', idc: 'eu-west-1a', location: 'eu|west|1a',
  multiaddrs: ['/ip4/10.1.2.3/tcp/65002', '/ip6/::1/tcp/65002'], uploadSlots: 12, isSeed: true,
  labels: ['zone=eu-west-1a', 'gpu=true'], dataPort: 65004, dataTransport: 'tls'
}
const pieceDigest: PieceDigest = { num: 7, length: 4 * 1024 * 1024, sha256: sha(1) }
const taskInfo: TaskInfo = {
  id: 'a'.repeat(64), url: 'https://registry.example/v2/x/blobs/sha256:00', state: 'running',
  contentLength: 123_456_789_012, pieceSize: 8 * 1024 * 1024, pieceCount: 14_718,
  pieces: [pieceDigest, { num: 8, length: 1, sha256: sha(2) }], sha256: sha(3), error: rpcError, backToSource: true,
  grant: sha(6), sourcePeer: '12D3KooWS', digestEpoch: 0xdeadbeef, piecesFrom: 2
}
const registerTask: RegisterTaskRequest = {
  taskId: 'b'.repeat(64), url: 'http://origin/file?sig=1', headers: [{ name: 'Authorization', value: 'Bearer t' }, { name: 'X-A', value: '' }],
  digest: `sha256:${'c'.repeat(64)}`, range: '0-99', filter: ['sig', 'expires']
}
const pieceResult: PieceResult = { num: 3, parentId: '12D3KooWP', length: 1024, costMs: 15, sha256: sha(4), errorCode: 'DFD_ERR_PIECE_DIGEST' }
const reportPieces: ReportPiecesRequest = {
  taskId: 'd'.repeat(64), results: [pieceResult, { ...pieceResult, num: 4, errorCode: '' }], contentLength: 10_000_000,
  pieceSize: 4 * 1024 * 1024, pieceCount: 3, sha256: sha(5), state: 'succeeded', error: rpcError
}
const parent: Parent = { id: '12D3KooWP', multiaddrs: ['/ip4/1.2.3.4/tcp/1'], bitmap: new Uint8Array([0xff, 0x01]), score: 0.734_5, isSeed: true, dataPort: 65004, dataTransport: 'tcp' }
const getParents: GetParentsRequest = { taskId: 'e'.repeat(64), limit: 4, digestEpoch: 7, digests: 12 }
const getParentsResponse: GetParentsResponse = { task: taskInfo, parents: [parent, { ...parent, id: 'other', score: -1.5 }], grant: sha(7) }
const leaveTask: MessageOf<typeof LeaveTaskRequest> = { taskId: 'f'.repeat(64) }

const FULL: Array<[MessageSchema<Fields>, Record<string, unknown>]> = [
  [RpcError, rpcError],
  [Header, { name: 'Accept', value: 'application/vnd.oci.image.manifest.v1+json' }],
  [Host, host],
  [PieceDigest, pieceDigest],
  [TaskInfo, taskInfo],
  [RegisterTaskRequest, registerTask],
  [PieceResult, pieceResult],
  [ReportPiecesRequest, reportPieces],
  [Parent, parent],
  [GetParentsRequest, getParents],
  [GetParentsResponse, getParentsResponse],
  [LeaveTaskRequest, leaveTask],
  [ReportBatch, { reports: [reportPieces, { ...reportPieces, taskId: '1'.repeat(64) }] }],
  [SchedulerRequest, {
    announceHost: host, registerTask, reportPieces, getParents, leaveTask, leaveHost: true, reportBatch: { reports: [reportPieces] }, features: 2
  }],
  [SchedulerResponse, { error: rpcError, task: taskInfo, parents: getParentsResponse, paceMs: 750, results: [rpcError, { code: '', message: '' }], features: 1 }],
  [DataHello, { protocol: 'naiad-data/1', peerId: '12D3KooWQ', nonce: sha(8), credential: new Uint8Array([1, 2, 3]) }],
  [DataRequest, { taskId: '0'.repeat(64), num: 99, grant: sha(6), live: true }],
  [DataResponse, { error: rpcError, num: 99, length: 65_536, sha256: sha(6) }],
  [DataEnd, { error: rpcError, sha256: sha(7), contentSha256: sha(9) }],
  [ControlRequest, { command: 'download', argsJson: '{"url":"https://example.com/f","priority":"preheat"}', timeoutMs: 600_000 }],
  [ControlResponse, { ok: true, code: 'DFD_ERR_TIMEOUT', message: 'late ⏱', resultJson: '{"taskId":"ab"}' }]
] as unknown as Array<[MessageSchema<Fields>, Record<string, unknown>]>

describe('wire codec: round trips', () => {
  it.each(FULL.map(([schema, value]) => [schema.name, schema, value] as const))('%s with every field set', (_name, schema, value) => {
    // Every field really is set, or the test would not cover it.
    expect(Object.keys(value).sort()).toEqual(Object.keys(schema.fields).sort())
    const bytes = schema.encode(value)
    expect(bytes.length).toBeGreaterThan(0)
    expect(norm(schema.decode(bytes))).toEqual(norm(value))
  })

  it.each(FULL.map(([schema]) => [schema.name, schema] as const))('%s decodes empty input to proto3 defaults', (_name, schema) => {
    const decoded = schema.decode(new Uint8Array(0)) as Record<string, unknown>
    for (const [key, spec] of Object.entries(schema.fields)) {
      const expected = spec.repeated
        ? []
        : { string: '', bytes: new Uint8Array(0), bool: false, message: undefined, uint32: 0, uint64: 0, int64: 0, double: 0 }[spec.kind]
      expect(norm(decoded[key]), `${schema.name}.${key}`).toEqual(norm(expected))
    }
    expect(Object.keys(decoded).sort()).toEqual(Object.keys(schema.fields).sort())
  })

  it('writes nothing for fields at their default value, as proto3 does', () => {
    expect(TaskInfo.encode({}).length).toBe(0)
    expect(TaskInfo.encode({ id: '', contentLength: 0, pieces: [], sha256: new Uint8Array(0), backToSource: false }).length).toBe(0)
    expect(Host.encode({ multiaddrs: undefined, isSeed: undefined }).length).toBe(0)
  })

  it('keeps an empty nested message distinct from an absent one', () => {
    const bytes = SchedulerRequest.encode({ getParents: { taskId: '', limit: 0, digestEpoch: 0, digests: 0 } })
    expect(hex(bytes)).toBe('2200')
    const decoded = SchedulerRequest.decode(bytes)
    expect(decoded.getParents).toEqual({ taskId: '', limit: 0, digestEpoch: 0, digests: 0 })
    expect(decoded.registerTask).toBeUndefined()
  })

  it('round-trips negative int64 values (-1 means "unknown")', () => {
    for (const v of [-1, -2, -128, -123_456_789_012, Number.MIN_SAFE_INTEGER]) {
      const decoded = TaskInfo.decode(TaskInfo.encode({ contentLength: v, pieceCount: v }))
      expect(decoded.contentLength).toBe(v)
      expect(decoded.pieceCount).toBe(v)
    }
    expect(TaskInfo.decode(TaskInfo.encode({ contentLength: Number.MAX_SAFE_INTEGER })).contentLength).toBe(Number.MAX_SAFE_INTEGER)
  })

  it('round-trips uint64 values beyond 32 bits and doubles of every sign', () => {
    const S = message('Wide', { big: f.uint64(1), d: f.double(2) })
    for (const big of [2 ** 32, 2 ** 40 + 7, Number.MAX_SAFE_INTEGER]) expect(S.decode(S.encode({ big })).big).toBe(big)
    for (const d of [-1.5, 1e-300, Infinity, -Infinity]) expect(S.decode(S.encode({ d })).d).toBe(d)
    expect(S.decode(S.encode({ d: NaN })).d).toBeNaN()
  })

  it('decodes fields in any order and lets the last value of a scalar field win', () => {
    // field 2 "y", then field 1 "a", then field 1 "b"
    const decoded = RpcError.decode(bytesOf('12 01 79  0a 01 61  0a 01 62'))
    expect(decoded).toEqual({ code: 'b', message: 'y' })
  })

  it('decodes from a view into a larger buffer and does not alias it', () => {
    const inner = DataResponse.encode({ num: 5, sha256: sha(9) })
    const big = new Uint8Array(inner.length + 20)
    big.set(inner, 10)
    const view = big.subarray(10, 10 + inner.length)
    const decoded = DataResponse.decode(view)
    expect(decoded.num).toBe(5)
    expect(hex(decoded.sha256)).toBe(hex(sha(9)))
    big.fill(0)
    expect(hex(decoded.sha256)).toBe(hex(sha(9)))
  })

  it("encodes outside Buffer's shared pool, so a message kept for long keeps only its own bytes alive", () => {
    // Buffer.allocUnsafe hands out views into a pool (64 KiB in Node 24); a cached grant in one
    // kept the whole pool alive.
    const bytes = GetParentsResponse.encode({ grant: new Uint8Array(8) })
    expect(bytes.buffer.byteLength).toBeLessThan(Buffer.poolSize)
    expect(bytes.buffer.byteLength).toBeLessThanOrEqual(512)
  })

  it('gives each encoded message a buffer of exactly its size, its own, however deep it nests', () => {
    // Writers reuse scratch space per depth; what a caller gets is one allocation of the
    // message's size (the doubling buffers of every writer were the supernode's churn).
    const many: GetParentsResponse = { ...getParentsResponse, parents: Array.from({ length: 8 }, (_, k) => ({ ...parent, id: `parent-${k}-${'x'.repeat(40)}`, score: k })) }
    const first = GetParentsResponse.encode(many)
    expect(first.byteOffset).toBe(0)
    expect(first.buffer.byteLength).toBe(first.byteLength)
    const copy = Uint8Array.from(first)
    const second = GetParentsResponse.encode({ ...many, parents: many.parents.slice(0, 1) })
    expect(second.buffer.byteLength).toBe(second.byteLength)
    expect(hex(first)).toBe(hex(copy))
    expect(norm(GetParentsResponse.decode(first))).toEqual(norm(many))
    // A message larger than the kept scratch space, then a small one: both whole.
    const huge = GetParentsResponse.encode({ grant: new Uint8Array(200_000).fill(7) })
    expect(GetParentsResponse.decode(huge).grant.length).toBe(200_000)
    expect(norm(GetParentsResponse.decode(GetParentsResponse.encode(many)))).toEqual(norm(many))
  })

  it('hands the same bytes to encodeTo without a copy of their own, for the caller to frame', () => {
    const many: GetParentsResponse = { ...getParentsResponse, parents: Array.from({ length: 8 }, (_, k) => ({ ...parent, id: `p${k}` })) }
    const framed = GetParentsResponse.encodeTo(many, (bytes) => {
      expect(bytes.buffer.byteLength).toBeGreaterThan(bytes.byteLength) // scratch space, not an allocation of its own
      return Uint8Array.from(bytes)
    })
    expect(hex(framed)).toBe(hex(GetParentsResponse.encode(many)))
  })

  it('writes strings of any script in place, as UTF-8', () => {
    const names = ['', 'a', 'é', '⏱ timer', '😀'.repeat(300), 'x'.repeat(5000)]
    for (const message of names) {
      const bytes = RpcError.encode({ code: 'X', message })
      expect(RpcError.decode(bytes).message).toBe(message)
    }
  })
})

describe('wire codec: unknown fields', () => {
  const HostV2 = message('HostV2', {
    ...Host.fields,
    extraString: f.string(20),
    extraVarint: f.uint64(21),
    extraNegative: f.int64(22),
    extraDouble: f.double(23),
    extraMessage: f.message(24, RpcError),
    extraList: f.repeated(f.bytes(25))
  })

  it('skips every wire type a newer peer may add', () => {
    const wide = HostV2.encode({
      ...host, extraString: 'new', extraVarint: 2 ** 40, extraNegative: -1, extraDouble: 2.5,
      extraMessage: rpcError, extraList: [new Uint8Array([1]), new Uint8Array([2, 3])]
    })
    expect(wide.length).toBeGreaterThan(Host.encode(host).length)
    expect(Host.decode(wide)).toEqual(host)
  })

  it('skips a fixed32 field (wire type 5) it has no schema for', () => {
    // field 30, wire type 5 → tag 245 = f5 01; then 4 bytes; then field 1 "a".
    expect(RpcError.decode(bytesOf('f5 01 01 02 03 04  0a 01 61'))).toEqual({ code: 'a', message: '' })
  })

  it('skips a known field number that arrives with a different wire type', () => {
    // field 1 as a varint (08 05) where RpcError expects a string, then field 2 "m".
    expect(RpcError.decode(bytesOf('08 05  12 01 6d'))).toEqual({ code: '', message: 'm' })
  })

  it('an older schema keeps decoding what a newer one encodes inside nested and repeated messages', () => {
    const DigestV2 = message('PieceDigestV2', { ...PieceDigest.fields, algorithm: f.string(9) })
    const TaskInfoV2 = message('TaskInfoV2', { ...TaskInfo.fields, pieces: f.repeated(f.message(7, DigestV2)) })
    const bytes = TaskInfoV2.encode({ ...taskInfo, pieces: taskInfo.pieces.map((p) => ({ ...p, algorithm: 'sha256' })) })
    expect(norm(TaskInfo.decode(bytes))).toEqual(norm(taskInfo))
  })
})

describe('wire codec: malformed input', () => {
  it.each([
    ['a truncated varint', RpcError, '08 80'],
    ['a truncated tag', RpcError, '80'],
    ['a varint longer than ten bytes', PieceDigest, '08 ff ff ff ff ff ff ff ff ff ff 01'],
    ['a length running past the end', RpcError, '0a 05 61 62'],
    ['a truncated length prefix', RpcError, '0a'],
    ['a truncated double', Parent, '21 00 00 00'],
    ['a truncated unknown fixed64', RpcError, '79 01 02'],
    ['a truncated unknown fixed32', RpcError, 'f5 01 01 02'],
    ['a group start (wire type 3)', RpcError, '0b'],
    ['an end group (wire type 4)', RpcError, '0c'],
    ['wire type 6', RpcError, '0e'],
    ['wire type 7', RpcError, '0f'],
    ['a malformed nested message', SchedulerResponse, '12 02 0a 05'],
    ['a malformed message inside a repeated field', TaskInfo, '3a 03 1a 09 00'],
    // Read in place, a nested message still ends at its own length, not its parent's.
    ['a nested field running past its message but not the buffer', GetParentsResponse, '0a 02 0a 03 78 79 7a']
  ] as Array<[string, MessageSchema<Fields>, string]>)('%s throws PROTO_ERR_DECODE', (_what, schema, bytes) => {
    expectDecodeError(() => schema.decode(bytesOf(bytes)))
  })

  it('names the message in the error', () => {
    try {
      PieceDigest.decode(bytesOf('08'))
      expect.unreachable()
    } catch (err) {
      expect((err as NaiadError).message).toContain('PieceDigest')
    }
  })

  it('names the nested message that is malformed, and the parent again after it', () => {
    expect(() => GetParentsResponse.decode(bytesOf('0a 02 0a 03 78 79 7a'))).toThrow(/TaskInfo/)
    // A good nested TaskInfo, then a truncated field of the response itself.
    expect(() => GetParentsResponse.decode(bytesOf('0a 03 0a 01 78 1a 05'))).toThrow(/GetParentsResponse/)
  })

  it('refuses to encode values that do not fit an unsigned varint', () => {
    for (const num of [-1, 1.5, NaN, 2 ** 53]) {
      try {
        PieceDigest.encode({ num })
        expect.unreachable()
      } catch (err) {
        expect(err).toBeInstanceOf(NaiadError)
        expect((err as NaiadError).code).toBe('PROTO_ERR_ENCODE')
      }
    }
  })
})

describe('wire codec: byte compatibility with protobuf', () => {
  it.each([
    ['field 1 string "a"', RpcError, { code: 'a' }, '0a 01 61'],
    ['varint 300', PieceDigest, { num: 300 }, '08 ac 02'],
    ['varint 1', PieceDigest, { num: 1 }, '08 01'],
    ['varint 127 / 128', PieceDigest, { num: 127, length: 128 }, '08 7f 10 80 01'],
    ['a 32-bit maximum', PieceDigest, { num: 0xffff_ffff }, '08 ff ff ff ff 0f'],
    ['bool true', Host, { isSeed: true }, '40 01'],
    ['bytes', PieceDigest, { sha256: new Uint8Array([0xde, 0xad]) }, '1a 02 de ad'],
    ['fields in field-number order', PieceDigest, { sha256: new Uint8Array([1]), length: 2, num: 1 }, '08 01 10 02 1a 01 01'],
    ['repeated strings, one tag each', Host, { multiaddrs: ['a', 'b'] }, '32 01 61 32 01 62'],
    ['a double (little-endian IEEE 754)', Parent, { score: 1.5 }, '21 00 00 00 00 00 00 f8 3f'],
    ['int64 -1 as ten bytes of two\'s complement', TaskInfo, { contentLength: -1 }, '20 ff ff ff ff ff ff ff ff ff 01'],
    ['a nested message', GetParentsResponse, { task: { id: 'x' } }, '0a 03 0a 01 78'],
    ['UTF-8 strings', RpcError, { message: 'é' }, '12 02 c3 a9']
  ] as Array<[string, MessageSchema<Fields>, Record<string, unknown>, string]>)('%s', (_what, schema, value, expected) => {
    const bytes = bytesOf(expected)
    expect(hex(schema.encode(value))).toBe(hex(bytes))
    expect(norm(schema.decode(bytes))).toMatchObject(norm(value) as Record<string, unknown>)
  })

  it('writes two-byte tags for field numbers of 16 and above', () => {
    const S = message('HighField', { s: f.string(16), n: f.uint32(2047) })
    // 16 << 3 | 2 = 130 → 82 01; 2047 << 3 | 0 = 16376 → f8 7f
    expect(hex(S.encode({ s: 'a', n: 1 }))).toBe(hex(bytesOf('82 01 01 61  f8 7f 01')))
  })

  // The .proto equivalents, read by protobufjs (a complete protobuf implementation).
  const root = protobuf.parse(`
    syntax = "proto3";
    message RpcError { string code = 1; string message = 2; }
    message Host { string id = 1; string hostname = 2; string ip = 3; string idc = 4; string location = 5;
      repeated string multiaddrs = 6; uint32 upload_slots = 7; bool is_seed = 8; repeated string labels = 9;
      uint32 data_port = 10; string data_transport = 11; }
    message PieceDigest { uint32 num = 1; uint32 length = 2; bytes sha256 = 3; }
    message TaskInfo { string id = 1; string url = 2; string state = 3; int64 content_length = 4; uint32 piece_size = 5;
      int64 piece_count = 6; repeated PieceDigest pieces = 7; bytes sha256 = 8; RpcError error = 9; bool back_to_source = 10;
      bytes grant = 11; string source_peer = 12; uint32 digest_epoch = 13; uint32 pieces_from = 14; }
    message Parent { string id = 1; repeated string multiaddrs = 2; bytes bitmap = 3; double score = 4; bool is_seed = 5;
      uint32 data_port = 6; string data_transport = 7; }
    message GetParentsResponse { TaskInfo task = 1; repeated Parent parents = 2; bytes grant = 3; }
    message Packed { repeated uint32 nums = 1; }
  `, { keepCase: false }).root.resolveAll()
  const type = (name: string): protobuf.Type => root.lookupType(name)
  const plain = (t: protobuf.Type, bytes: Uint8Array): Record<string, unknown> =>
    t.toObject(t.decode(bytes), { longs: Number, bytes: Array, defaults: true }) as Record<string, unknown>

  it('protobufjs decodes what the codec encodes', () => {
    const decoded = plain(type('GetParentsResponse'), GetParentsResponse.encode(getParentsResponse))
    const task = decoded.task as Record<string, unknown>
    expect(task.contentLength).toBe(taskInfo.contentLength)
    expect(task.pieceCount).toBe(taskInfo.pieceCount)
    expect(task.backToSource).toBe(true)
    expect(task.error).toEqual(rpcError)
    expect((task.pieces as Array<Record<string, unknown>>).map((p) => [p.num, p.length, Buffer.from(p.sha256 as number[]).toString('hex')]))
      .toEqual(taskInfo.pieces.map((p) => [p.num, p.length, hex(p.sha256)]))
    expect((decoded.parents as Array<Record<string, unknown>>).map((p) => p.score)).toEqual([0.734_5, -1.5])

    const negative = plain(type('TaskInfo'), TaskInfo.encode({ contentLength: -1, pieceCount: -1 }))
    expect(negative.contentLength).toBe(-1)
    expect(negative.pieceCount).toBe(-1)
  })

  it('the codec decodes what protobufjs encodes, byte for byte the same', () => {
    const H = type('Host')
    const theirs = H.encode(H.fromObject({ ...host, uploadSlots: host.uploadSlots, isSeed: true })).finish()
    expect(hex(Host.encode(host))).toBe(hex(theirs))
    expect(Host.decode(theirs)).toEqual(host)

    const T = type('TaskInfo')
    const bytes = T.encode(T.fromObject({
      ...taskInfo, pieces: taskInfo.pieces.map((p) => ({ ...p, sha256: Buffer.from(p.sha256) })),
      sha256: Buffer.from(taskInfo.sha256)
    })).finish()
    expect(norm(TaskInfo.decode(bytes))).toEqual(norm(taskInfo))
    expect(TaskInfo.decode(T.encode(T.fromObject({ contentLength: -1 })).finish()).contentLength).toBe(-1)
  })

  it('reads packed repeated scalars, which proto3 encoders write by default', () => {
    // Protobuf parsers must accept both the packed and the unpacked form of a repeated
    // scalar field; protobufjs (like protoc-generated code) writes the packed one.
    const P = type('Packed')
    const packed = P.encode(P.fromObject({ nums: [1, 300, 7] })).finish()
    // field 1, wire type 2, four bytes: the varints 1, 300, 7
    expect(hex(packed)).toBe(hex(bytesOf('0a 04 01 ac 02 07')))
    const Nums = message('Packed', { nums: f.repeated(f.uint32(1)) })
    expect(Nums.decode(bytesOf('08 01 08 ac 02 08 07')).nums).toEqual([1, 300, 7])
    expect(Nums.decode(packed).nums).toEqual([1, 300, 7])
  })
})
