// Message schemas of the core services. Field numbers are part of the wire contract:
// add new fields with new numbers, never reuse or renumber one.

import { f, message, type MessageOf } from '../codec/wire.ts'

export const RpcError = message('RpcError', {
  code: f.string(1),
  message: f.string(2)
})

export const Header = message('Header', {
  name: f.string(1),
  value: f.string(2)
})

export const Host = message('Host', {
  id: f.string(1), // libp2p peer ID
  hostname: f.string(2),
  ip: f.string(3),
  idc: f.string(4),
  location: f.string(5),
  multiaddrs: f.repeated(f.string(6)),
  uploadSlots: f.uint32(7),
  isSeed: f.bool(8),
  labels: f.repeated(f.string(9)), // `key=value`, from the daemon's host.labels
  dataPort: f.uint32(10), // the data channel's TCP port, on the host of the fabric addresses; 0: none
  dataTransport: f.string(11) // 'tls' (default) | 'tcp' (plaintext, the operator's choice)
})

export const PieceDigest = message('PieceDigest', {
  num: f.uint32(1),
  length: f.uint32(2),
  sha256: f.bytes(3)
})

/** What a peer needs to know about a task; grows as the seed makes progress. */
export const TaskInfo = message('TaskInfo', {
  id: f.string(1),
  url: f.string(2),
  state: f.string(3), // pending | running | succeeded | failed
  contentLength: f.int64(4), // -1 while unknown
  pieceSize: f.uint32(5),
  pieceCount: f.int64(6), // -1 while unknown
  pieces: f.repeated(f.message(7, PieceDigest)),
  sha256: f.bytes(8), // whole-content digest, once the seed has it
  error: f.message(9, RpcError),
  backToSource: f.bool(10), // the scheduler tells this peer to fetch from the origin itself
  grant: f.bytes(11), // the supernode's permission for this peer to fetch this task's pieces (admission); empty without
  sourcePeer: f.string(12), // peer ID of the back-to-source peer whose digests are the reference (the seed, usually)
  digestEpoch: f.uint32(13), // names the current set of published digests (new when they start over); 0: not given
  piecesFrom: f.uint32(14) // `pieces` leaves out the first piecesFrom digests of this epoch (the caller holds them)
})

export const RegisterTaskRequest = message('RegisterTaskRequest', {
  taskId: f.string(1),
  url: f.string(2),
  headers: f.repeated(f.message(3, Header)),
  digest: f.string(4),
  range: f.string(5),
  filter: f.repeated(f.string(6))
})

export const PieceResult = message('PieceResult', {
  num: f.uint32(1),
  parentId: f.string(2), // empty when fetched from the origin
  length: f.uint32(3),
  costMs: f.uint32(4),
  sha256: f.bytes(5), // only honoured from the trusted back-to-source peer
  errorCode: f.string(6) // set when the piece failed
})

export const ReportPiecesRequest = message('ReportPiecesRequest', {
  taskId: f.string(1),
  results: f.repeated(f.message(2, PieceResult)),
  // Task metadata, published by the trusted back-to-source peer as it learns it.
  contentLength: f.int64(3),
  pieceSize: f.uint32(4),
  pieceCount: f.int64(5),
  sha256: f.bytes(6),
  state: f.string(7), // '' (still running) | succeeded | failed
  error: f.message(8, RpcError)
})

export const Parent = message('Parent', {
  id: f.string(1),
  multiaddrs: f.repeated(f.string(2)),
  bitmap: f.bytes(3),
  score: f.double(4),
  isSeed: f.bool(5),
  dataPort: f.uint32(6), // as Host.dataPort
  dataTransport: f.string(7) // as Host.dataTransport
})

export const GetParentsRequest = message('GetParentsRequest', {
  taskId: f.string(1),
  limit: f.uint32(2),
  // Field 3 is not reused: an earlier build sent digests_from there (a piece number), which a
  // supernode reading it as an epoch would get wrong, and the reverse.
  // The digests the caller holds: the first `digests` of epoch `digestEpoch` (TaskInfo.digest_epoch); 0, 0: none.
  digestEpoch: f.uint32(5),
  digests: f.uint32(6)
})

export const GetParentsResponse = message('GetParentsResponse', {
  task: f.message(1, TaskInfo),
  parents: f.repeated(f.message(2, Parent)),
  grant: f.bytes(3) // a fresh grant, as TaskInfo.grant
})

export const LeaveTaskRequest = message('LeaveTaskRequest', {
  taskId: f.string(1)
})

/** Several tasks' piece reports in one call (to a supernode whose answers carry SCHEDULER_FEATURES.reportBatch). */
export const ReportBatch = message('ReportBatch', {
  reports: f.repeated(f.message(1, ReportPiecesRequest))
})

/** One scheduler call: exactly one of the request fields is set. */
export const SchedulerRequest = message('SchedulerRequest', {
  announceHost: f.message(1, Host),
  registerTask: f.message(2, RegisterTaskRequest),
  reportPieces: f.message(3, ReportPiecesRequest),
  getParents: f.message(4, GetParentsRequest),
  leaveTask: f.message(5, LeaveTaskRequest),
  leaveHost: f.bool(6),
  reportBatch: f.message(7, ReportBatch),
  features: f.uint32(8) // SCHEDULER_FEATURES bits: what the caller understands
})

export const SchedulerResponse = message('SchedulerResponse', {
  error: f.message(1, RpcError),
  task: f.message(2, TaskInfo),
  parents: f.message(3, GetParentsResponse),
  // The supernode's saturation signal: leave at least this long between one task's calls (reports, polls); 0: no limit.
  paceMs: f.uint32(4),
  // report_batch: one per report, in order; an empty code means accepted.
  results: f.repeated(f.message(5, RpcError)),
  features: f.uint32(6) // SCHEDULER_FEATURES bits: what this supernode understands
})

/** Bits of SchedulerResponse.features. */
export const SCHEDULER_FEATURES = {
  /** SchedulerRequest.report_batch (in answers: the supernode takes it). */
  reportBatch: 1,
  /**
   * In requests: the caller waits out an SN_ERR_BUSY answer to register_task (the pace, then
   * again), so a saturated supernode may put its registration off as it does get_parents.
   */
  busyRegister: 2
} as const

/**
 * Supernode to daemon: run a named command. Arguments and result are JSON so that plugins
 * can add commands without new schemas; the daemon accepts calls only from its supernode.
 */
export const ControlRequest = message('ControlRequest', {
  command: f.string(1),
  argsJson: f.string(2),
  /** How long the caller waits; the daemon stops waiting on the command after it. 0 = the daemon's default. */
  timeoutMs: f.uint32(3)
})

export const ControlResponse = message('ControlResponse', {
  ok: f.bool(1),
  code: f.string(2), // error code when not ok
  message: f.string(3),
  resultJson: f.string(4)
})

export type RpcError = MessageOf<typeof RpcError>
export type Header = MessageOf<typeof Header>
export type Host = MessageOf<typeof Host>
export type PieceDigest = MessageOf<typeof PieceDigest>
export type TaskInfo = MessageOf<typeof TaskInfo>
export type RegisterTaskRequest = MessageOf<typeof RegisterTaskRequest>
export type PieceResult = MessageOf<typeof PieceResult>
export type ReportPiecesRequest = MessageOf<typeof ReportPiecesRequest>
export type Parent = MessageOf<typeof Parent>
export type GetParentsRequest = MessageOf<typeof GetParentsRequest>
export type LeaveTaskRequest = MessageOf<typeof LeaveTaskRequest>
export type GetParentsResponse = MessageOf<typeof GetParentsResponse>
export type ReportBatch = MessageOf<typeof ReportBatch>
export type SchedulerRequest = MessageOf<typeof SchedulerRequest>
export type SchedulerResponse = MessageOf<typeof SchedulerResponse>

/** Daemon → supernode on /naiad/doctor/1.0.0: the node's latest doctor report (docs/doctor.md). */
export const DoctorReportRequest = message('DoctorReportRequest', {
  hostname: f.string(1),
  report: f.string(2) // the report as JSON: { version, generatedAt, node, summary, results }
})

export const DoctorReportResponse = message('DoctorReportResponse', {
  error: f.message(1, RpcError)
})

export type DoctorReportRequest = MessageOf<typeof DoctorReportRequest>
export type DoctorReportResponse = MessageOf<typeof DoctorReportResponse>
export type ControlRequest = MessageOf<typeof ControlRequest>
export type ControlResponse = MessageOf<typeof ControlResponse>
