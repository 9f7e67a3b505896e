import { useState } from 'preact/hooks'

import { usePoll, type Polled } from '../hooks.ts'
import { ago, bytes, percent, shortId } from '../format.ts'
import type { Peer, Task, TaskDetail, Trace } from '../types.ts'
import { Section } from './section.tsx'

const CELLS = 48

/** Bit n of the supernode's piece bitmap (hex): byte n >> 3, value 1 << (n & 7). */
function has(bitmap: Uint8Array, n: number): boolean {
  const b = n >> 3
  return b < bitmap.length && (bitmap[b] & (1 << (n & 7))) !== 0
}

function decodeHex(hex: string | undefined): Uint8Array {
  const out = new Uint8Array((hex ?? '').length >> 1)
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex!.slice(i * 2, i * 2 + 2), 16)
  return out
}

/** Which pieces a peer holds, as at most CELLS cells; each cell's shade is the share of its pieces held. */
function Shares({ bitmap, pieceCount }: { bitmap: string | undefined; pieceCount: number }) {
  if (pieceCount <= 0) return <span class="muted">–</span>
  const bits = decodeHex(bitmap)
  const cells = Math.min(CELLS, pieceCount)
  const out = []
  for (let c = 0; c < cells; c++) {
    const from = Math.floor((c * pieceCount) / cells)
    const to = Math.floor(((c + 1) * pieceCount) / cells)
    let held = 0
    for (let n = from; n < to; n++) if (has(bits, n)) held++
    const share = to > from ? held / (to - from) : 0
    out.push(<i key={c} class={`cell f${Math.round(share * 4)}`} title={`pieces ${from}–${to - 1}: ${held} of ${to - from}`} />)
  }
  return <span class="shares">{out}</span>
}

function Sources({ b }: { b: Trace['bytes'] | undefined }) {
  if (b === undefined) return <span class="muted">–</span>
  const total = b.peer + b.seed + b.origin
  return (
    <span class="sources" title={`peers ${bytes(b.peer)}, seed ${bytes(b.seed)}, origin ${bytes(b.origin)}`}>
      <span class="src src-peer" data-bytes={b.peer}>peers {bytes(b.peer)}</span>
      <span class="src src-seed" data-bytes={b.seed}>seed {bytes(b.seed)}</span>
      <span class="src src-origin" data-bytes={b.origin}>origin {bytes(b.origin)}</span>
      {total > 0 ? <span class="muted"> ({percent(b.peer / total, 0)} from peers)</span> : null}
    </span>
  )
}

function Swarm({ id, peers }: { id: string; peers: Map<string, Peer> }) {
  const detail = usePoll<TaskDetail>(`/api/v1/tasks/${encodeURIComponent(id)}`)
  const traces = usePoll<Trace[]>(`/api/v1/traces?task=${encodeURIComponent(id)}&limit=200`)
  const t = detail.data
  if (t === undefined) return detail.error !== undefined ? <p class="error">{detail.error.message}</p> : <p class="muted">Loading…</p>
  // The latest trace of each peer for this task: where its bytes came from.
  const latest = new Map<string, Trace>()
  for (const tr of traces.data ?? []) {
    const prev = latest.get(tr.peerId)
    if (prev === undefined || prev.finishedAt < tr.finishedAt) latest.set(tr.peerId, tr)
  }
  const name = (hostId: string): string => peers.get(hostId)?.hostname ?? shortId(hostId)
  const rows = [...t.peers].sort((a, b) => Number(peers.get(b.hostId)?.isSeed ?? false) - Number(peers.get(a.hostId)?.isSeed ?? false) || name(a.hostId).localeCompare(name(b.hostId)))
  return (
    <div class="swarm" data-task={t.id}>
      <p class="task-url mono">{t.url}</p>
      <p class="muted">{bytes(t.contentLength)} in {t.pieceCount} pieces of {bytes(t.pieceSize)} · {t.state}{t.error !== null ? ` · ${t.error}` : ''}</p>
      <table>
        <thead><tr><th>Peer</th><th>State</th><th>Pieces</th><th>Shares held</th><th>Bytes from</th><th>Parents</th></tr></thead>
        <tbody>
          {rows.map((p) => (
            <tr key={p.hostId} data-swarm-peer={p.hostId}>
              <td>{name(p.hostId)}{peers.get(p.hostId)?.isSeed === true ? <span class="tag">seed</span> : null}</td>
              <td><span class={`state state-${p.state}`}>{p.state}</span></td>
              <td class="num">{p.pieces}/{t.pieceCount}</td>
              <td><Shares bitmap={p.bitmap} pieceCount={t.pieceCount} /></td>
              <td><Sources b={latest.get(p.hostId)?.bytes} /></td>
              <td>{p.parents.map(name).join(', ') || <span class="muted">–</span>}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {traces.error !== undefined ? <p class="note">Bytes by source come from the slo plugin, which is not loaded.</p> : null}
    </div>
  )
}

export function Tasks({ tasks, peers }: { tasks: Polled<Task[]>; peers: Polled<Peer[]> }) {
  const [selected, setSelected] = useState<string | null>(null)
  const list = [...(tasks.data ?? [])].sort((a, b) => b.updatedAt.localeCompare(a.updatedAt))
  const current = selected ?? list[0]?.id ?? null
  const byId = new Map((peers.data ?? []).map((p) => [p.id, p]))
  return (
    <Section id="tasks" title="Tasks" count={list.length} polled={tasks}>
      <table class="selectable">
        <thead><tr><th>Task</th><th>URL</th><th>State</th><th>Size</th><th>Peers</th><th>Updated</th></tr></thead>
        <tbody>
          {list.slice(0, 50).map((t) => (
            <tr key={t.id} class={t.id === current ? 'selected' : ''} onClick={() => setSelected(t.id)} data-task-row={t.id}>
              <td class="mono" title={t.id}>{shortId(t.id)}</td>
              <td class="url" title={t.url}>{t.url}</td>
              <td><span class={`state state-${t.state}`}>{t.state}</span></td>
              <td class="num">{bytes(t.contentLength)}</td>
              <td class="num">{t.peers}</td>
              <td>{ago(t.updatedAt)}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {list.length === 0 ? <p class="empty">No task yet: fetch something with dfget or pull an image through a daemon's mirror.</p> : null}
      {current !== null ? <Swarm key={current} id={current} peers={byId} /> : null}
    </Section>
  )
}
