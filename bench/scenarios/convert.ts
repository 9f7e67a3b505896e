// Scenario 6 of the benchmark issue: image conversion. `nydus-fs convert` against the tools a
// user would pick instead, on the same real Debian image (debootstrap minbase, one layer),
// in the same run and interleaved:
//
//   nydus-fs convert        registry → registry: pulls the gzip layer, chunks, hashes,
//                           compresses (zstd) and pushes the lazy image
//   ctr-remote --estargz    eStargz (stargz-snapshotter's ctr-remote, a fresh containerd per
//                           run): content fetch from the registry, convert in the content
//                           store, push; timed per phase and in total
//   mkfs.erofs              directory → EROFS image file, uncompressed and -zlz4hc (no
//                           network); and tar.gz → EROFS: extracting the image's layer first
//
//   node bench/scenarios/convert.ts [--quick] [--runs 3]
//
// Goal (issue 5): nydus-fs convert faster than both mkfs.erofs and ctr-remote.

import { mkdir, mkdtemp, rm, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'

import { formatBytes, parseDuration } from '@naiad/proto'
import { startContainerd, startRegistry, type RegistryHandle } from '@naiad/testkit'

import { foreignCpu, killDescendants } from '../proc-stats.ts'
import { parseCommandLine, usageFailer } from '../report/cli.ts'
import { checkGoal, goalLine, machineNote, table } from '../report/goals.ts'
import { median, withSignal, writeResults } from '../report/helpers.ts'
import { debianLayout, imageBytes, layerBlob, must, pushLayout, timedRun } from '../testbed/debian-image.ts'

const NYDUS_FS = fileURLToPath(new URL('../../nydus-fs/bin/nydus-fs.ts', import.meta.url))
const RESULTS = fileURLToPath(new URL('../results/', import.meta.url))

const USAGE = `usage: node bench/scenarios/convert.ts [options]
  --quick              a smaller image (etc, usr/bin, usr/sbin, usr/lib of the rootfs) and 1 run
                       of each (unless --runs is given)
  --runs N             measurements of each tool, interleaved (default 3)
  --timeout DURATION   bound on the whole scenario (default 30m)
  --dir DIR            work directory, kept afterwards (default: a temp dir, removed)
  --out PREFIX         results: PREFIX.json, PREFIX.md (default bench/results/convert)
The Debian rootfs and its OCI layout are cached in bench/.cache/ (delete it to rebuild).`

const usageError = usageFailer('convert', USAGE)

const args = parseCommandLine(USAGE, usageError, () => parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    runs: { type: 'string' },
    timeout: { type: 'string', default: '30m' },
    dir: { type: 'string' },
    out: { type: 'string', default: join(RESULTS, 'convert') },
    help: { type: 'boolean', short: 'h', default: false }
  }
}).values)
let timeoutMs = 0
try {
  timeoutMs = parseDuration(args.timeout, '--timeout')
} catch (err) {
  usageError((err as Error).message)
}
const runs = Number(args.runs ?? (args.quick ? '1' : '3'))
if (!Number.isInteger(runs) || runs < 1 || runs > 20) usageError(`--runs must be a whole number from 1 to 20, not ${args.runs}`)

const interrupted = new AbortController()
for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => interrupted.abort(new Error(`interrupted by ${sig}`)))
const overall = AbortSignal.any([interrupted.signal, AbortSignal.timeout(timeoutMs)])
const step = (): AbortSignal => AbortSignal.any([overall, AbortSignal.timeout(600_000)])
const log = (msg: string): void => { process.stderr.write(`${msg}\n`) }

type Tool = 'nydus-fs' | 'ctr-remote' | 'mkfs.erofs' | 'tar-to-erofs-lz4hc'

const TOOLS: Record<Tool, { label: string; input: string; output: string; network: string }> = {
  'nydus-fs': { label: 'nydus-fs convert', input: 'image in the registry (gzip layer)', output: 'lazy image pushed to the registry (zstd chunks + bootstrap)', network: 'yes: pull and push on loopback included' },
  'ctr-remote': { label: 'ctr-remote image convert --estargz --oci', input: 'image in the registry (gzip layer)', output: 'eStargz image pushed to the registry', network: 'yes: content fetch and push on loopback included (see phases)' },
  'mkfs.erofs': { label: 'mkfs.erofs (uncompressed)', input: 'unpacked rootfs directory', output: 'EROFS image file', network: 'no (and no unpacking)' },
  'tar-to-erofs-lz4hc': { label: 'tar -xzf layer, then mkfs.erofs -zlz4hc', input: 'the image\'s gzip layer (file)', output: 'EROFS image file, lz4hc', network: 'no' }
}

interface Sample {
  tool: Tool
  run: number
  ms: number
  /** Named parts of `ms` (ctr-remote: fetch, convert, push; tar → erofs: extract, mkfs). */
  phases?: Record<string, number>
  outputBytes: number
  otherCpuS: number
  stealS: number
}

/** Tools whose programs are not installed, with the reason; they get no number. */
const missing: Partial<Record<Tool, string>> = {}
const NEEDS: Record<Tool, string[]> = {
  'nydus-fs': [],
  'ctr-remote': ['ctr-remote', 'ctr', 'containerd'],
  'mkfs.erofs': ['mkfs.erofs'],
  'tar-to-erofs-lz4hc': ['mkfs.erofs', 'tar']
}
const PACKAGE: Record<string, string> = { 'ctr-remote': 'stargz-snapshotter', ctr: 'containerd', containerd: 'containerd', 'mkfs.erofs': 'erofs-utils', tar: 'tar' }
for (const [tool, cmds] of Object.entries(NEEDS) as Array<[Tool, string[]]>) {
  for (const cmd of cmds) {
    const r = await timedRun('sh', ['-c', `command -v ${cmd}`], overall)
    if (r.code !== 0) { missing[tool] = `${cmd} is not installed (Debian package ${PACKAGE[cmd]})`; break }
  }
}
const present = (Object.keys(TOOLS) as Tool[]).filter((t) => missing[t] === undefined)

const work = args.dir ?? await mkdtemp(join(tmpdir(), 'naiad-convert-'))
await mkdir(work, { recursive: true })

async function nydusConvert(registry: RegistryHandle, run: number): Promise<Omit<Sample, 'otherCpuS' | 'stealS'>> {
  const r = await must(process.execPath, [NYDUS_FS, 'convert', `${registry.host}/debian:base`, `${registry.host}/nydus-${run}:lazy`, '--plain-http'], step())
  const out = await imageBytes(registry.url, `nydus-${run}`, 'lazy')
  return { tool: 'nydus-fs', run, ms: r.ms, outputBytes: out.total }
}

async function ctrRemote(registry: RegistryHandle, run: number): Promise<Omit<Sample, 'otherCpuS' | 'stealS'>> {
  const dir = join(work, `containerd-${run}`)
  const ctd = await withSignal(startContainerd(dir), overall, 'starting containerd')
  try {
    const src = `${registry.host}/debian:base`
    const dst = `${registry.host}/esgz-${run}:esgz`
    const fetch = await must('ctr', ['-a', ctd.socket, 'content', 'fetch', '--plain-http', src], step())
    const convert = await must('ctr-remote', ['-a', ctd.socket, 'image', 'convert', '--estargz', '--oci', src, dst], step())
    const push = await must('ctr', ['-a', ctd.socket, 'images', 'push', '--plain-http', dst], step())
    const out = await imageBytes(registry.url, `esgz-${run}`, 'esgz')
    return { tool: 'ctr-remote', run, ms: fetch.ms + convert.ms + push.ms, phases: { fetch: fetch.ms, convert: convert.ms, push: push.ms }, outputBytes: out.total }
  } finally {
    await ctd.stop()
    await rm(dir, { recursive: true, force: true })
  }
}

async function mkfsErofs(tool: Tool, rootfs: string, layer: string, run: number): Promise<Omit<Sample, 'otherCpuS' | 'stealS'>> {
  const out = join(work, `${tool}-${run}.erofs`)
  try {
    if (tool === 'tar-to-erofs-lz4hc') {
      const dir = join(work, `extract-${run}`)
      await mkdir(dir, { recursive: true })
      try {
        // As root, tar keeps owners, modes and device nodes: the tree mkfs.erofs needs.
        const x = await must('tar', ['-xzf', layer, '-C', dir, '--numeric-owner', '--xattrs', '--xattrs-include=*'], step())
        const m = await must('mkfs.erofs', ['-zlz4hc', '--quiet', out, dir], step())
        return { tool, run, ms: x.ms + m.ms, phases: { extract: x.ms, mkfs: m.ms }, outputBytes: (await stat(out)).size }
      } finally {
        await rm(dir, { recursive: true, force: true })
      }
    }
    const m = await must('mkfs.erofs', ['--quiet', out, rootfs], step())
    return { tool, run, ms: m.ms, outputBytes: (await stat(out)).size }
  } finally {
    await rm(out, { force: true })
  }
}

// ---------------------------------------------------------------- report

function summarize(samples: Sample[]): Record<Tool, { medianMs: number; bestMs: number; outputBytes: number; phases?: Record<string, number> }> {
  const out = {} as Record<Tool, { medianMs: number; bestMs: number; outputBytes: number; phases?: Record<string, number> }>
  for (const tool of present) {
    const s = samples.filter((x) => x.tool === tool)
    const keys = Object.keys(s[0].phases ?? {})
    out[tool] = {
      medianMs: median(s.map((x) => x.ms)),
      bestMs: Math.min(...s.map((x) => x.ms)),
      outputBytes: median(s.map((x) => x.outputBytes)),
      ...(keys.length === 0 ? {} : { phases: Object.fromEntries(keys.map((k) => [k, median(s.map((x) => x.phases![k]))])) })
    }
  }
  return out
}

function goals(samples: Sample[]): Array<ReturnType<typeof checkGoal> | string> {
  const m = summarize(samples)
  const n = m['nydus-fs'].medianMs
  const vs = (what: string, tool: Tool): ReturnType<typeof checkGoal> | string =>
    missing[tool] === undefined ? checkGoal(what, n / m[tool].medianMs, 'at most', 1) : `${what}: not available (${missing[tool]})`
  return [
    vs('nydus-fs convert time / ctr-remote --estargz time, both registry to registry (medians)', 'ctr-remote'),
    vs('nydus-fs convert time / mkfs.erofs -zlz4hc time from the same gzip layer (tar -xzf + mkfs.erofs)', 'tar-to-erofs-lz4hc'),
    vs('nydus-fs convert time / mkfs.erofs time from an unpacked directory, uncompressed (the fastest use of mkfs.erofs)', 'mkfs.erofs')
  ]
}

function markdown(samples: Sample[]): string {
  const m = summarize(samples)
  const tools = [...present].sort((a, b) => m[b].medianMs - m[a].medianMs)
  const other = samples.reduce((a, s) => a + s.otherCpuS + s.stealS, 0)
  const wall = samples.reduce((a, s) => a + s.ms / 1000, 0)
  const fmtPhases = (p: Record<string, number> | undefined): string => p === undefined ? '' : Object.entries(p).map(([k, v]) => `${k} ${(v / 1000).toFixed(2)}`).join(' + ')
  return [
    `## Conversion of a Debian bookworm minbase image${source.variant === 'small' ? ' (--quick: only its etc, usr/bin, usr/sbin, usr/lib, var/lib/dpkg)' : ''}, one ${formatBytes(source.layerBytes)} gzip layer, ${formatBytes(source.unpackedBytes)} unpacked; ${runs} run${runs === 1 ? '' : 's'} of each, interleaved`,
    '',
    'Slowest first.',
    '',
    table(['tool', 'median s', 'best s', 'vs nydus-fs', 'phases, s (median)', 'output', 'input → output', 'network'], ['l', 'r', 'r', 'r', 'l', 'r', 'l', 'l'],
      tools.map((t) => [TOOLS[t].label, (m[t].medianMs / 1000).toFixed(2), (m[t].bestMs / 1000).toFixed(2), (m[t].medianMs / m['nydus-fs'].medianMs).toFixed(2),
        fmtPhases(m[t].phases), formatBytes(m[t].outputBytes), `${TOOLS[t].input} → ${TOOLS[t].output}`, TOOLS[t].network])),
    '',
    ...(Object.keys(missing) as Tool[]).map((t) => `Not available: ${TOOLS[t].label}: ${missing[t]}; no number is given for it.\n`),
    ...goals(samples).map((g) => `- ${typeof g === 'string' ? g : goalLine(g)}`),
    '',
    'Times run from spawning each tool to its exit (ctr-remote: the sum of its three commands against a containerd started before the clock). ' +
    'The registry (docker-registry) and every file are on this machine, so "network" is loopback. ctr-remote runs with its defaults (gzip level 9). ' +
    'mkfs.erofs 1.5 (Debian 12) cannot read a tar, so "tar → EROFS" unpacks the layer with tar first (its mkfs phase alone is mkfs.erofs -zlz4hc from a directory); the uncompressed row starts from the cached rootfs the image was built from. ' +
    'Compression: nydus-fs zstd per chunk, eStargz gzip per file chunk, EROFS lz4hc per cluster (erofs-utils 1.5 has only lz4 and lz4hc).',
    '',
    machineNote(other, wall),
    ''
  ].join('\n')
}

// ---------------------------------------------------------------- main

let registry: RegistryHandle | undefined
let source = { variant: 'base', layerBytes: 0, unpackedBytes: 0 }
let failed = false
try {
  const variant = args.quick ? 'small' : 'base'
  const { image, rootfs, layout } = await debianLayout(overall, log, variant)
  const layer = await layerBlob(layout, variant)
  const unpacked = Number((await must('du', ['-sb', rootfs], overall)).stdout.split(/\s/)[0])
  registry = await withSignal(startRegistry(join(work, 'registry')), overall, 'starting the registry')
  await pushLayout(image, `${registry.host}/debian:base`, overall)
  source = { variant, layerBytes: layer.size, unpackedBytes: unpacked }
  log(`Debian image in ${registry.url}/v2/debian: layer ${formatBytes(layer.size)}, rootfs ${formatBytes(unpacked)}`)

  const samples: Sample[] = []
  const tools = present
  for (let run = 0; run < runs; run++) {
    const order = tools.map((_, i) => tools[(i + run) % tools.length])
    for (const tool of order) {
      const reg = registry
      const { value, otherCpuS, stealS } = await foreignCpu(() => tool === 'nydus-fs'
        ? nydusConvert(reg, run)
        : tool === 'ctr-remote' ? ctrRemote(reg, run) : mkfsErofs(tool, rootfs, layer.path, run))
      samples.push({ ...value, otherCpuS, stealS })
      log(`run ${run + 1}/${runs} ${tool}: ${(value.ms / 1000).toFixed(2)} s${value.phases === undefined ? '' : ` (${Object.entries(value.phases).map(([k, v]) => `${k} ${(v / 1000).toFixed(2)}`).join(', ')})`}, output ${formatBytes(value.outputBytes)}; other processes ${otherCpuS} cpu-s`)
    }
  }

  const md = markdown(samples)
  process.stdout.write(`${md}\n`)
  await writeResults(args.out, 'convert', {
    runs,
    source,
    tools: TOOLS,
    notAvailable: missing,
    summary: summarize(samples),
    goals: goals(samples),
    samples
  }, md)
  log(`wrote ${args.out}.json, .md`)
} catch (err) {
  failed = true
  log(`convert: ${overall.aborted ? (overall.reason as Error).message : (err as Error).stack ?? String(err)}`)
} finally {
  await registry?.stop()
  await killDescendants()
  if (args.dir === undefined) await rm(work, { recursive: true, force: true })
}
process.exit(failed ? 1 : 0)
