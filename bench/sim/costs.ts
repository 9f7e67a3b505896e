// What the simulation charges for work, measured on the real code (2-core VM, Node 24).
// Each figure says where it comes from; `--costs FILE` (JSON, any subset of these keys)
// replaces them, e.g. with figures from another machine.

export interface Costs {
  /**
   * Supernode CPU seconds per scheduler call, whatever the call: the fabric's share (Noise,
   * yamux, the session frame, the socket write) and the dispatch. Fitted over scheduler-scale
   * runs (see bench/README.md, "The simulation").
   */
  callS: number
  /** Supernode CPU seconds per piece result in a report (bitmap, holder counts, edges, store). */
  resultS: number
  /** Supernode CPU seconds of getParents' own work beyond the call: bounded by its candidate pool. */
  parentsS: number
  /**
   * The same for the scheduler before the swarm index (main before issue 15): a base plus a
   * cost per peer of the task, since every call read every peer's bitmap. From the
   * in-process measurement in bench/README.md (200 peers 1.4 ms, 1,000 peers 3.1 ms).
   */
  oldParentsBaseS: number
  oldParentsPerPeerS: number
  /** Supernode CPU seconds per registration (the gate's checks, the task's state). */
  registerS: number
  /** Daemon CPU seconds per byte received from a peer (TLS, SHA-256, the store, GC), and per byte sent. */
  recvByteS: number
  sendByteS: number
  /** The seed's CPU seconds per byte fetched from the origin (HTTP, SHA-256, the store) and per byte served. */
  seedFetchByteS: number
  seedSendByteS: number
  /** From a client's request to the daemon having it (dfget's process start, the local API): added to each completion. */
  startS: number
}

export const MEASURED: Costs = {
  callS: 0.00023,
  resultS: 0.000004,
  parentsS: 0.00012,
  oldParentsBaseS: 0.00098,
  oldParentsPerPeerS: 0.0000021,
  registerS: 0.0006,
  // piece-throughput --size 256MiB --runs 2: daemon B 4.14 CPU-s/GiB received over the TLS
  // data channel, daemon A 1.14 CPU-s/GiB sent.
  recvByteS: 4.14 / 2 ** 30,
  sendByteS: 1.14 / 2 ** 30,
  // The seed reads the origin over HTTP, hashes and stores (the same run's plain copy with
  // SHA-256 and a file: 2.5 CPU-s/GiB), and serves as a daemon does.
  seedFetchByteS: 2.5 / 2 ** 30,
  seedSendByteS: 1.14 / 2 ** 30,
  startS: 0.45
}
