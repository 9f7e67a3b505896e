import { useState } from 'preact/hooks'

import { ApiError, request } from '../api.ts'
import type { Polled } from '../hooks.ts'
import { ago, bytes } from '../format.ts'
import type { Job } from '../types.ts'
import { Section } from './section.tsx'

/** `zone=a, rack=3` → {zone: 'a', rack: '3'}; null when malformed. */
function parseLabels(text: string): Record<string, string> | null {
  const out: Record<string, string> = {}
  for (const part of text.split(',').map((s) => s.trim()).filter((s) => s !== '')) {
    const i = part.indexOf('=')
    if (i <= 0) return null
    out[part.slice(0, i).trim()] = part.slice(i + 1).trim()
  }
  return Object.keys(out).length === 0 ? null : out
}

function CreateJob({ onCreated }: { onCreated: () => void }) {
  const [kind, setKind] = useState<'image' | 'file'>('image')
  const [url, setUrl] = useState('')
  const [scope, setScope] = useState<'seed' | 'all_peers' | 'labels'>('seed')
  const [labels, setLabels] = useState('')
  const [busy, setBusy] = useState(false)
  const [message, setMessage] = useState<{ ok: boolean; text: string } | null>(null)
  const submit = async (e: Event): Promise<void> => {
    e.preventDefault()
    const args: Record<string, unknown> = { type: kind, url: url.trim() }
    if (scope === 'labels') {
      const l = parseLabels(labels)
      if (l === null) { setMessage({ ok: false, text: 'Labels: write key=value, separated by commas.' }); return }
      args.scope = { labels: l }
    } else {
      args.scope = scope
    }
    setBusy(true)
    try {
      const job = await request<Job>('POST', '/api/v1/jobs', { type: 'preheat', args })
      setMessage({ ok: true, text: `Job ${job.id} created.` })
      setUrl('')
      onCreated()
    } catch (err) {
      setMessage({ ok: false, text: err instanceof ApiError ? `${err.message} (${err.code})` : (err as Error).message })
    } finally {
      setBusy(false)
    }
  }
  return (
    <form class="create-job" onSubmit={submit}>
      <select name="kind" value={kind} onChange={(e) => setKind((e.target as HTMLSelectElement).value as 'image' | 'file')}>
        <option value="image">image</option>
        <option value="file">file</option>
      </select>
      <input name="url" required placeholder={kind === 'image' ? 'registry.example.com/app:v1' : 'https://example.com/file'} value={url} onInput={(e) => setUrl((e.target as HTMLInputElement).value)} />
      <select name="scope" value={scope} onChange={(e) => setScope((e.target as HTMLSelectElement).value as typeof scope)}>
        <option value="seed">into the seed</option>
        <option value="all_peers">into every daemon</option>
        <option value="labels">into daemons labelled</option>
      </select>
      {scope === 'labels' ? <input name="labels" placeholder="zone=a" value={labels} onInput={(e) => setLabels((e.target as HTMLInputElement).value)} /> : null}
      <button type="submit" disabled={busy}>Preheat</button>
      {message !== null ? <span class={message.ok ? 'ok' : 'error'}>{message.text}</span> : null}
    </form>
  )
}

function what(j: Job): string {
  if (j.args.url !== undefined) return j.args.url
  const urls = j.args.urls ?? []
  return urls.length === 1 ? urls[0] : `${urls.length} URLs`
}

function scopeText(j: Job): string {
  if (j.args.labels !== undefined && Object.keys(j.args.labels).length > 0) return Object.entries(j.args.labels).map(([k, v]) => `${k}=${v}`).join(', ')
  return j.args.scope ?? 'seed'
}

export function Jobs({ jobs }: { jobs: Polled<Job[]> }) {
  const [error, setError] = useState<string | null>(null)
  const list = [...(jobs.data ?? [])].sort((a, b) => b.id - a.id)
  const act = async (j: Job): Promise<void> => {
    setError(null)
    try {
      await request('DELETE', `/api/v1/jobs/${j.id}`)
      jobs.refresh()
    } catch (err) {
      setError((err as Error).message)
    }
  }
  return (
    <Section id="jobs" title="Preheat jobs" count={list.filter((j) => j.state === 'PENDING' || j.state === 'RUNNING').length} polled={jobs}>
      {jobs.error === undefined ? <CreateJob onCreated={jobs.refresh} /> : null}
      {error !== null ? <p class="error">{error}</p> : null}
      <table>
        <thead><tr><th>Job</th><th>What</th><th>Scope</th><th>State</th><th>Progress</th><th>Created</th><th /></tr></thead>
        <tbody>
          {list.slice(0, 30).map((j) => {
            const p = j.progress
            const done = p.total_bytes > 0 ? p.bytes / p.total_bytes : p.blobs > 0 ? p.succeeded / p.blobs : 0
            const active = j.state === 'PENDING' || j.state === 'RUNNING'
            return (
              <tr key={j.id} data-job={j.id}>
                <td class="num">{j.id}</td>
                <td class="url" title={j.args.url ?? j.args.urls?.join(' ')}>{j.args.type} {what(j)}</td>
                <td>{scopeText(j)}</td>
                <td><span class={`state state-${j.state.toLowerCase()}`} title={j.error?.message}>{j.state.toLowerCase()}</span></td>
                <td>
                  <progress max={1} value={Math.min(1, done)} />
                  <span class="muted"> {p.succeeded}/{p.blobs} blobs · {bytes(p.bytes)}{p.nodes.total > 0 ? ` · ${p.nodes.succeeded}/${p.nodes.total} nodes` : ''}</span>
                  {j.error !== null ? <div class="error small">{j.error.message}</div> : null}
                </td>
                <td>{ago(j.created_at)}</td>
                <td><button class="small" onClick={() => { void act(j) }}>{active ? 'Cancel' : 'Delete'}</button></td>
              </tr>
            )
          })}
        </tbody>
      </table>
      {list.length === 0 && jobs.error === undefined ? <p class="empty">No preheat job yet.</p> : null}
    </Section>
  )
}
