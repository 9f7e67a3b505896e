import type { Polled } from '../hooks.ts'
import { ago, rate, shortId } from '../format.ts'
import type { HealthHosts, Peer } from '../types.ts'
import { Section } from './section.tsx'

export function Peers({ peers, health }: { peers: Polled<Peer[]>; health: Polled<HealthHosts> }) {
  const states = new Map((health.data?.hosts ?? []).map((h) => [h.id, h]))
  const list = [...(peers.data ?? [])].sort((a, b) => Number(b.isSeed) - Number(a.isSeed) || a.hostname.localeCompare(b.hostname))
  return (
    <Section id="peers" title="Peers" count={list.filter((p) => !p.gone).length} polled={peers}>
      <table>
        <thead><tr><th>Host</th><th>Peer ID</th><th>Labels</th><th>Health</th><th>Bandwidth</th><th>Pieces served</th><th>Last seen</th></tr></thead>
        <tbody>
          {list.map((p) => {
            const h = states.get(p.id)
            const state = p.gone ? 'gone' : p.isSeed ? 'seed' : h === undefined ? (health.error !== undefined ? 'unknown' : 'healthy') : h.stale ? 'stale' : h.state
            return (
              <tr key={p.id} class={p.gone ? 'muted' : ''} data-peer={p.id}>
                <td>{p.hostname}{p.isSeed ? <span class="tag">seed</span> : null}</td>
                <td class="mono" title={p.id}>{shortId(p.id)}</td>
                <td>{Object.entries(p.labels).map(([k, v]) => <span class="label" key={k}>{k}={v}</span>)}{p.idc !== '' ? <span class="label">idc={p.idc}</span> : null}</td>
                <td><span class={`state state-${state}`} title={h?.firing.map((f) => f.rule).join(', ')}>{state}</span></td>
                <td class="num">{rate(p.bandwidth)}</td>
                <td class="num">{p.goodPieces}{p.badPieces + p.failedPieces > 0 ? <span class="bad"> / {p.badPieces + p.failedPieces} failed</span> : null}</td>
                <td>{ago(p.lastSeen)}</td>
              </tr>
            )
          })}
        </tbody>
      </table>
      {list.length === 0 ? <p class="empty">No daemon has announced itself yet.</p> : null}
    </Section>
  )
}
