// `npm run bench`: every benchmark of this folder in turn, or the ones named, with the other
// arguments passed through; `--quick` picks each one's short variant.
//
//   npm run bench                          # all of them
//   npm run bench -- --quick               # all, short (issue 5: under 5 minutes on 2 cores)
//   npm run bench -- swarm-pull --quick    # one by name
//
// The scenarios of issue 5 that are not built yet are listed as "not available" and never
// given a number. Exits non-zero if any benchmark that ran failed.

import { spawnSync } from 'node:child_process'
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { cpus, loadavg } from 'node:os'
import { basename } from 'node:path'
import { fileURLToPath } from 'node:url'

interface Benchmark {
  name: string
  /** Script under bench/, or why it is not available. */
  file?: string
  missing?: string
  /** Arguments that stand for --quick. */
  quick?: string[]
  what: string
}

const BENCHMARKS: Benchmark[] = [
  { name: 'swarm-pull', file: 'scenarios/swarm-pull.ts', quick: ['--quick'], what: 'issue 5 scenario 1: N hosts pull one blob at once, direct vs Naiad, on a netns testbed (needs root)' },
  { name: 'peer-transfer', file: 'scenarios/piece-throughput.ts', quick: ['--size', '256MiB', '--runs', '1'], what: 'scenario 3: one daemon fetches a blob another holds, on loopback, over the TLS and the plain TCP data channel, vs raw TCP, a verified TLS copy and HTTP in the same run (goals: half of raw TCP, 0.9 of the verified TLS copy)' },
  { name: 'swarm-pull-image', file: 'scenarios/swarm-pull-image.ts', quick: ['--quick'], what: 'issue 5 scenario 1, image part: N hosts skopeo-pull a 4-layer image, direct vs through the dfdaemon mirror (needs root, skopeo, umoci, debootstrap, docker-registry)' },
  { name: 'proxy-overhead', file: 'scenarios/proxy-overhead.ts', quick: ['--quick'], what: 'issue 5 scenario 2: a blob from a registry through dfdaemon cold and warm vs direct and raw TCP' },
  { name: 'lazy-start', file: 'scenarios/lazy-start.ts', quick: ['--quick'], what: 'issue 5 scenario 4: nydus-fs lazy start vs skopeo copy + umoci unpack, registry behind a 100 Mbit/s link (needs root, debootstrap, umoci, skopeo, docker-registry)' },
  { name: 'fuse-read', file: 'scenarios/fuse-read.ts', quick: ['--quick'], what: 'issue 5 scenario 5: nydus-fs reads vs a bare passthrough FUSE (needs root)' },
  { name: 'convert', file: 'scenarios/convert.ts', quick: ['--quick'], what: 'issue 5 scenario 6: nydus-fs convert vs mkfs.erofs and ctr-remote on a Debian image (needs root)' },
  { name: 'scheduler-scale', file: 'scenarios/scheduler-scale.ts', quick: ['--quick'], what: 'issue 5 scenario 7: 10,000 synthetic peers against one supernode (quick: 1,000)' },
  { name: 'single-node', file: 'scenarios/single-node.ts', quick: ['--runs', '1'], what: 'one node: dfget cold and warm through the daemon vs curl from the origin and cp (goals: cold 3x curl, warm 2x cp; with --link 1000, cold 1.15x curl)' },
  { name: 'soak', file: 'scenarios/soak.ts', quick: ['--duration', '1m'], what: 'dfget loops for minutes over small files through daemons with a small cache: fetches, failures, origin egress, back to source, daemon RSS' }
]

const argv = process.argv.slice(2)
if (argv.includes('--help') || argv.includes('-h')) {
  process.stdout.write(`usage: node bench/run.ts [NAME…] [--quick] [arguments passed to each benchmark]\n\n${BENCHMARKS.map((b) => `  ${b.name.padEnd(18)} ${b.file === undefined ? '(not available) ' : ''}${b.what}`).join('\n')}\n`)
  process.exit(0)
}
const known = new Set(BENCHMARKS.map((b) => b.name))
// Leading bare words are benchmark names; everything from the first flag on is passed through.
const firstFlag = argv.findIndex((a) => a.startsWith('-'))
const names = firstFlag < 0 ? argv : argv.slice(0, firstFlag)
const rest = firstFlag < 0 ? [] : argv.slice(firstFlag)
for (const n of names) {
  if (!known.has(n)) {
    process.stderr.write(`run: no benchmark named ${n}; there are ${[...known].join(', ')}\n`)
    process.exit(2)
  }
}
const quick = rest.includes('--quick')
const passThrough = rest.filter((a) => a !== '--quick')
const selected = names.length === 0 ? BENCHMARKS : BENCHMARKS.filter((b) => names.includes(b.name))

const summary: Array<[string, string]> = []
let failed = 0
for (const b of selected) {
  if (b.file === undefined) {
    process.stderr.write(`\n# ${b.name}: not available (${b.missing})\n`)
    summary.push([b.name, `not available: ${b.missing}`])
    continue
  }
  const file = fileURLToPath(new URL(`./${b.file}`, import.meta.url))
  process.stderr.write(`\n# ${b.name} (${b.file})\n`)
  const t0 = performance.now()
  const r = spawnSync(process.execPath, [file, ...(quick ? b.quick ?? [] : []), ...passThrough], { stdio: 'inherit' })
  const s = ((performance.now() - t0) / 1000).toFixed(0)
  if (r.status !== 0) failed++
  summary.push([b.name, r.status === 0 ? `ok (${s} s)` : `failed with ${r.status ?? r.signal} (${s} s)`])
}
process.stderr.write(`\n# summary\n${summary.map(([n, s]) => `  ${n.padEnd(18)} ${s}`).join('\n')}\n`)

// One page with every scenario's goal lines, from the Markdown each one wrote in this run.
const started = Date.now() - performance.now()
const goalRows: string[] = []
for (const b of selected) {
  if (b.file === undefined) {
    goalRows.push(`| ${b.name} | not available: ${b.missing} |`)
    continue
  }
  const md = fileURLToPath(new URL(`./results/${basename(b.file, '.ts')}.md`, import.meta.url))
  if (!existsSync(md) || statSync(md).mtimeMs < started) {
    goalRows.push(`| ${b.name} | no result from this run (${summary.find(([n]) => n === b.name)?.[1] ?? 'not run'}) |`)
    continue
  }
  const goals = readFileSync(md, 'utf8').split('\n').filter((l) => /Goal/.test(l)).map((l) => l.replace(/^[-*\s]+/, '').replaceAll('|', '\\|'))
  goalRows.push(`| ${b.name} | ${goals.length === 0 ? 'ran; it prints no goal line' : goals.join('<br>')} |`)
}
const summaryMd = fileURLToPath(new URL('./results/summary.md', import.meta.url))
writeFileSync(summaryMd, [
  `# Benchmark summary (${new Date().toISOString().slice(0, 16)} UTC, \`npm run bench -- ${argv.join(' ')}\`)`,
  '',
  `Machine: ${cpus().length} × ${cpus()[0]?.model ?? 'unknown CPU'}, Node ${process.version}, load average at the end ${loadavg().map((l) => l.toFixed(1)).join(' / ')}.`,
  '',
  '| scenario | goal and result |',
  '|---|---|',
  ...goalRows,
  ''
].join('\n'))
process.stderr.write(`wrote ${summaryMd}\n`)
process.exit(failed === 0 ? 0 : 1)
