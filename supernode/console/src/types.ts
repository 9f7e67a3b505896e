// What the supernode's API answers (supernode/src/api/http.ts and the plugins' routes), as
// far as the console reads it.

export interface Info { peerId: string; multiaddrs: string[]; seed: boolean }

export interface Peer {
  id: string
  hostname: string
  idc: string
  location: string
  labels: Record<string, string>
  isSeed: boolean
  uploadSlots: number
  lastSeen: string
  gone: boolean
  bandwidth: number
  goodPieces: number
  badPieces: number
  failedPieces: number
}

export interface HealthHosts {
  breaker: unknown
  hosts: Array<{ id: string; hostname: string; state: 'healthy' | 'degraded' | 'isolated'; step: string; stale: boolean; firing: Array<{ rule: string }> }>
}

export interface Task {
  id: string
  url: string
  state: string
  contentLength: number
  pieceSize: number
  pieceCount: number
  piecesKnown: number
  error: string | null
  peers: number
  createdAt: string
  updatedAt: string
}

export interface TaskDetail extends Omit<Task, 'peers'> {
  peers: Array<{ hostId: string; state: string; pieces: number; bitmap?: string; parents: string[]; blocked: string[]; updatedAt: string }>
}

export interface Trace {
  peerId: string
  taskId: string
  result: 'succeeded' | 'failed'
  durationMs: number
  contentLength: number
  finishedAt: string
  bytes: { peer: number; seed: number; origin: number }
  error: { code: string; message: string } | null
}

export interface Job {
  id: number
  type: string
  state: string
  args: { type: string; url?: string; urls?: string[]; scope?: string; labels?: Record<string, string> }
  error: { code: string; message: string } | null
  created_at: string
  finished_at: string | null
  progress: { blobs: number; succeeded: number; failed: number; running: number; pending: number; bytes: number; total_bytes: number; nodes: { total: number; succeeded: number; failed: number } }
}

export interface Slo {
  generatedAt: string
  sli: { window: string; pulls: number; succeeded: number; failed: number; successRate: number | null; secondsPerGiB: number | null; backToSourceRatio: number | null; bytes: { peer: number; seed: number; origin: number } }
  objectives: Array<{ name: string; sli: string; target: number; window: string; compliance: number | null; errorBudgetRemaining: number; met: boolean }>
}

export interface HealthEvent { id: number; at: number | string; host: string; rule: string; action: string; decision: string; reason: string }

export interface Doctor {
  summary: { nodes: number; ok: number; warn: number; fail: number; stale: number }
  nodes: Array<{ peerId: string; hostname: string; status: string; findings: Array<{ rule?: string; found?: string; status: string }> }>
}
