// Reading a piece over a node's data channel as some other node would: with a given fabric
// identity, membership credential and grant. The outsider suite uses it to try what a
// stranger, a revoked node and a member without a grant would.

import pino from 'pino'
import { DataClient, nodeIdentity, type PieceSink } from '@naiad/peer'
import { identityOf, type FabricNode } from '@naiad/proto'

export interface DataChannelTarget {
  peerId: string
  port: number
  host?: string
  transport?: 'tls' | 'tcp'
}

/**
 * Asks `target` for piece `num` of `taskId` as `node` would, presenting `credential` and
 * `grant`; resolves with the piece's byte count, rejects with the refusal (a closed
 * connection, DFD_ERR_PIECE_FORBIDDEN, …). Nothing is stored.
 */
export async function readPieceAs(node: FabricNode, credential: Uint8Array, target: DataChannelTarget, taskId: string, options: { num?: number; grant?: Uint8Array; timeoutMs?: number } = {}): Promise<number> {
  const timeoutMs = options.timeoutMs ?? 10_000
  const client = new DataClient({
    identity: nodeIdentity(identityOf(node)),
    access: { credential: () => credential, admit: () => true, authorize: () => true },
    logger: pino({ level: 'silent' })
  }, { connectTimeoutMs: timeoutMs, idleMs: timeoutMs })
  let bytes = 0
  const sink: PieceSink = {
    header: () => {},
    data: (b) => { bytes += b.length },
    end: async () => {},
    abort: () => {}
  }
  try {
    await client.fetch(
      { peerId: target.peerId, host: target.host ?? '127.0.0.1', port: target.port, transport: target.transport ?? 'tls' },
      { taskId, num: options.num ?? 0, grant: options.grant ?? new Uint8Array(0), live: false },
      sink,
      { signal: AbortSignal.timeout(timeoutMs), idleMs: timeoutMs }
    )
    return bytes
  } finally {
    client.close()
  }
}
