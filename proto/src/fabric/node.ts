// A fabric node: libp2p with TCP, Noise and yamux, and a persistent Ed25519 identity.

import { chmod, mkdir, readFile, writeFile, rename } from 'node:fs/promises'
import { join } from 'node:path'

import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey, peerIdFromString } from '@libp2p/peer-id'
import type { Libp2p, PeerId, PrivateKey } from '@libp2p/interface'
import { tcp } from '@libp2p/tcp'
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'
import { MemoryDatastore } from 'datastore-core'
import type { Key } from 'interface-datastore'
import { createLibp2p } from 'libp2p'

import { NaiadError } from '../errors.ts'
import { guardNode, type FabricGuard } from './guard.ts'
import { batchedWrites } from './socket-writes.ts'
import { lazyWindowUpdates } from './window-updates.ts'

export type FabricNode = Libp2p

/**
 * The peer store's records, each in bytes of its own. libp2p stores a record as its encoder
 * hands it over: a view into a 64 KiB buffer, which the record then keeps alive. A supernode
 * that had met 3,000 peers held 86 MiB that way (10,000 peers: some 640 MiB of its RSS).
 */
class CompactDatastore extends MemoryDatastore {
  override put(key: Key, val: Uint8Array, options?: { signal?: AbortSignal }): Key | Promise<Key> {
    return super.put(key, val.byteLength === val.buffer.byteLength ? val : new Uint8Array(val), options)
  }
}

export interface FabricNodeOptions {
  /** Directory holding `identity.key`; created when missing. */
  dataDir: string
  /** Multiaddrs to listen on, e.g. `/ip4/0.0.0.0/tcp/65002`. */
  listen: string[]
  /**
   * Who may use the fabric with this node (cluster membership, docs/security.md). Without a
   * guard every peer that completes the Noise handshake may use every protocol.
   */
  guard?: FabricGuard
}

const IDENTITY_FILE = 'identity.key'

/**
 * Creates a data directory readable by its owner only (0700), and tightens one that exists:
 * it holds keys, credentials and the cache of private blobs.
 */
export async function secureDir(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o700 })
  await chmod(dir, 0o700).catch((err: NodeJS.ErrnoException) => {
    // A directory someone else owns (a mounted volume) keeps its mode; everything in it is still 0600.
    if (err.code !== 'EPERM') throw err
  })
}

/** Loads the node's Ed25519 key from the data dir, creating it on first start. */
export async function loadIdentity(dataDir: string): Promise<PrivateKey> {
  const file = join(dataDir, IDENTITY_FILE)
  try {
    return privateKeyFromProtobuf(await readFile(file))
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
      throw new NaiadError('PROTO_ERR_BAD_CONFIG', `cannot read identity ${file}: ${(err as Error).message}`, { cause: err })
    }
  }
  await secureDir(dataDir)
  const key = await generateKeyPair('Ed25519')
  const tmp = `${file}.tmp-${process.pid}`
  await writeFile(tmp, privateKeyToProtobuf(key), { mode: 0o600 })
  await rename(tmp, file)
  return key
}

/** Each node's identity key, for the parts that prove the node's peer ID off the fabric (the data channel's TLS). */
const identities = new WeakMap<FabricNode, PrivateKey>()

/** The identity key of a node made by createFabricNode. */
export function identityOf(node: FabricNode): PrivateKey {
  const key = identities.get(node)
  if (key === undefined) throw new NaiadError('PROTO_ERR_BAD_CONFIG', 'this fabric node was not made by createFabricNode: its identity key is unknown')
  return key
}

/** The peer ID this data dir's identity gives (creating the identity when missing). */
export async function loadPeerId(dataDir: string): Promise<string> {
  return peerIdFromPrivateKey(await loadIdentity(dataDir)).toString()
}

export async function createFabricNode(options: FabricNodeOptions): Promise<FabricNode> {
  const privateKey = await loadIdentity(options.dataDir)
  const guard = options.guard
  let node: FabricNode
  try {
    node = await createLibp2p({
      privateKey,
      datastore: new CompactDatastore(),
      addresses: { listen: options.listen },
      transports: [tcp()],
      connectionEncrypters: [batchedWrites(noise())],
      streamMuxers: [lazyWindowUpdates(yamux({ streamOptions: {
        // Pieces are megabytes: a larger window keeps a single stream from stalling on
        // window updates over a fast link.
        initialStreamWindowSize: 4 * 1024 * 1024,
        maxStreamWindowSize: 16 * 1024 * 1024,
        // A stream may hold a full window before the reader drains it; a smaller read
        // buffer would reset fast piece transfers whenever the reader falls behind.
        maxReadBufferLength: 20 * 1024 * 1024
      } }))],
      // Naiad's own calls carry timeouts; the monitor's pings would need an extra protocol.
      connectionMonitor: { enabled: false },
      // libp2p's default of 5 new connections per second per address is tight for many
      // daemons behind one NAT address; a peer that is no member is refused at the
      // handshake anyway (see the guard).
      connectionManager: { maxConnections: 1024, inboundConnectionThreshold: 64, maxIncomingPendingConnections: 64 },
      // Refused at the handshake: no stream, not even the membership protocol.
      connectionGater: guard === undefined ? {} : {
        denyInboundEncryptedConnection: (peer) => guard.denyPeer(peer.toString()),
        denyOutboundEncryptedConnection: (peer) => guard.denyPeer(peer.toString())
      }
    })
  } catch (err) {
    throw new NaiadError('PROTO_ERR_BAD_CONFIG', `cannot start the fabric on ${options.listen.join(', ')}: ${(err as Error).message}`, { cause: err })
  }
  identities.set(node, privateKey)
  if (guard !== undefined) await guardNode(node, guard)
  return node
}

/** A peer ID from its text form, to dial it by ID (the peer store knows its addresses once connected). */
export function peerIdOf(peerId: string): PeerId {
  try {
    return peerIdFromString(peerId)
  } catch (err) {
    throw new NaiadError('PROTO_ERR_DECODE', `"${peerId.slice(0, 80)}" is not a peer ID`, { cause: err })
  }
}

/**
 * The addresses of `multiaddrs` a call to `peerId` may dial, each ending in `/p2p/<peerId>`. An
 * address naming another peer is dropped (it would reach that peer instead), and a malformed
 * one is skipped: the others may work.
 */
export function dialableAddrs(multiaddrs: readonly string[], peerId: string): Multiaddr[] {
  const out: Multiaddr[] = []
  for (const a of multiaddrs) {
    if (a.includes('/p2p/') && !a.endsWith(`/p2p/${peerId}`)) continue
    try {
      out.push(multiaddr(a.includes('/p2p/') ? a : `${a}/p2p/${peerId}`))
    } catch {
      // skipped
    }
  }
  return out
}

/** Closes every connection to `peerId` (a revoked node); unknown or malformed IDs are ignored. */
export async function hangUpPeer(node: FabricNode, peerId: string): Promise<void> {
  let id
  try {
    id = peerIdFromString(peerId)
  } catch {
    return
  }
  await node.hangUp(id).catch(() => {})
}
