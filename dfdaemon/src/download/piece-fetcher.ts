// Fetches one piece from a parent and verifies it against the seed's digest before
// anything else sees it.

import { createHash } from 'node:crypto'

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
  options: { signal?: AbortSignal; timeoutMs?: number } = {}
): Promise<Buffer> {
  const signal = deadline(options.signal, options.timeoutMs ?? LIMITS.pieceTimeoutMs)
  let stream: Awaited<ReturnType<FabricNode['dialProtocol']>> | undefined
  try {
    stream = await node.dialProtocol(parent, PROTOCOLS.piece, { signal })
    await sendAll(stream, frame(PieceRequest.encode({ taskId: expected.taskId, num: expected.num })), signal)
    let header: PieceResponse | undefined
    const { body } = await readFrameAndBody(stream, LIMITS.maxMessageBytes, (bytes) => {
      header = PieceResponse.decode(bytes)
      raiseRemote(header.error)
      if (header.num !== expected.num || header.length !== expected.length || header.length > LIMITS.maxPieceBytes) {
        throw new NaiadError('DFD_ERR_PIECE_DIGEST', `parent announced piece ${header.num} of ${header.length} bytes, expected piece ${expected.num} of ${expected.length}`)
      }
      return header.length
    }, signal)
    await stream.close({ signal }).catch(() => {})
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
