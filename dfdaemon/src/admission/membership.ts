// The daemon's cluster membership: it joins its supernode with a join token (proving it
// holds the token without sending it), keeps the credential it gets in its data directory
// (`membership.json`, 0600, with the cluster's public key from the token) so that a restart
// needs no token, renews it over the fabric, and learns there which peers were revoked.
// The fabric guard and the data channel's PeerAccess both answer from here.

import { readFile, rename, writeFile } from 'node:fs/promises'
import { hostname } from 'node:os'
import { join } from 'node:path'

import type { Logger } from 'pino'
import { ClusterAccess } from '@naiad/peer'
import {
  ClusterVerifier, hangUpPeer, joinRequest, MemberGuard, NaiadError, parseToken, peerIdOf, renewMembership,
  type FabricNode, type ParsedToken
} from '@naiad/proto'

const FILE = 'membership.json'
/** Renewed when less than this is left (credentials last an hour). */
const RENEW_BEFORE_MS = 30 * 60_000
/** Revoked peers remembered at most. */
const MAX_REVOKED = 100_000

export interface MembershipOptions {
  dataDir: string
  peerId: string
  supernodeUrl: string
  /** Further supernodes of the cluster, tried in turn when one cannot be reached (any may admit a node). */
  otherUrls?: string[]
  /** The join token, if one was configured; not needed once a credential is stored. */
  joinToken?: string
  logger: Logger
  timeoutMs: number
}

interface Stored { cluster: string; credential: string }

export class NodeMembership {
  readonly guard: MemberGuard
  readonly access: ClusterAccess
  private verifier: ClusterVerifier | undefined
  private credential = new Uint8Array(0)
  private expiresAt = 0
  /** Revoked peer → until when to refuse it (its credential cannot outlive that). */
  private readonly revoked = new Map<string, number>()
  private readonly token: ParsedToken | undefined
  private readonly options: MembershipOptions

  private constructor(options: MembershipOptions, token: ParsedToken | undefined) {
    this.options = options
    this.token = token
    const revoked = (id: string): boolean => this.isRevoked(id)
    this.guard = new MemberGuard({ verifier: () => this.verifier, credential: () => this.credential, revoked })
    this.access = new ClusterAccess({ verifier: () => this.verifier, credential: () => this.credential, revoked })
  }

  /** Reads the stored credential (if it is for this peer and the token's cluster) and the token's cluster key. */
  static async open(options: MembershipOptions): Promise<NodeMembership> {
    const token = options.joinToken === undefined || options.joinToken === '' ? undefined : parseToken(options.joinToken)
    if (token !== undefined && token.claims.scope !== 'join') throw new NaiadError('PROTO_ERR_BAD_CONFIG', 'join-token: this is an API token; create a join token with supernode token create --scope join')
    const m = new NodeMembership(options, token)
    if (token?.claims.cluster !== undefined) m.verifier = new ClusterVerifier(token.claims.cluster)
    let stored: Stored | undefined
    try {
      stored = JSON.parse(await readFile(join(options.dataDir, FILE), 'utf8')) as Stored
    } catch {
      stored = undefined
    }
    if (stored !== undefined && typeof stored.cluster === 'string' && typeof stored.credential === 'string') {
      const cluster = Buffer.from(stored.cluster, 'base64')
      // A token for another cluster means the node is being moved: the old credential is worthless there.
      if (m.verifier === undefined || Buffer.from(m.verifier.publicKey).equals(cluster)) {
        try {
          m.verifier ??= new ClusterVerifier(cluster)
          m.adopt(Buffer.from(stored.credential, 'base64'))
        } catch {
          // expired or not ours: join again
        }
      }
    }
    if (m.verifier === undefined) {
      throw new NaiadError('PROTO_ERR_USAGE', 'missing --join-token TOKEN (or --join-token-file FILE, NAIAD_JOIN_TOKEN, join-token: in the config file): this node has not joined a cluster; create one with "supernode token create" on the supernode\'s host')
    }
    return m
  }

  /** True while the node holds a credential that has not run out. */
  get joined(): boolean {
    return this.expiresAt > Date.now()
  }

  get clusterId(): string | undefined {
    return this.verifier?.id
  }

  isRevoked(peerId: string): boolean {
    const until = this.revoked.get(peerId)
    if (until === undefined) return false
    if (until > Date.now()) return true
    this.revoked.delete(peerId)
    return false
  }

  /**
   * Does `credentialB64` (from the supernode's /api/v1/info) prove that `peerId` is this
   * cluster's supernode? A node on the path of that plain-HTTP answer cannot pass for it.
   */
  verifySupernode(peerId: string, credentialB64: string | undefined): boolean {
    if (this.verifier === undefined || credentialB64 === undefined) return false
    try {
      return this.verifier.membership(Buffer.from(credentialB64, 'base64'), peerId).role === 'supernode'
    } catch {
      return false
    }
  }

  /** Joins with the token unless a good credential is held. A refused token is a configuration error; an unreachable supernode is not. */
  async ensureJoined(signal?: AbortSignal): Promise<void> {
    if (this.joined && this.expiresAt - Date.now() > RENEW_BEFORE_MS) return
    if (this.token === undefined) {
      if (this.joined) return
      throw new NaiadError('PROTO_ERR_BAD_CONFIG', 'the stored membership credential expired and no join token is configured: give --join-token')
    }
    const urls = [this.options.supernodeUrl, ...this.options.otherUrls ?? []]
    let url = ''
    let res: Response | undefined
    for (const base of urls) {
      url = `${base}/api/v1/join`
      try {
        res = await fetch(url, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ ...joinRequest(this.token, this.options.peerId), hostname: hostname() }),
          signal: signal ?? AbortSignal.timeout(this.options.timeoutMs)
        })
        break
      } catch (err) {
        if (base === urls.at(-1)) throw new NaiadError('DFD_ERR_NOT_JOINED', `cannot reach the supernode at ${url} to join: ${(err as Error).message}`, { cause: err })
      }
    }
    if (res === undefined) throw new NaiadError('DFD_ERR_NOT_JOINED', 'no supernode to join')
    const body = await res.json().catch(() => ({})) as { credential?: string; code?: string; message?: string }
    if (res.status === 401 || res.status === 403) {
      throw new NaiadError('PROTO_ERR_BAD_CONFIG', `the supernode refused to admit this node: ${body.message ?? `HTTP ${res.status}`} [${body.code ?? ''}]`)
    }
    if (!res.ok || typeof body.credential !== 'string') throw new NaiadError('DFD_ERR_NOT_JOINED', `joining at ${url} failed: HTTP ${res.status} ${body.message ?? ''}`)
    this.adopt(Buffer.from(body.credential, 'base64'))
    await this.save()
    this.options.logger.info({ cluster: this.clusterId, until: new Date(this.expiresAt).toISOString() }, 'joined the cluster')
  }

  /** Renews the credential over the fabric and takes the supernode's list of revoked peers; hangs up on them. */
  async renew(node: FabricNode, supernodeId: string, signal?: AbortSignal): Promise<void> {
    const res = await renewMembership(node, peerIdOf(supernodeId), signal)
    this.revoke(node, res.revoked)
    if (res.credential.length > 0 && this.expiresAt - Date.now() < RENEW_BEFORE_MS) {
      this.adopt(res.credential)
      await this.save()
    }
  }

  /** Refuses `ids` from now on (the supernode revoked them) and hangs up on them. */
  revoke(node: FabricNode, ids: string[]): void {
    // A revoked peer's credential lasts an hour at most: refusing it that long is enough.
    const until = Date.now() + 60 * 60_000
    for (const id of ids.slice(0, MAX_REVOKED)) {
      if (!this.revoked.has(id)) {
        this.options.logger.warn({ peer: id }, 'peer revoked by the supernode: refused from now on')
        this.guard.forget(id)
        void hangUpPeer(node, id)
      }
      if (this.revoked.size >= MAX_REVOKED) this.revoked.delete(this.revoked.keys().next().value!)
      this.revoked.set(id, until)
    }
  }

  private adopt(credential: Uint8Array): void {
    const m = this.verifier!.membership(credential, this.options.peerId)
    this.credential = Uint8Array.from(credential)
    this.expiresAt = m.expiresAt
  }

  private async save(): Promise<void> {
    const file = join(this.options.dataDir, FILE)
    const stored: Stored = { cluster: Buffer.from(this.verifier!.publicKey).toString('base64'), credential: Buffer.from(this.credential).toString('base64') }
    const tmp = `${file}.tmp-${process.pid}`
    await writeFile(tmp, JSON.stringify(stored), { mode: 0o600 })
    await rename(tmp, file)
  }
}
