// A schema-driven codec for the protobuf wire format (proto3 semantics).
//
// Messages are declared in TypeScript (see ../messages/) rather than generated from
// .proto files, so they run under Node's type stripping without a build step, yet stay
// wire-compatible with protobuf: any protobuf implementation can read them given the
// equivalent .proto, which docs/protocol.md lists. Unknown fields are skipped, so a
// newer minor version can add fields without breaking an older peer.

import { NaiadError } from '../errors.ts'

type Scalar = 'string' | 'bytes' | 'uint32' | 'uint64' | 'int64' | 'bool' | 'double'

interface ScalarTypes {
  string: string
  bytes: Uint8Array
  uint32: number
  uint64: number
  int64: number
  bool: boolean
  double: number
}

export interface FieldSpec<T> {
  readonly no: number
  readonly kind: Scalar | 'message'
  readonly repeated: boolean
  readonly schema?: MessageSchema<Record<string, FieldSpec<unknown>>>
  readonly _type?: T
}

export type Fields = Record<string, FieldSpec<unknown>>
export type Infer<F extends Fields> = { [K in keyof F]: F[K] extends FieldSpec<infer T> ? T : never }

export interface MessageSchema<F extends Fields> {
  readonly name: string
  readonly fields: F
  encode(value: Partial<Infer<F>>): Uint8Array
  /**
   * Encodes `value` and hands its bytes to `use` without a copy of their own: they are
   * scratch space, valid only while `use` runs (it copies them into a frame, a write).
   */
  encodeTo<T>(value: Partial<Infer<F>>, use: (bytes: Uint8Array) => T): T
  decode(bytes: Uint8Array): Infer<F>
}

export type MessageOf<S> = S extends MessageSchema<infer F> ? Infer<F> : never

function scalar<K extends Scalar>(kind: K) {
  return (no: number): FieldSpec<ScalarTypes[K]> => ({ no, kind, repeated: false })
}

/** Field constructors: `f.string(1)`, `f.repeated(f.bytes(2))`, `f.message(3, Other)`. */
export const f = {
  string: scalar('string'),
  bytes: scalar('bytes'),
  uint32: scalar('uint32'),
  uint64: scalar('uint64'),
  int64: scalar('int64'),
  bool: scalar('bool'),
  double: scalar('double'),
  message<G extends Fields>(no: number, schema: MessageSchema<G>): FieldSpec<Infer<G> | undefined> {
    return { no, kind: 'message', repeated: false, schema: schema as unknown as MessageSchema<Fields> }
  },
  repeated<T>(spec: FieldSpec<T>): FieldSpec<Array<Exclude<T, undefined>>> {
    return { ...spec, repeated: true } as FieldSpec<Array<Exclude<T, undefined>>>
  }
}

const WIRE_VARINT = 0
const WIRE_I64 = 1
const WIRE_LEN = 2
const WIRE_I32 = 5

function wireType(kind: FieldSpec<unknown>['kind']): number {
  switch (kind) {
    case 'string': case 'bytes': case 'message': return WIRE_LEN
    case 'double': return WIRE_I64
    default: return WIRE_VARINT
  }
}

// How deep in nested encode calls we are: each depth writes into its own scratch buffer. A
// nested message's bytes are copied into its parent at once; the outermost one may be kept
// for long (a cached grant, a credential) and must not keep anything larger alive (Buffer's
// shared pool is 64 KiB in Node 24, and 3,000 peers' cached grants had pinned 117 MiB of a
// supernode when they were slices of it).
let nesting = 0

/**
 * Scratch space for the writers, one per nesting depth, kept between calls. Every buffer
 * a writer allocated was an ArrayBuffer outside V8's heap (256 bytes, doubled as it filled:
 * 3.8 KB of them for a 1.5 KB getParents answer, and a pooled copy of every string), and at
 * 10,000 peers that churn, not the heap, is what started every major GC of the supernode
 * ("external memory pressure", bench/README.md "What holds the heap").
 */
const scratch: Buffer[] = []
/** A scratch buffer grown past this is not kept: one large message must not pin its size for good. */
const SCRATCH_KEEP_BYTES = 64 * 1024

class Writer {
  private buf: Buffer
  private pos = 0
  private readonly depth: number

  constructor(depth: number) {
    this.depth = depth
    this.buf = scratch[depth] ??= Buffer.allocUnsafeSlow(1024)
  }

  private ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return
    let size = this.buf.length * 2
    while (size < this.pos + n) size *= 2
    const next = Buffer.allocUnsafeSlow(size)
    this.buf.copy(next, 0, 0, this.pos)
    this.buf = next
    if (size <= SCRATCH_KEEP_BYTES) scratch[this.depth] = next
  }

  varint(value: number): void {
    if (!Number.isSafeInteger(value) || value < 0) {
      throw new NaiadError('PROTO_ERR_ENCODE', `cannot encode ${value} as an unsigned varint`)
    }
    this.ensure(10)
    while (value > 0x7f) {
      this.buf[this.pos++] = (value % 128) | 0x80
      value = Math.floor(value / 128)
    }
    this.buf[this.pos++] = value
  }

  signed(value: number): void {
    // int64 on the wire is two's complement; negative values take ten bytes.
    if (value >= 0) return this.varint(value)
    let big = BigInt.asUintN(64, BigInt(value))
    this.ensure(10)
    while (big > 0x7fn) {
      this.buf[this.pos++] = Number(big & 0x7fn) | 0x80
      big >>= 7n
    }
    this.buf[this.pos++] = Number(big)
  }

  bytes(value: Uint8Array): void {
    this.varint(value.length)
    this.ensure(value.length)
    this.buf.set(value, this.pos)
    this.pos += value.length
  }

  /** A length-delimited UTF-8 string, written in place (no encoded copy of it). */
  string(value: string): void {
    const length = Buffer.byteLength(value, 'utf8')
    this.varint(length)
    this.ensure(length)
    this.pos += this.buf.write(value, this.pos, length, 'utf8')
  }

  double(value: number): void {
    this.ensure(8)
    this.buf.writeDoubleLE(value, this.pos)
    this.pos += 8
  }

  /**
   * The bytes written. A nested message's are a view of the scratch buffer, which its
   * parent copies before any other message at its depth is encoded; the outermost
   * message's are its own exact-size copy (callers keep some: a cached grant, a
   * credential), on V8's heap when small.
   */
  finish(): Uint8Array {
    if (this.depth > 0) return this.written()
    const out = new Uint8Array(this.pos)
    out.set(this.written())
    return out
  }

  /** The bytes written, in the scratch buffer: valid until the next message at this depth is encoded. */
  written(): Uint8Array {
    return this.buf.subarray(0, this.pos)
  }
}

class Reader {
  pos = 0
  /**
   * Where the message being read ends: the buffer's end, or a nested message's while it is
   * read (see `nested`), so that a nested message needs no view, Reader or Buffer of its own.
   */
  end: number
  name: string
  private readonly buf: Uint8Array
  /** The same bytes as a Buffer, made when first needed: strings and doubles are read from it in place. */
  private view: Buffer | undefined

  constructor(buf: Uint8Array, name: string) {
    this.buf = buf
    this.name = name
    this.end = buf.length
  }

  /** Reads the length-delimited message that starts here with `read`, within its own bounds and name. */
  nested<T>(name: string, read: (r: Reader) => T): T {
    const len = this.varint()
    if (this.pos + len > this.end) this.fail('length-delimited field runs past the end')
    const end = this.end
    const outer = this.name
    this.end = this.pos + len
    this.name = name
    const value = read(this)
    this.end = end
    this.name = outer
    return value
  }

  private asBuffer(): Buffer {
    this.view ??= Buffer.from(this.buf.buffer, this.buf.byteOffset, this.buf.byteLength)
    return this.view
  }

  /** A length-delimited UTF-8 string (no copy of its bytes: a piece report's parent ID was one a piece). */
  string(): string {
    const len = this.varint()
    if (this.pos + len > this.end) this.fail('length-delimited field runs past the end')
    const out = this.asBuffer().toString('utf8', this.pos, this.pos + len)
    this.pos += len
    return out
  }

  get done(): boolean { return this.pos >= this.end }

  fail(why: string): never {
    throw new NaiadError('PROTO_ERR_DECODE', `malformed ${this.name} message: ${why}`)
  }

  varint(): number {
    let result = 0
    let mul = 1
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.end) this.fail('truncated varint')
      const b = this.buf[this.pos++]
      result += (b & 0x7f) * mul
      if ((b & 0x80) === 0) return result
      mul *= 128
    }
    return this.fail('varint longer than 10 bytes')
  }

  signed(): number {
    const start = this.pos
    const v = this.varint()
    if (v <= Number.MAX_SAFE_INTEGER) return v
    // Re-read as a 64-bit two's complement value.
    let big = 0n
    let shift = 0n
    for (let i = start; i < this.pos; i++) {
      big |= BigInt(this.buf[i] & 0x7f) << shift
      shift += 7n
    }
    return Number(BigInt.asIntN(64, big))
  }

  bytes(): Uint8Array {
    const len = this.varint()
    if (this.pos + len > this.end) this.fail('length-delimited field runs past the end')
    const out = this.buf.subarray(this.pos, this.pos + len)
    this.pos += len
    return out
  }

  double(): number {
    if (this.pos + 8 > this.end) this.fail('truncated double')
    const v = this.asBuffer().readDoubleLE(this.pos)
    this.pos += 8
    return v
  }

  skip(wire: number): void {
    switch (wire) {
      case WIRE_VARINT: this.varint(); return
      case WIRE_I64: this.pos += 8; break
      case WIRE_LEN: this.bytes(); return
      case WIRE_I32: this.pos += 4; break
      default: this.fail(`unsupported wire type ${wire}`)
    }
    if (this.pos > this.end) this.fail('truncated field')
  }
}

const NO_BYTES = new Uint8Array(0)

function defaultOf(spec: FieldSpec<unknown>): unknown {
  if (spec.repeated) return []
  switch (spec.kind) {
    case 'string': return ''
    // One for every message: a zero-length array holds nothing to change, and a new one per
    // decoded field (a piece result's digest, mostly absent) was garbage at every report.
    case 'bytes': return NO_BYTES
    case 'bool': return false
    case 'message': return undefined
    default: return 0
  }
}

function writeValue(w: Writer, spec: FieldSpec<unknown>, value: unknown): void {
  switch (spec.kind) {
    case 'string': w.string(value as string); break
    case 'bytes': w.bytes(value as Uint8Array); break
    case 'bool': w.varint(value === true ? 1 : 0); break
    case 'uint32': case 'uint64': w.varint(value as number); break
    case 'int64': w.signed(value as number); break
    case 'double': w.double(value as number); break
    case 'message': w.bytes(spec.schema!.encode(value as Record<string, unknown>)); break
  }
}

function isDefault(spec: FieldSpec<unknown>, value: unknown): boolean {
  if (value === undefined || value === null) return true
  switch (spec.kind) {
    case 'string': return value === ''
    case 'bytes': return (value as Uint8Array).length === 0
    case 'bool': return value === false
    case 'message': return false
    default: return value === 0
  }
}

function readValue(r: Reader, spec: FieldSpec<unknown>): unknown {
  switch (spec.kind) {
    case 'string': return r.string()
    case 'bytes': return Uint8Array.prototype.slice.call(r.bytes())
    case 'bool': return r.varint() !== 0
    case 'uint32': case 'uint64': return r.varint()
    case 'int64': return r.signed()
    case 'double': return r.double()
    case 'message': return r.nested(spec.schema!.name, readers.get(spec.schema!)!)
  }
}

/** Each schema's in-place reader, for the messages nested in others. */
const readers = new WeakMap<object, (r: Reader) => unknown>()

/** Declares a message schema. Field numbers must be unique and positive. */
export function message<F extends Fields>(name: string, fields: F): MessageSchema<F> {
  const entries = Object.entries(fields)
  const byNo = new Map<number, [string, FieldSpec<unknown>]>()
  for (const [key, spec] of entries) {
    if (spec.no <= 0 || byNo.has(spec.no)) throw new Error(`${name}: bad or duplicate field number ${spec.no}`)
    byNo.set(spec.no, [key, spec])
  }

  const write = (value: Partial<Infer<F>>): Writer => {
    const w = new Writer(nesting)
    const v = value as Record<string, unknown>
    nesting++
    try {
      for (const [key, spec] of entries) {
        const fieldValue = v[key]
        const tag = spec.no * 8 + wireType(spec.kind)
        if (spec.repeated) {
          for (const item of (fieldValue as unknown[] | undefined) ?? []) {
            w.varint(tag)
            writeValue(w, spec, item)
          }
        } else if (!isDefault(spec, fieldValue)) {
          w.varint(tag)
          writeValue(w, spec, fieldValue)
        }
      }
    } finally {
      nesting--
    }
    return w
  }

  const defaults: Record<string, unknown> = {}
  for (const [key, spec] of entries) defaults[key] = defaultOf(spec)
  const lists = entries.filter(([, spec]) => spec.repeated).map(([key]) => key)

  // Reads the message from `r` up to `r.end`: a nested message is read in place (Reader.nested).
  const read = (r: Reader): Infer<F> => {
    // One copy of the defaults (the scalars', a shared empty byte array), sized for all of
    // them at once; filled field by field from {}, the object grew its property store as it went.
    const out: Record<string, unknown> = { ...defaults }
    for (const key of lists) out[key] = []
    while (!r.done) {
      const tag = r.varint()
      const no = Math.floor(tag / 8)
      const wire = tag % 8
      const field = byNo.get(no)
      if (field !== undefined && field[1].repeated && wire === WIRE_LEN && wireType(field[1].kind) !== WIRE_LEN) {
        // A packed repeated scalar (proto3's default encoding): one length-delimited run of values.
        const packed = new Reader(r.bytes(), name)
        while (!packed.done) (out[field[0]] as unknown[]).push(readValue(packed, field[1]))
        continue
      }
      if (field === undefined || wire !== wireType(field[1].kind)) {
        r.skip(wire)
        continue
      }
      const [key, spec] = field
      const value = readValue(r, spec)
      if (spec.repeated) (out[key] as unknown[]).push(value)
      else out[key] = value
    }
    return out as Infer<F>
  }

  const schema: MessageSchema<F> = {
    name,
    fields,
    encode(value) {
      return write(value).finish()
    },
    encodeTo(value, use) {
      return use(write(value).written())
    },
    decode(bytes) {
      return read(new Reader(bytes, name))
    }
  }
  readers.set(schema, read)
  return schema
}
