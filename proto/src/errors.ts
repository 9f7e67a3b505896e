// Every error code Naiad raises, in one registry. Codes are stable: tools and tests match
// on `err.code`, never on message text. Each code is documented in docs/errors.md (a test
// checks that the two agree). HTTP statuses and exit codes are mapped only at boundaries.

export const ERROR_CODES = {
  // proto: the fabric and its codecs
  PROTO_ERR_ENCODE: { status: 500, summary: 'a message could not be encoded' },
  PROTO_ERR_DECODE: { status: 502, summary: 'a received message is malformed' },
  PROTO_ERR_MESSAGE_TOO_LARGE: { status: 502, summary: 'a received message exceeds the protocol maximum' },
  PROTO_ERR_TIMEOUT: { status: 504, summary: 'a fabric call did not finish within its timeout' },
  PROTO_ERR_ABORTED: { status: 499, summary: 'a fabric call was aborted by its caller' },
  PROTO_ERR_DIAL: { status: 502, summary: 'a peer could not be dialled' },
  PROTO_ERR_IDENTITY: { status: 502, summary: 'a peer proved an identity other than the peer ID it was dialled as, or none' },
  PROTO_ERR_REMOTE: { status: 502, summary: 'the remote side answered with an error' },
  PROTO_ERR_BAD_CONFIG: { status: 500, summary: 'a configuration value is invalid' },
  PROTO_ERR_USAGE: { status: 400, summary: 'a command was called with an unknown flag or a bad value' },
  PROTO_ERR_PLUGIN: { status: 500, summary: 'a plugin could not be loaded or set up' },
  PROTO_ERR_FORBIDDEN: { status: 403, summary: 'a peer is not a member of the cluster: no valid membership credential or grant, or it was revoked' },
  PROTO_ERR_BAD_TOKEN: { status: 401, summary: 'a join or API token is malformed, expired, of the wrong scope or not issued by this cluster' },
  PROTO_ERR_DESTINATION_DENIED: { status: 403, summary: 'a fetch was refused by the source policy: a destination that is not public and not in source.allow' },

  // dfdaemon
  DFD_ERR_BAD_REQUEST: { status: 400, summary: 'a download request is malformed (URL, range, digest, header)' },
  DFD_ERR_ORIGIN_STATUS: { status: 502, summary: 'the origin answered with an error status' },
  DFD_ERR_ORIGIN_UNREACHABLE: { status: 502, summary: 'the origin could not be reached' },
  DFD_ERR_REGISTRY_PLAIN_HTTP: { status: 502, summary: 'the mirror spoke HTTPS to a registry that answers in plain HTTP; it needs --insecure-registry' },
  DFD_ERR_ORIGIN_TRUNCATED: { status: 502, summary: 'the origin closed the body before its announced length' },
  DFD_ERR_ORIGIN_CHANGED: { status: 502, summary: 'the origin served bytes that differ from the published piece digests' },
  DFD_ERR_DIGEST_MISMATCH: { status: 422, summary: 'the downloaded content does not match the expected digest' },
  DFD_ERR_PIECE_DIGEST: { status: 502, summary: 'a peer sent a piece whose SHA-256 does not match the seed digest' },
  DFD_ERR_PIECE_SLOW: { status: 504, summary: 'a parent served a piece far slower than the others; the piece was fetched elsewhere' },
  DFD_ERR_PIECE_NO_DIGEST: { status: 502, summary: "a piece came from a peer before the task's source published its digest; it was not stored" },
  DFD_ERR_PIECE_UNAVAILABLE: { status: 404, summary: 'a peer does not hold the requested piece' },
  DFD_ERR_UPLOAD_BUSY: { status: 503, summary: 'a peer has no free upload slot' },
  DFD_ERR_PIECE_FORBIDDEN: { status: 403, summary: 'a peer refused to send a piece: the requester is not admitted to the cluster or holds no valid grant for the task' },
  DFD_ERR_CACHE_FULL: { status: 507, summary: 'the cache quota cannot fit the task, even after eviction' },
  DFD_ERR_TASK_NOT_FOUND: { status: 404, summary: 'no task with this ID is known to the daemon' },
  DFD_ERR_TASK_FAILED: { status: 502, summary: 'the download failed; the cause names the reason' },
  DFD_ERR_TIMEOUT: { status: 504, summary: 'the download did not finish within its timeout' },
  DFD_ERR_STORE: { status: 500, summary: 'the piece store could not read or write its files' },
  DFD_ERR_DOCTOR_RULE: { status: 400, summary: 'a doctor rule or rules file is invalid (YAML, keys, or a query that does not parse)' },
  DFD_ERR_CONTROL_FORBIDDEN: { status: 403, summary: 'a control command came from a peer that is not the supernode this daemon is attached to' },
  DFD_ERR_CONTROL_UNKNOWN: { status: 404, summary: 'a control command names a command the daemon does not know' },
  DFD_ERR_TOO_MANY_REQUESTS: { status: 429, summary: 'a tenant is over its request-rate or concurrency limit (QoS plugin)' },
  DFD_ERR_BLOB_DENIED: { status: 403, summary: 'the registry refused this client\'s credentials for a blob, so the daemon does not serve it from its cache or its peers' },
  DFD_ERR_BODY_TOO_LARGE: { status: 413, summary: 'a request body to the daemon exceeds its limit' },
  DFD_ERR_CONNECT_FORBIDDEN: { status: 403, summary: 'the forward proxy refused a CONNECT tunnel: CONNECT is off, or the host and port are not in proxy.connect-allow' },
  DFD_ERR_NOT_JOINED: { status: 503, summary: 'the daemon has no membership credential yet: it could not join its supernode' },

  // supernode
  SN_ERR_TASK_NOT_FOUND: { status: 404, summary: 'no task with this ID is known to the scheduler' },
  SN_ERR_BAD_REQUEST: { status: 400, summary: 'a request to the supernode (scheduler call or API body) is malformed' },
  SN_ERR_JOB_NOT_FOUND: { status: 404, summary: 'no job with this ID is known to the supernode' },
  SN_ERR_SCOPE_UNSUPPORTED: { status: 400, summary: 'a job names a scope (peers, label selector) the supernode cannot reach yet' },
  SN_ERR_HOST_NOT_FOUND: { status: 404, summary: 'a control command names a host that is unknown, gone or a seed' },
  SN_ERR_UNAUTHORIZED: { status: 401, summary: 'an API request carries no valid API token (Authorization: Bearer)' },
  SN_ERR_FORBIDDEN: { status: 403, summary: 'a node may not have a task: its origin refuses anonymous requests and the node\'s own credentials did not open it' },
  SN_ERR_TASK_ID_MISMATCH: { status: 400, summary: 'a registration names a task ID that is not the ID of its URL, range, digest and filter' },
  SN_ERR_RATE_LIMITED: { status: 429, summary: 'a node registers new tasks faster than the scheduler allows' },
  SN_ERR_NODE_REVOKED: { status: 403, summary: 'a revoked node tried to join again under the same identity' },
  SN_ERR_NODE_NOT_FOUND: { status: 404, summary: 'no node with this ID joined the cluster' },
  SN_ERR_BODY_TOO_LARGE: { status: 413, summary: 'a request body to the supernode API exceeds its limit' },
  SN_ERR_BUSY: { status: 503, summary: 'the scheduler is saturated and put off a call it can do without; retry after the answer\'s pace_ms' },
  SN_ERR_NOT_OWNER: { status: 421, summary: 'a task was registered with a supernode that does not own it (rendezvous hashing over the live supernodes); the caller goes to the owner' },
  SN_ERR_DATABASE: { status: 503, summary: 'the shared database (--database) cannot be reached, or refused a statement or migration' },

  // OCI registry client (nydus-fs, preheat)
  OCI_ERR_BAD_REF: { status: 400, summary: 'an image reference or platform is malformed' },
  OCI_ERR_REGISTRY: { status: 502, summary: 'the registry (or its token service) could not be reached or answered an error' },
  OCI_ERR_BAD_MANIFEST: { status: 422, summary: 'a manifest or index is malformed, too large, or has no manifest for the platform' },
  OCI_ERR_DIGEST: { status: 422, summary: 'a manifest or blob from the registry does not match its digest' },

  // nydus-fs
  NFS_ERR_BAD_IMAGE: { status: 422, summary: 'an image config, bootstrap or lazy manifest is malformed or of an unsupported media type' },
  NFS_ERR_BAD_LAYER: { status: 422, summary: 'a layer is not a valid (compressed) tar archive, or is truncated' },
  NFS_ERR_UNSAFE_PATH: { status: 422, summary: 'a layer entry has an absolute path, a .. component, or a link that escapes the root' },
  NFS_ERR_DIGEST: { status: 422, summary: 'a blob, chunk or bootstrap does not match its digest' },
  NFS_ERR_NOT_LAZY: { status: 422, summary: 'the image is not a Naiad lazy image (missing media types or annotations)' },
  NFS_ERR_MOUNT: { status: 500, summary: 'the FUSE mount could not be set up or torn down' },
  NFS_ERR_FETCH: { status: 502, summary: 'chunk data could not be fetched within the retries and timeout' },
  NFS_ERR_SNAPSHOT_NOT_FOUND: { status: 404, summary: 'the snapshotter has no snapshot with this key or name' },
  NFS_ERR_SNAPSHOT_EXISTS: { status: 409, summary: 'a snapshot with this key or name exists already (for a lazy layer: it is ready, nothing to unpack)' },
  NFS_ERR_SNAPSHOT: { status: 412, summary: 'the snapshot operation does not fit the snapshot (wrong kind, still has children, an inner layer of a lazy image)' },

  // dfget
  DFGET_ERR_DAEMON_UNREACHABLE: { status: 503, summary: 'the local dfdaemon could not be reached' },
  DFGET_ERR_OUTPUT: { status: 500, summary: 'the output file could not be written' },
  DFGET_ERR_VERIFY: { status: 422, summary: 'the received bytes do not match the digest the daemon or the user gave' }
} as const satisfies Record<string, { status: number; summary: string }>

export type ErrorCode = keyof typeof ERROR_CODES

export function isErrorCode(code: unknown): code is ErrorCode {
  return typeof code === 'string' && Object.hasOwn(ERROR_CODES, code)
}

export class NaiadError extends Error {
  override readonly name = 'NaiadError'
  readonly code: ErrorCode

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.code = code
  }

  get status(): number {
    return ERROR_CODES[this.code].status
  }

  toJSON(): { code: ErrorCode; message: string } {
    return { code: this.code, message: this.message }
  }
}

/** Wraps anything thrown into a NaiadError, keeping typed errors as they are. */
export function toNaiadError(err: unknown, fallback: ErrorCode, context?: string): NaiadError {
  if (err instanceof NaiadError) return err
  const msg = err instanceof Error ? err.message : String(err)
  return new NaiadError(fallback, context === undefined ? msg : `${context}: ${msg}`, { cause: err })
}
