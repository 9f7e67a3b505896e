// Fetches one piece from a parent and verifies it against the seed's digest before
// anything else sees it.

import { createHash } from 'node:crypto'
import { once } from 'node:events'
import { connect } from 'node:net'

import type { PeerId } from '@libp2p/interface'
import { LIMITS, NaiadError, PieceRequest, PieceResponse, PROTOCOLS, deadline, fabricError, raiseRemote, type FabricNode } from '@naiad/proto'

import { frame, readFrameAndBody, sendAll } from '../upload/frames.ts'

export interface ExpectedPiece {
  taskId: string
  num: number
  length: number
  sha256: Uint8Array
}

export async function fetchPiece(
  node: FabricNode,
  parent: PeerId,
  expected: ExpectedPiece,
  options: { signal?: AbortSignal; timeoutMs?: number; dataChannel?: boolean } = {}
): Promise<Buffer> {
  const signal = deadline(options.signal, options.timeoutMs ?? LIMITS.pieceTimeoutMs)
  let stream: Awaited<ReturnType<FabricNode['dialProtocol']>> | undefined
  try {
    stream = await node.dialProtocol(parent, PROTOCOLS.piece, { signal })
    await sendAll(stream, frame(PieceRequest.encode({ taskId: expected.taskId, num: expected.num, dataChannel: options.dataChannel === true })), signal)
    let header: PieceResponse | undefined
    const got = await readFrameAndBody(stream, LIMITS.maxMessageBytes, (bytes) => {
      header = PieceResponse.decode(bytes)
      raiseRemote(header.error)
      if (header.num !== expected.num || header.length !== expected.length || header.length > LIMITS.maxPieceBytes) {
        throw new NaiadError('DFD_ERR_PIECE_DIGEST', `parent announced piece ${header.num} of ${header.length} bytes, expected piece ${expected.num} of ${expected.length}`)
      }
      // On the data channel the bytes come over another connection, not this stream.
      return header.dataPort > 0 ? 0 : header.length
    }, signal)
    const remote = node.getConnections(parent)[0]?.remoteAddr
    await stream.close({ signal }).catch(() => {})
    let body = got.body
    if (header !== undefined && header.dataPort > 0 && header.length > 0) {
      const host = remote?.getComponents().find((c) => c.name === 'ip4' || c.name === 'ip6')?.value
      if (host === undefined) throw new NaiadError('PROTO_ERR_DIAL', 'no address to reach the parent\'s data channel')
      body = await readDataChannel(host, header.dataPort, header.token, header.length, signal)
    }
    const data = body ?? Buffer.alloc(0)
    const digest = createHash('sha256').update(data).digest()
    if (!digest.equals(expected.sha256)) {
      throw new NaiadError('DFD_ERR_PIECE_DIGEST', `piece ${expected.num} from ${parent.toString()} has SHA-256 ${digest.toString('hex').slice(0, 16)}…, the seed published ${Buffer.from(expected.sha256).toString('hex').slice(0, 16)}…`)
    }
    return data
  } catch (err) {
    const e = fabricError(err, signal, `piece ${expected.num} from ${parent.toString()}`)
    stream?.abort(e)
    throw e
  }
}

/** Reads `length` piece bytes from an uploader's data channel after presenting the token. */
async function readDataChannel(host: string, port: number, token: Uint8Array, length: number, signal: AbortSignal): Promise<Buffer> {
  const socket = connect({ host, port })
  const onAbort = (): void => { socket.destroy(signal.reason as Error) }
  signal.addEventListener('abort', onAbort, { once: true })
  try {
    await once(socket, 'connect', { signal })
    socket.write(token)
    const out = Buffer.allocUnsafe(length)
    let got = 0
    for await (const chunk of socket as AsyncIterable<Buffer>) {
      if (got + chunk.length > length) throw new NaiadError('PROTO_ERR_DECODE', 'data channel sent more bytes than the piece length')
      chunk.copy(out, got)
      got += chunk.length
    }
    if (got !== length) throw new NaiadError('PROTO_ERR_DECODE', `data channel ended after ${got} of ${length} piece bytes`)
    return out
  } finally {
    signal.removeEventListener('abort', onAbort)
    socket.destroy()
  }
}
