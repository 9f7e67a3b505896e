// Who may use this node's data channel, and for which tasks: the seam between the piece
// engine and cluster admission. The engine asks; an admission implementation (cluster
// membership credentials and the supernode's per-task grants) answers. The default allows
// everything, which is what a cluster without admission gets.

export interface PeerAccess {
  /**
   * This node's membership credential, sent in the HELLO of every data-channel connection it
   * opens or accepts. Empty when the cluster has no admission.
   */
  credential(): Uint8Array
  /**
   * Once per data-channel connection, after TLS (or the plaintext handshake) proved that the
   * other side holds `peerId`'s key: may that peer use the channel at all? A refusal closes
   * the connection before any request is read.
   */
  admit(peerId: string, credential: Uint8Array, signal: AbortSignal): Promise<boolean> | boolean
  /**
   * Before the first byte of a piece of `taskId` goes to `peerId`: does the grant it presented
   * (the newest one the scheduler gave it, see TaskInfo.grant) allow it? A refusal answers the
   * request with DFD_ERR_PIECE_FORBIDDEN and sends nothing.
   */
  authorize(peerId: string, taskId: string, grant: Uint8Array): boolean
}

export const OPEN_ACCESS: PeerAccess = {
  credential: () => new Uint8Array(0),
  admit: () => true,
  authorize: () => true
}
