// Scenario 5 of the benchmark issue: read throughput of a nydus-fs mount against the ceiling
// of FUSE in Node, a bare passthrough file system on the same binding (bench/fuse/
// passthrough.ts), in the same run and interleaved. One file of --size bytes is put in an
// OCI image (an uncompressed tar layer in a real docker-registry on loopback), converted with
// `nydus-fs convert`, mounted, and read once through the mount so that every chunk is in its
// caches; the passthrough mount serves the same bytes from a plain file.
//
//   node bench/scenarios/fuse-read.ts [--quick] [--size 1GiB] [--runs 3] [--random-reads 20000]
//
// Each measurement runs in a child process (never in a process that serves a mount) after
// dropping the page cache and reading each file system's backing files back into it from
// outside FUSE, so both start with FUSE's page cache empty and their own storage warm.
// Goal (issue 5): nydus-fs at least 70 % of the passthrough, sequential and random 4 KiB.

import { spawn, type ChildProcess } from 'node:child_process'
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'

import { formatBytes, parseDuration, parseSize } from '@naiad/proto'
import { LAYER_MEDIA_TYPES, pushBlobFile, pushOciImage, startRegistry, writeBlob, writeLargeTarLayer, type RegistryHandle } from '@naiad/testkit'

import { formatSummary, summarizeFile, type ProfileSummary } from '../cpuprofile-summary.ts'
import { cpuSeconds, foreignCpu, killDescendants } from '../proc-stats.ts'
import { parseCommandLine, usageFailer } from '../report/cli.ts'
import { checkGoal, goalLine, machineNote, table } from '../report/goals.ts'
import { median, withSignal, writeResults } from '../report/helpers.ts'
import { childLines } from '../testbed/child-lines.ts'
import { must, timedRun } from '../testbed/debian-image.ts'

const NYDUS_FS = fileURLToPath(new URL('../../nydus-fs/bin/nydus-fs.ts', import.meta.url))
const PASSTHROUGH = fileURLToPath(new URL('../fuse/passthrough.ts', import.meta.url))
const READ_WORKER = fileURLToPath(new URL('../fuse/read-worker.ts', import.meta.url))
const RESULTS = fileURLToPath(new URL('../results/', import.meta.url))
const FILE = 'data/big.bin'

const USAGE = `usage: node bench/scenarios/fuse-read.ts [options]   (root: mounts FUSE, drops the page cache)
  --quick              a 256 MiB file, 1 run, 5000 random reads (unless given)
  --size SIZE          file size (default 1GiB)
  --runs N             measurements of each pattern and file system, interleaved (default 3)
  --random-reads N     4 KiB reads per random measurement (default 20000)
  --memory-cache SIZE  nydus-fs mount --memory-cache (default: the mount's own, 256MiB)
  --profile            afterwards, remount nydus-fs (same warm disk cache) under --cpu-prof, read once
                       sequentially and once at random, and print its top self-time functions in each
  --timeout DURATION   bound on the whole scenario (default 20m)
  --dir DIR            work directory, kept afterwards (default: a temp dir, removed)
  --out PREFIX         results: PREFIX.json, PREFIX.md (default bench/results/fuse-read)`

const usageError = usageFailer('fuse-read', USAGE)

const args = parseCommandLine(USAGE, usageError, () => parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    size: { type: 'string' },
    runs: { type: 'string' },
    'random-reads': { type: 'string' },
    'memory-cache': { type: 'string' },
    profile: { type: 'boolean', default: false },
    timeout: { type: 'string', default: '20m' },
    dir: { type: 'string' },
    out: { type: 'string', default: join(RESULTS, 'fuse-read') },
    help: { type: 'boolean', short: 'h', default: false }
  }
}).values)
let size = 0
let timeoutMs = 0
try {
  size = parseSize(args.size ?? (args.quick ? '256MiB' : '1GiB'), '--size')
  timeoutMs = parseDuration(args.timeout, '--timeout')
  if (args['memory-cache'] !== undefined) parseSize(args['memory-cache'], '--memory-cache')
} catch (err) {
  usageError((err as Error).message)
}
const runs = Number(args.runs ?? (args.quick ? '1' : '3'))
if (!Number.isInteger(runs) || runs < 1 || runs > 20) usageError(`--runs must be a whole number from 1 to 20, not ${args.runs}`)
const randomReads = Number(args['random-reads'] ?? (args.quick ? '5000' : '20000'))
const MEMORY_CACHE = args['memory-cache'] === undefined ? [] : ['--memory-cache', args['memory-cache']]
if (!Number.isInteger(randomReads) || randomReads < 1 || randomReads > 1_000_000) usageError(`--random-reads must be a whole number up to 1000000, not ${args['random-reads']}`)
if (process.getuid?.() !== 0) usageError('needs root: it mounts FUSE file systems and drops the page cache')

const interrupted = new AbortController()
for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => interrupted.abort(new Error(`interrupted by ${sig}`)))
const overall = AbortSignal.any([interrupted.signal, AbortSignal.timeout(timeoutMs)])
// One pass over the file at no less than 5 MB/s, with a floor.
const step = (): AbortSignal => AbortSignal.any([overall, AbortSignal.timeout(Math.round(Math.max(120_000, (size / 5e6) * 1000)))])
const log = (msg: string): void => { process.stderr.write(`${msg}\n`) }

type Fs = 'nydus-fs' | 'passthrough'
type Pattern = 'seq' | 'random'

interface Sample {
  fs: Fs
  pattern: Pattern
  run: number
  ms: number
  /** seq: MB/s; random: reads per second. */
  rate: number
  p50Us?: number
  p99Us?: number
  /** CPU seconds of the process serving the mount, and of the reader. */
  serverCpuS: number
  otherCpuS: number
  stealS: number
  /** Seconds of the whole step (cache reset and read), over which otherCpuS was counted. */
  windowS: number
}

const work = args.dir ?? await mkdtemp(join(tmpdir(), 'naiad-fuse-read-'))
await mkdir(work, { recursive: true })
const srcDir = join(work, 'src')
const cacheDir = join(work, 'nydus-cache')
const runDir = join(work, 'nydus-run')
const mounts: Record<Fs, string> = { 'nydus-fs': join(work, 'mnt-nydus'), passthrough: join(work, 'mnt-passthrough') }

/** A mount process in the foreground, our child: ready on its ready line, stopped by SIGTERM. */
class MountProcess {
  readonly child: ChildProcess
  readonly ready: Promise<void>
  readonly exited: Promise<number | null>
  readonly logs: string[] = []

  constructor(name: string, args: string[], env: Record<string, string>, isReady: (line: string) => boolean) {
    this.child = spawn(process.execPath, args, { env: { ...process.env, ...env }, stdio: ['pipe', 'pipe', 'pipe'] })
    this.exited = new Promise((resolve) => this.child.once('exit', (code) => resolve(code)))
    this.ready = new Promise((resolve, reject) => {
      const onLine = (line: string): void => {
        this.logs.push(line)
        if (this.logs.length > 200) this.logs.shift()
        if (isReady(line)) resolve()
      }
      createInterface({ input: this.child.stdout! }).on('line', onLine)
      createInterface({ input: this.child.stderr! }).on('line', onLine)
      void this.exited.then((code) => reject(new Error(`${name} exited with ${code} before it was ready:\n${this.logs.slice(-15).join('\n')}`)))
    })
    this.ready.catch(() => {})
  }

  get pid(): number {
    return this.child.pid!
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return
    this.child.kill('SIGTERM')
    const t = setTimeout(() => this.child.kill('SIGKILL'), 15_000)
    await this.exited
    clearTimeout(t)
  }
}

async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = []
  for (const e of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
    const p = join(dir, e.name)
    if (e.isDirectory()) out.push(...await filesUnder(p))
    else if (e.isFile()) out.push(p)
  }
  return out
}

/**
 * Empties the page cache (so FUSE's cached pages of both mounts are gone), then reads the
 * backing files of both file systems from outside FUSE: the passthrough's source file and
 * nydus-fs's disk cache. Done before every measurement, whichever file system it is for.
 */
async function resetCaches(): Promise<void> {
  await must('sync', [], step())
  await writeFile('/proc/sys/vm/drop_caches', '3\n')
  // Only the chunk files: the stats file next to them is replaced every few seconds.
  const files = [join(srcDir, FILE), ...await filesUnder(join(cacheDir, 'chunks'))]
  for (let i = 0; i < files.length; i += 500) await must('sh', ['-c', 'cat "$@" > /dev/null', 'sh', ...files.slice(i, i + 500)], step())
}

async function measure(fs: Fs, pattern: Pattern, server: MountProcess, run: number): Promise<Omit<Sample, 'otherCpuS' | 'stealS' | 'windowS'>> {
  await resetCaches()
  const path = join(mounts[fs], FILE)
  const cpu0 = await cpuSeconds(server.pid)
  const worker = childLines(READ_WORKER, pattern === 'seq' ? ['seq', path] : ['random', path, '--count', String(randomReads)], step())
  const r = await worker.next()
  await worker.exited
  const serverCpuS = Math.round((await cpuSeconds(server.pid) - cpu0) * 100) / 100
  if (pattern === 'seq') {
    if (r.bytes !== size) throw new Error(`${fs}: read ${String(r.bytes)} bytes of ${size}`)
    return { fs, pattern, run, ms: r.ms as number, rate: r.mbps as number, serverCpuS }
  }
  randomDigests.add(`${fs}:${String(r.sha256)}`)
  return { fs, pattern, run, ms: r.ms as number, rate: r.iops as number, p50Us: r.p50Us as number, p99Us: r.p99Us as number, serverCpuS }
}
const randomDigests = new Set<string>()

// ---------------------------------------------------------------- report

function summarize(samples: Sample[]): Record<`${Fs} ${Pattern}`, { rate: number; best: number; p50Us?: number; p99Us?: number; serverCpuS: number }> {
  const out = {} as Record<string, { rate: number; best: number; p50Us?: number; p99Us?: number; serverCpuS: number }>
  for (const fs of ['nydus-fs', 'passthrough'] as Fs[]) {
    for (const pattern of ['seq', 'random'] as Pattern[]) {
      const s = samples.filter((x) => x.fs === fs && x.pattern === pattern)
      out[`${fs} ${pattern}`] = {
        rate: median(s.map((x) => x.rate)),
        best: Math.max(...s.map((x) => x.rate)),
        ...(pattern === 'random' ? { p50Us: median(s.map((x) => x.p50Us!)), p99Us: median(s.map((x) => x.p99Us!)) } : {}),
        serverCpuS: median(s.map((x) => x.serverCpuS))
      }
    }
  }
  return out
}

function goals(samples: Sample[]): ReturnType<typeof checkGoal>[] {
  const m = summarize(samples)
  return [
    checkGoal('nydus-fs / passthrough, sequential MB/s (medians)', m['nydus-fs seq'].rate / m['passthrough seq'].rate, 'at least', 0.7),
    checkGoal('nydus-fs / passthrough, random 4 KiB reads per second (medians)', m['nydus-fs random'].rate / m['passthrough random'].rate, 'at least', 0.7)
  ]
}

function markdown(samples: Sample[], setup: { convertMs: number; warmMs: number }): string {
  const m = summarize(samples)
  const rows: Array<[Fs, Pattern]> = [['nydus-fs', 'seq'], ['passthrough', 'seq'], ['nydus-fs', 'random'], ['passthrough', 'random']]
  const other = samples.reduce((a, s) => a + s.otherCpuS + s.stealS, 0)
  const wall = samples.reduce((a, s) => a + s.windowS, 0)
  const time = (fs: Fs, p: Pattern): number => p === 'seq' ? size / 1e6 / m[`${fs} ${p}`].rate : randomReads / m[`${fs} ${p}`].rate
  return [
    `## FUSE reads of a cached ${formatBytes(size)} file, nydus-fs vs a bare passthrough (fuse-native both), ${runs} run${runs === 1 ? '' : 's'} of each, interleaved`,
    '',
    'Slowest first within each pattern.',
    '',
    table(['file system', 'pattern', 'median', 'best', 'vs passthrough', 'latency p50 / p99', 'server CPU-s per pass'], ['l', 'l', 'r', 'r', 'r', 'r', 'r'],
      (['seq', 'random'] as Pattern[]).flatMap((p) => rows.filter((r) => r[1] === p).sort((a, b) => time(b[0], p) - time(a[0], p))).map(([fs, p]) => {
        const x = m[`${fs} ${p}`]
        const unit = p === 'seq' ? 'MB/s' : 'reads/s'
        return [fs, p === 'seq' ? 'sequential, 1 MiB reads' : `random 4 KiB, ${randomReads} reads`, `${x.rate.toFixed(0)} ${unit}`, `${x.best.toFixed(0)} ${unit}`,
          (x.rate / m[`passthrough ${p}`].rate).toFixed(2), p === 'random' ? `${x.p50Us} / ${x.p99Us} µs` : '', x.serverCpuS.toFixed(2)]
      })),
    '',
    ...goals(samples).map((g) => `- ${goalLine(g)}`),
    '',
    `Before every measurement the page cache is dropped (\`echo 3 > /proc/sys/vm/drop_caches\`: FUSE's cached pages of both mounts go) and the backing files of both file systems are read back into it from outside FUSE ` +
    `(the passthrough's source file and nydus-fs's disk cache), so each read goes through FUSE to a warm store; the mounts use the page cache (kernel_cache), not direct_io, as nydus-fs does. ` +
    `nydus-fs also keeps ${args['memory-cache'] === undefined ? 'its default 256 MiB' : `up to ${args['memory-cache']} (--memory-cache)`} of verified chunks in memory, which survives the drop. Reads are preads, one at a time, from a separate Node process; random offsets are 4 KiB aligned from a seeded generator, ` +
    `the same for both (their SHA-256 matched). The nydus-fs mount is \`nydus-fs mount --daemon none --no-prefetch --foreground\` on an image converted from an uncompressed tar layer in a local docker-registry ` +
    `(convert ${(setup.convertMs / 1000).toFixed(1)} s), warmed by one full read through the mount (${(setup.warmMs / 1000).toFixed(1)} s, fetched from the registry).`,
    '',
    machineNote(other, wall),
    ''
  ].join('\n')
}

// ---------------------------------------------------------------- main

let registry: RegistryHandle | undefined
const servers: Partial<Record<Fs, MountProcess>> = {}
let failed = false
try {
  await mkdir(join(srcDir, 'data'), { recursive: true })
  log(`writing a ${formatBytes(size)} file and an image layer holding it`)
  const sha = await writeBlob(join(srcDir, FILE), size, 'fuse-read')
  const layerPath = join(work, 'layer.tar')
  const layer = await writeLargeTarLayer(layerPath, FILE, size, 'fuse-read')
  if (layer.contentSha256 !== sha) throw new Error('the layer does not hold the same bytes as the source file')
  registry = await withSignal(startRegistry(join(work, 'registry')), overall, 'starting the registry')
  await withSignal(pushBlobFile(registry.url, 'fuse', layerPath, layer.digest), overall, 'pushing the layer')
  await pushOciImage(registry.url, 'fuse', 'src', [{ digest: layer.digest, size: layer.size, mediaType: LAYER_MEDIA_TYPES.none, diffId: layer.digest }])
  await rm(layerPath, { force: true })
  const conv = await must(process.execPath, [NYDUS_FS, 'convert', `${registry.host}/fuse:src`, `${registry.host}/fuse:lazy`, '--plain-http'], step())
  log(`nydus-fs convert: ${(conv.ms / 1000).toFixed(1)} s`)

  servers['nydus-fs'] = new MountProcess('nydus-fs mount', [NYDUS_FS, 'mount', `${registry.host}/fuse:lazy`, mounts['nydus-fs'], '--plain-http', '--cache-dir', cacheDir, '--daemon', 'none', '--no-prefetch', '--foreground', ...MEMORY_CACHE],
    { NAIAD_RUN_DIR: runDir }, (l) => l.includes('"nydus-fs mount ready"'))
  servers.passthrough = new MountProcess('passthrough', [PASSTHROUGH, srcDir, mounts.passthrough], {}, (l) => l.includes('"ready":true'))
  await withSignal(Promise.all([servers['nydus-fs'].ready, servers.passthrough.ready]), AbortSignal.any([overall, AbortSignal.timeout(60_000)]), 'mounting')

  // Warm nydus-fs (every chunk fetched, verified and cached) and check both serve the file's bytes.
  let warmMs = 0
  for (const fs of ['nydus-fs', 'passthrough'] as Fs[]) {
    const w = childLines(READ_WORKER, ['seq', join(mounts[fs], FILE), '--hash'], step())
    const r = await w.next()
    await w.exited
    if (r.sha256 !== sha) throw new Error(`${fs} served other bytes: sha256 ${String(r.sha256)}, expected ${sha}`)
    if (fs === 'nydus-fs') warmMs = r.ms as number
    log(`${fs}: first read ${((r.ms as number) / 1000).toFixed(1)} s, content verified`)
  }

  const samples: Sample[] = []
  const fss: Fs[] = ['nydus-fs', 'passthrough']
  for (let run = 0; run < runs; run++) {
    for (const pattern of ['seq', 'random'] as Pattern[]) {
      for (const fs of run % 2 === 0 ? fss : [...fss].reverse()) {
        const t0 = performance.now()
        const { value, otherCpuS, stealS } = await foreignCpu(() => measure(fs, pattern, servers[fs]!, run))
        samples.push({ ...value, otherCpuS, stealS, windowS: (performance.now() - t0) / 1000 })
        log(`run ${run + 1}/${runs} ${fs} ${pattern}: ${value.rate.toFixed(0)} ${pattern === 'seq' ? 'MB/s' : `reads/s (p50 ${value.p50Us} µs, p99 ${value.p99Us} µs)`}, server ${value.serverCpuS} cpu-s; other processes ${otherCpuS} cpu-s`)
      }
    }
  }
  const digests = new Set([...randomDigests].map((d) => d.split(':')[1]))
  if (digests.size !== 1) throw new Error(`the random reads returned different bytes: ${[...randomDigests].join(', ')}`)

  let md = markdown(samples, { convertMs: conv.ms, warmMs })
  let profile: Record<string, ProfileSummary> | undefined
  if (args.profile) {
    // A fresh nydus-fs process on the same disk cache: its memory cache starts empty, so reads
    // come from the disk cache as they mostly do for a file larger than the memory cache.
    await servers['nydus-fs'].stop()
    const profDir = join(work, 'prof')
    servers['nydus-fs'] = new MountProcess('nydus-fs mount', [NYDUS_FS, 'mount', `${registry.host}/fuse:lazy`, mounts['nydus-fs'], '--plain-http', '--cache-dir', cacheDir, '--daemon', 'none', '--no-prefetch', '--foreground', ...MEMORY_CACHE],
      { NAIAD_RUN_DIR: runDir, NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --cpu-prof --cpu-prof-dir=${profDir}`.trim() }, (l) => l.includes('"nydus-fs mount ready"'))
    await withSignal(servers['nydus-fs'].ready, AbortSignal.any([overall, AbortSignal.timeout(60_000)]), 'remounting under the profiler')
    const windows: Record<string, [number, number, Omit<Sample, 'otherCpuS' | 'stealS' | 'windowS'>]> = {}
    for (const pattern of ['seq', 'random'] as Pattern[]) {
      await resetCaches()
      const t0 = Number(process.hrtime.bigint() / 1000n)
      const r = await measure('nydus-fs', pattern, servers['nydus-fs'], runs)
      windows[pattern] = [t0, Number(process.hrtime.bigint() / 1000n), r]
    }
    await servers['nydus-fs'].stop()
    const f = (await readdir(profDir)).find((n) => n.endsWith('.cpuprofile'))
    if (f === undefined) throw new Error('no .cpuprofile of the nydus-fs mount: did it exit cleanly?')
    profile = {}
    for (const [pattern, [from, to, r]] of Object.entries(windows)) {
      const title = `nydus-fs mount, ${pattern} (${r.rate.toFixed(0)} ${pattern === 'seq' ? 'MB/s' : 'reads/s'} under the profiler, server ${r.serverCpuS} CPU-s)`
      profile[title] = await summarizeFile(join(profDir, f), { from, to, top: 20 })
    }
    md += `\n### Profile of the nydus-fs mount process\n\n\`\`\`\n${Object.entries(profile).map(([k, v]) => formatSummary(v, k)).join('\n')}\n\`\`\`\n`
  }
  process.stdout.write(`${md}\n`)
  await writeResults(args.out, 'fuse-read', {
    size,
    runs,
    randomReads,
    memoryCache: args['memory-cache'] ?? 'default (256MiB)',
    cacheHandling: 'drop_caches before every measurement, then backing files re-read outside FUSE; kernel_cache mounts, no direct_io',
    convertMs: conv.ms,
    warmMs,
    summary: summarize(samples),
    goals: goals(samples),
    samples,
    profile
  }, md)
  log(`wrote ${args.out}.json, .md`)
} catch (err) {
  failed = true
  log(`fuse-read: ${overall.aborted ? (overall.reason as Error).message : (err as Error).stack ?? String(err)}`)
} finally {
  await Promise.all(Object.values(servers).map((s) => s.stop().catch(() => {})))
  // A mount whose process died leaves its mountpoint: detach it.
  for (const m of Object.values(mounts)) await timedRun('fusermount', ['-uz', m], AbortSignal.timeout(10_000)).catch(() => {})
  await registry?.stop()
  await killDescendants()
  if (args.dir === undefined) await rm(work, { recursive: true, force: true })
}
process.exit(failed ? 1 : 0)
