import type { Polled } from '../hooks.ts'
import { ago, bytes, percent, shortId } from '../format.ts'
import type { Doctor, HealthEvent, Peer, Slo } from '../types.ts'
import { Section } from './section.tsx'

export function SloPanel({ slo }: { slo: Polled<Slo> }) {
  const s = slo.data?.sli
  const total = s === undefined ? 0 : s.bytes.peer + s.bytes.seed + s.bytes.origin
  return (
    <Section id="slo" title={`Pulls (SLO, last ${s?.window ?? '…'})`} polled={slo}>
      {s !== undefined ? (
        <div>
          <div class="stats">
            <div><b data-sli="pulls">{s.pulls}</b><span>pulls</span></div>
            <div><b data-sli="success">{percent(s.successRate)}</b><span>succeeded</span></div>
            <div><b>{s.secondsPerGiB === null ? '–' : `${s.secondsPerGiB.toFixed(1)} s`}</b><span>per GiB</span></div>
            <div><b>{percent(s.backToSourceRatio)}</b><span>from the origin</span></div>
          </div>
          {total > 0 ? (
            <div class="bar" title={`peers ${bytes(s.bytes.peer)}, seed ${bytes(s.bytes.seed)}, origin ${bytes(s.bytes.origin)}`}>
              <span class="src-peer" style={{ flexGrow: s.bytes.peer }} />
              <span class="src-seed" style={{ flexGrow: s.bytes.seed }} />
              <span class="src-origin" style={{ flexGrow: s.bytes.origin }} />
            </div>
          ) : null}
          <p class="legend"><span class="key src-peer" /> peers {bytes(s.bytes.peer)} <span class="key src-seed" /> seed {bytes(s.bytes.seed)} <span class="key src-origin" /> origin {bytes(s.bytes.origin)}</p>
          {(slo.data?.objectives.length ?? 0) > 0 ? (
            <table>
              <thead><tr><th>Objective</th><th>Target</th><th>Compliance</th><th>Budget left</th><th /></tr></thead>
              <tbody>
                {slo.data!.objectives.map((o) => (
                  <tr key={o.name}>
                    <td>{o.name} <span class="muted">({o.sli}, {o.window})</span></td>
                    <td class="num">{percent(o.target, 2)}</td>
                    <td class="num">{percent(o.compliance, 2)}</td>
                    <td class="num">{percent(o.errorBudgetRemaining, 0)}</td>
                    <td><span class={`state state-${o.met ? 'healthy' : 'failed'}`}>{o.met ? 'met' : 'missed'}</span></td>
                  </tr>
                ))}
              </tbody>
            </table>
          ) : <p class="muted small">No objectives configured (plugin-config.slo.objectives).</p>}
        </div>
      ) : null}
    </Section>
  )
}

export function HealthEvents({ events, peers }: { events: Polled<HealthEvent[]>; peers: Polled<Peer[]> }) {
  const names = new Map((peers.data ?? []).map((p) => [p.id, p.hostname]))
  const list = [...(events.data ?? [])].reverse().slice(0, 20)
  return (
    <Section id="health" title="Health events" count={events.data?.length} polled={events}>
      <table>
        <thead><tr><th>When</th><th>Host</th><th>Rule</th><th>Action</th><th>Decision</th><th>Why</th></tr></thead>
        <tbody>
          {list.map((e) => (
            <tr key={e.id}>
              <td>{ago(e.at)}</td>
              <td>{names.get(e.host) ?? shortId(e.host)}</td>
              <td>{e.rule}</td>
              <td>{e.action}</td>
              <td><span class={`state state-${e.decision}`}>{e.decision}</span></td>
              <td class="small">{e.reason}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {list.length === 0 && events.error === undefined ? <p class="empty">No health decision yet: every host passes its rules.</p> : null}
    </Section>
  )
}

export function DoctorPanel({ doctor }: { doctor: Polled<Doctor> }) {
  const d = doctor.data
  const failing = (d?.nodes ?? []).flatMap((n) => n.findings.filter((f) => f.status === 'fail' || f.status === 'warn').map((f) => ({ host: n.hostname, ...f })))
  return (
    <Section id="doctor" title="Node doctor" polled={doctor}>
      {d !== undefined ? (
        <div>
          <div class="stats">
            <div><b>{d.summary.nodes}</b><span>nodes</span></div>
            <div><b class="ok">{d.summary.ok}</b><span>ok</span></div>
            <div><b class="warn">{d.summary.warn}</b><span>warnings</span></div>
            <div><b class="bad">{d.summary.fail}</b><span>failing</span></div>
          </div>
          <ul class="findings">
            {failing.slice(0, 8).map((f, i) => <li key={i}><span class={`state state-${f.status}`}>{f.status}</span> {f.host}: {f.rule} {f.found !== undefined ? <span class="muted">— {f.found}</span> : null}</li>)}
          </ul>
        </div>
      ) : null}
    </Section>
  )
}
