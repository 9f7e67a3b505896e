// containerd's snapshots service (`containerd.services.snapshots.v1.Snapshots`), the wire
// contract between containerd and a proxy snapshotter plugin such as `nydus-fs snapshotter`.
// Transcribed from containerd's public API description (api/services/snapshots/v1/
// snapshots.proto and api/types/mount.proto, as of containerd 1.6): same package, service,
// method, message and field numbers, so containerd's generated client reads what we write.
//
// Declared with the repo's schema codec (../codec/wire.ts) instead of loading the .proto at
// run time: no protobufjs/proto-loader, nothing generated, and the same codec every other
// Naiad message uses. Protobuf shapes the codec has no word for are spelled out the way
// they travel: a `map<string, string>` is a repeated {key = 1, value = 2} entry, an enum a
// varint, google.protobuf.Timestamp a {seconds = 1, nanos = 2} message, Empty a message
// without fields. Field numbers are the wire contract: never renumber.

import { f, message, type MessageOf } from '../codec/wire.ts'

export const SNAPSHOTS_SERVICE_NAME = 'containerd.services.snapshots.v1.Snapshots'

/** One entry of a `map<string, string>` field (the wire form protobuf gives maps). */
export const LabelEntry = message('LabelEntry', {
  key: f.string(1),
  value: f.string(2)
})

/** google.protobuf.Timestamp (nanos is an int32 on the wire; never negative here). */
export const Timestamp = message('Timestamp', {
  seconds: f.int64(1),
  nanos: f.int64(2)
})

/** google.protobuf.Empty */
export const Empty = message('Empty', {})

/** google.protobuf.FieldMask */
export const FieldMask = message('FieldMask', {
  paths: f.repeated(f.string(1))
})

/** containerd.types.Mount: what containerd hands to mount(2) for a snapshot. */
export const Mount = message('Mount', {
  type: f.string(1),
  source: f.string(2),
  target: f.string(3),
  options: f.repeated(f.string(4))
})

/** containerd.services.snapshots.v1.Kind */
export const SNAPSHOT_KIND = { unknown: 0, view: 1, active: 2, committed: 3 } as const
export type SnapshotKind = (typeof SNAPSHOT_KIND)[keyof typeof SNAPSHOT_KIND]

export const Info = message('Info', {
  name: f.string(1),
  parent: f.string(2),
  kind: f.uint32(3),
  createdAt: f.message(4, Timestamp),
  updatedAt: f.message(5, Timestamp),
  labels: f.repeated(f.message(6, LabelEntry))
})

export const PrepareSnapshotRequest = message('PrepareSnapshotRequest', {
  snapshotter: f.string(1),
  key: f.string(2),
  parent: f.string(3),
  labels: f.repeated(f.message(4, LabelEntry))
})

export const PrepareSnapshotResponse = message('PrepareSnapshotResponse', {
  mounts: f.repeated(f.message(1, Mount))
})

export const ViewSnapshotRequest = message('ViewSnapshotRequest', {
  snapshotter: f.string(1),
  key: f.string(2),
  parent: f.string(3),
  labels: f.repeated(f.message(4, LabelEntry))
})

export const ViewSnapshotResponse = message('ViewSnapshotResponse', {
  mounts: f.repeated(f.message(1, Mount))
})

export const MountsRequest = message('MountsRequest', {
  snapshotter: f.string(1),
  key: f.string(2)
})

export const MountsResponse = message('MountsResponse', {
  mounts: f.repeated(f.message(1, Mount))
})

export const RemoveSnapshotRequest = message('RemoveSnapshotRequest', {
  snapshotter: f.string(1),
  key: f.string(2)
})

export const CommitSnapshotRequest = message('CommitSnapshotRequest', {
  snapshotter: f.string(1),
  name: f.string(2),
  key: f.string(3),
  labels: f.repeated(f.message(4, LabelEntry))
})

export const StatSnapshotRequest = message('StatSnapshotRequest', {
  snapshotter: f.string(1),
  key: f.string(2)
})

export const StatSnapshotResponse = message('StatSnapshotResponse', {
  info: f.message(1, Info)
})

export const UpdateSnapshotRequest = message('UpdateSnapshotRequest', {
  snapshotter: f.string(1),
  info: f.message(2, Info),
  updateMask: f.message(3, FieldMask)
})

export const UpdateSnapshotResponse = message('UpdateSnapshotResponse', {
  info: f.message(1, Info)
})

export const ListSnapshotsRequest = message('ListSnapshotsRequest', {
  snapshotter: f.string(1),
  filters: f.repeated(f.string(2))
})

export const ListSnapshotsResponse = message('ListSnapshotsResponse', {
  info: f.repeated(f.message(1, Info))
})

export const UsageRequest = message('UsageRequest', {
  snapshotter: f.string(1),
  key: f.string(2)
})

export const UsageResponse = message('UsageResponse', {
  size: f.int64(1),
  inodes: f.int64(2)
})

export const CleanupRequest = message('CleanupRequest', {
  snapshotter: f.string(1)
})

/**
 * The service's methods in declaration order, with their message schemas. `List` is the
 * only streaming one (server to client). A gRPC binding builds its method table from this.
 */
export const SNAPSHOTS_METHODS = {
  Prepare: { request: PrepareSnapshotRequest, response: PrepareSnapshotResponse, responseStream: false },
  View: { request: ViewSnapshotRequest, response: ViewSnapshotResponse, responseStream: false },
  Mounts: { request: MountsRequest, response: MountsResponse, responseStream: false },
  Commit: { request: CommitSnapshotRequest, response: Empty, responseStream: false },
  Remove: { request: RemoveSnapshotRequest, response: Empty, responseStream: false },
  Stat: { request: StatSnapshotRequest, response: StatSnapshotResponse, responseStream: false },
  Update: { request: UpdateSnapshotRequest, response: UpdateSnapshotResponse, responseStream: false },
  List: { request: ListSnapshotsRequest, response: ListSnapshotsResponse, responseStream: true },
  Usage: { request: UsageRequest, response: UsageResponse, responseStream: false },
  Cleanup: { request: CleanupRequest, response: Empty, responseStream: false }
} as const

export type SnapshotsMethod = keyof typeof SNAPSHOTS_METHODS

export type MountMessage = MessageOf<typeof Mount>
export type InfoMessage = MessageOf<typeof Info>
export type LabelEntryMessage = MessageOf<typeof LabelEntry>

/** A map field's entries as a plain object (the last entry of a repeated key wins, as in protobuf). */
export function labelsFromEntries(entries: readonly LabelEntryMessage[] | undefined): Record<string, string> {
  const out: Record<string, string> = {}
  for (const e of entries ?? []) out[e.key] = e.value
  return out
}

export function labelsToEntries(labels: Record<string, string> | undefined): LabelEntryMessage[] {
  return Object.entries(labels ?? {}).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([key, value]) => ({ key, value }))
}
