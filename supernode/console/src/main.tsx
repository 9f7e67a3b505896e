// The Naiad web console: one page over the supernode's HTTP API, polled every two seconds.
// Built by scripts/build.ts into dist/console/ and served by the supernode at `/`.

import { render } from 'preact'
import { useEffect, useState } from 'preact/hooks'

import { adoptTokenFromLocation, setToken, token } from './api.ts'
import { onUnauthorized, usePoll } from './hooks.ts'
import { ago, shortId } from './format.ts'
import type { Doctor, HealthEvent, HealthHosts, Info, Job, Peer, Slo, Task } from './types.ts'
import { DoctorPanel, HealthEvents, SloPanel } from './views/health.tsx'
import { Jobs } from './views/jobs.tsx'
import { Peers } from './views/peers.tsx'
import { Tasks } from './views/tasks.tsx'

function TokenForm({ onDone }: { onDone: () => void }) {
  const [value, setValue] = useState('')
  return (
    <form class="token" onSubmit={(e) => { e.preventDefault(); setToken(value.trim()); onDone() }}>
      <p>This supernode asks for an API token.</p>
      <input type="password" name="token" placeholder="API token" value={value} onInput={(e) => setValue((e.target as HTMLInputElement).value)} autoFocus />
      <button type="submit">Open</button>
    </form>
  )
}

function App() {
  const [needToken, setNeedToken] = useState(false)
  const [now, setNow] = useState(Date.now())
  useEffect(() => onUnauthorized(() => setNeedToken(true)), [])
  useEffect(() => { const t = setInterval(() => setNow(Date.now()), 1000); return () => clearInterval(t) }, [])
  const paused = needToken
  const info = usePoll<Info>(paused ? null : '/api/v1/info', 10_000)
  const peers = usePoll<Peer[]>(paused ? null : '/api/v1/peers')
  const health = usePoll<HealthHosts>(paused ? null : '/api/v1/health/hosts')
  const tasks = usePoll<Task[]>(paused ? null : '/api/v1/tasks')
  const jobs = usePoll<Job[]>(paused ? null : '/api/v1/jobs')
  const slo = usePoll<Slo>(paused ? null : '/api/v1/slo', 5000)
  const events = usePoll<HealthEvent[]>(paused ? null : '/api/v1/health/events?limit=100', 5000)
  const doctor = usePoll<Doctor>(paused ? null : '/api/v1/doctor', 10_000)
  if (needToken) return <main><h1>Naiad</h1><TokenForm onDone={() => setNeedToken(false)} /></main>
  const live = peers.error === undefined && peers.at > 0
  return (
    <main>
      <header class="top">
        <h1>Naiad</h1>
        <span class="muted mono" title={info.data?.peerId}>supernode {info.data === undefined ? '…' : shortId(info.data.peerId)}{info.data?.seed === true ? ' · seed on' : ''}</span>
        <span class={`live ${live ? 'on' : 'off'}`} id="live">{live ? `live · updated ${ago(peers.at, now)}` : peers.error !== undefined ? `offline: ${peers.error.message}` : 'connecting…'}</span>
        {token() !== null ? <button class="small" onClick={() => { setToken(null); location.reload() }}>Forget token</button> : null}
      </header>
      <div class="grid">
        <Peers peers={peers} health={health} />
        <SloPanel slo={slo} />
        <Tasks tasks={tasks} peers={peers} />
        <Jobs jobs={jobs} />
        <HealthEvents events={events} peers={peers} />
        <DoctorPanel doctor={doctor} />
      </div>
    </main>
  )
}

adoptTokenFromLocation()
render(<App />, document.getElementById('app')!)
