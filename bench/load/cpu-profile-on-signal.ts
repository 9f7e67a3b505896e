// A CPU profile of one stretch of a process's life, started and stopped from outside. Loaded
// into any process with `NODE_OPTIONS="--import ./bench/load/cpu-profile-on-signal.ts"
// NAIAD_CPU_PROFILE_DIR=DIR`: a SIGUSR2 starts V8's sampling profiler (through the
// inspector, in the process itself), the next stops it and writes DIR/<pid>.cpuprofile, whose
// sample times are on the machine's monotonic clock as `--cpu-prof`'s are. scheduler-scale's
// --profile uses it for its load window only: a supernode under `--cpu-prof` from its start,
// through the registration of thousands of peers, ran every timer 100 ms late and never let
// its pace fall (bench/README.md).

import { mkdirSync, writeFileSync } from 'node:fs'
import { Session } from 'node:inspector'
import { join } from 'node:path'

const dir = process.env.NAIAD_CPU_PROFILE_DIR
if (dir !== undefined && dir !== '') {
  mkdirSync(dir, { recursive: true })
  let session: Session | undefined
  process.on('SIGUSR2', () => {
    if (session === undefined) {
      const s = new Session()
      session = s
      s.connect()
      s.post('Profiler.enable', () => { s.post('Profiler.start') })
      return
    }
    const s = session
    session = undefined
    s.post('Profiler.stop', (err, res) => {
      if (err === null) writeFileSync(join(dir, `${process.pid}.cpuprofile`), JSON.stringify((res as { profile: unknown }).profile))
      else process.stderr.write(`cpu-profile-on-signal: ${err.message}\n`)
      s.disconnect()
    })
  })
}
