// The data channel's framing: frames come out whole whatever the chunking of the stream,
// piece bytes as slices in order, and a malformed stream fails with a typed error.

import { describe, expect, it } from 'vitest'

import {
  CONTROL_FRAME_MAX, DATA_FRAME_MAX, DataRequest, encodeFrame, FRAME, frameHeader, FrameReader, type FrameType, type NaiadError
} from '../src/index.ts'

interface Seen { frames: Array<[FrameType, number, Buffer]>; data: Map<number, Buffer[]> }

function reader(): { r: FrameReader; seen: Seen } {
  const seen: Seen = { frames: [], data: new Map() }
  const r = new FrameReader({
    frame: (type, id, payload) => seen.frames.push([type, id, Buffer.from(payload)]),
    data: (id, bytes) => {
      const list = seen.data.get(id) ?? []
      list.push(Buffer.from(bytes))
      seen.data.set(id, list)
    }
  })
  return { r, seen }
}

function codeOf(fn: () => void): string {
  try {
    fn()
  } catch (err) {
    return (err as NaiadError).code
  }
  return 'no error'
}

describe('data channel frames', () => {
  const request = DataRequest.encode({ taskId: 'a'.repeat(64), num: 3, grant: new Uint8Array([1, 2]), live: true })
  const body = Buffer.alloc(300_000).map((_, i) => i % 251)
  const stream = Buffer.concat([
    encodeFrame(FRAME.request, 7, request),
    frameHeader(FRAME.data, 7, body.length), body,
    encodeFrame(FRAME.end, 7, new Uint8Array(0)),
    encodeFrame(FRAME.cancel, 8, new Uint8Array(0))
  ])

  it.each([1, 5, 9, 10, 4096, 65_536, stream.length])('parses a stream fed in chunks of %i bytes', (step) => {
    const { r, seen } = reader()
    for (let pos = 0; pos < stream.length; pos += step) r.push(stream.subarray(pos, pos + step))
    expect(seen.frames.map(([t, id]) => [t, id])).toEqual([[FRAME.request, 7], [FRAME.end, 7], [FRAME.cancel, 8]])
    expect(DataRequest.decode(seen.frames[0][2])).toMatchObject({ num: 3, live: true })
    expect(Buffer.concat(seen.data.get(7) ?? []).equals(body)).toBe(true)
  })

  it('refuses an unknown frame type, and frames over their limit', () => {
    expect(codeOf(() => reader().r.push(frameHeader(99 as FrameType, 1, 0)))).toBe('PROTO_ERR_DECODE')
    expect(codeOf(() => reader().r.push(frameHeader(FRAME.request, 1, CONTROL_FRAME_MAX + 1)))).toBe('PROTO_ERR_MESSAGE_TOO_LARGE')
    expect(codeOf(() => reader().r.push(frameHeader(FRAME.data, 1, DATA_FRAME_MAX + 1)))).toBe('PROTO_ERR_MESSAGE_TOO_LARGE')
    // At the limits themselves a frame is fine.
    const { r } = reader()
    r.push(frameHeader(FRAME.data, 1, DATA_FRAME_MAX))
    expect(codeOf(() => r.push(Buffer.alloc(DATA_FRAME_MAX)))).toBe('no error')
  })
})
