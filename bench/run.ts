// `npm run bench`: every benchmark of this folder in turn, with the arguments passed through
// (e.g. `npm run bench -- --size 256MiB`). Exits non-zero if any of them failed.

import { spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'

const BENCHMARKS = ['piece-throughput.ts']

let failed = 0
for (const name of BENCHMARKS) {
  const file = fileURLToPath(new URL(`./${name}`, import.meta.url))
  process.stderr.write(`\n# ${name}\n`)
  const r = spawnSync(process.execPath, [file, ...process.argv.slice(2)], { stdio: 'inherit' })
  if (r.status !== 0) failed++
}
process.exit(failed === 0 ? 0 : 1)
