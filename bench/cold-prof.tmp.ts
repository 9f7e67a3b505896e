import { mkdtemp, readdir } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { downloadVia, startDaemon, startSupernode, TestOrigin, writeBlob } from '@naiad/testkit'
import { formatSummary, summarizeFile } from './cpuprofile-summary.ts'
const dir = await mkdtemp(join(tmpdir(), 'coldprof-'))
const size = Number(process.env.MB ?? 256) * 2 ** 20
await writeBlob(join(dir, 'blob'), size, 'cp')
const origin = await new TestOrigin().start()
origin.files.set('/one', { path: join(dir, 'blob') })
const prof = (n: string) => ({ NODE_OPTIONS: `--cpu-prof --cpu-prof-dir=${join(dir, n)}` })
const sn = await startSupernode(join(dir, 'sn'), { env: process.env.PROF ? prof('snp') : {} })
const d = await startDaemon(join(dir, 'd1'), sn.url, { env: process.env.PROF ? prof('dp') : {} })
const t0 = performance.now()
const nowUs = () => Number(process.hrtime.bigint() / 1000n)
const u0 = nowUs()
const tl: string[] = []
const r = await downloadVia(d.apiUrl, { url: `${origin.url}/one` }, (e) => tl.push(`${(performance.now() - t0).toFixed(0)}:${(e.completedBytes / 2 ** 20).toFixed(0)}`))
console.log(tl.join(' '))
const u1 = nowUs()
console.log(JSON.stringify(r).slice(0, 200), (performance.now() - t0).toFixed(0), 'ms')
await d.process.stop(); await sn.process.stop(); await origin.stop()
if (process.env.PROF) for (const n of ['snp', 'dp']) {
  const f = (await readdir(join(dir, n))).find((x) => x.endsWith('.cpuprofile'))!
  console.log(formatSummary(await summarizeFile(join(dir, n, f), { from: u0, to: u1, top: 18 }), n))
}
