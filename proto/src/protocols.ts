// Protocol IDs of the fabric (`/naiad/<service>/<major>.<minor>.<patch>`) and the limits
// each side enforces on receive.

export const PROTOCOLS = {
  scheduler: '/naiad/scheduler/1.0.0',
  /** Daemon → supernode: the doctor plugin's latest report of the node. */
  doctor: '/naiad/doctor/1.0.0',
  control: '/naiad/control/1.0.0',
  /** The scheduler calls of 1.0.0 as a session: one long-lived stream, pipelined calls matched by ID (docs/protocol.md). */
  schedulerSession: '/naiad/scheduler/1.1.0',
  /** Any node ↔ any node: show your membership credential; to the supernode: renew mine (docs/security.md). */
  membership: '/naiad/membership/1.0.0',
  /** Supernode → supernode of its cluster: fetch a task into your seed (the owner's), answering progress and the result. */
  seedFetch: '/naiad/seed-fetch/1.0.0'
} as const

export const LIMITS = {
  /** Largest control message accepted on any core protocol. */
  maxMessageBytes: 4 * 1024 * 1024,
  /** Largest piece a peer may announce; matches the 64 MiB upper bound of piece sizes. */
  maxPieceBytes: 64 * 1024 * 1024,
  /** Default timeout of a control call (scheduler, bitmap). */
  callTimeoutMs: 5_000,
  /** How long a control command may run when its caller names no timeout (the supernode's `control.timeout` defaults to it). */
  controlTimeoutMs: 10 * 60_000,
  /** The longest a caller may ask a control command to run. */
  controlMaxTimeoutMs: 24 * 3600_000
} as const
