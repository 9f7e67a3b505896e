// Scenario 4 of the benchmark issue: time and registry bytes until a command runs in a
// container of a real Debian image with python3, from a nydus-fs mount (lazy) against a full
// pull + unpack (skopeo copy to an OCI layout, umoci unpack), with the registry behind a
// shaped link. The containerd row (issue 14) does the same in containerd: `ctr-remote image
// rpull` + `ctr run` through the nydus-fs snapshotter against `ctr image pull` + `ctr run`
// with the overlayfs snapshotter, each trial with a fresh containerd and snapshotter.
//
//   node bench/scenarios/lazy-start.ts [--quick] [--runs 3] [--registry-bandwidth 100] [--methods chroot,containerd]
//
// The image (debootstrap bookworm minbase + python3-minimal, packed with umoci) and the
// registry storage holding it and its nydus-fs conversion are cached in bench/.cache/lazy-start
// (gitignored): only the first run pays for debootstrap, the push and the conversion. The
// conversion is redone when nydus-fs's sources change. Goals: the lazy start takes at most 20 %
// of the full pull's time and at most 15 % of the image's bytes (issue 5, chroot); in
// containerd at most 10 % of the time and 5 % of the bytes (issue 14).

import { createHash } from 'node:crypto'
import { mkdir, readFile, readdir, rm, writeFile } from 'node:fs/promises'
import { cpus, loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'

import { formatBytes, parseDuration } from '@naiad/proto'

import { foreignCpu, killDescendants } from '../proc-stats.ts'
import { parseCommandLine, usageFailer } from '../report/cli.ts'
import { median, withSignal, writeResults } from '../report/helpers.ts'
import { debianPythonRootfs, imageBytes, ociImage, registryConfig, run } from '../testbed/images.ts'
import { Testbed, type Node } from '../testbed/netns.ts'
import { runIn } from '../testbed/processes.ts'

const ROOT = fileURLToPath(new URL('../../', import.meta.url))
const CACHE = join(ROOT, 'bench/.cache/lazy-start')
const RESULTS = join(ROOT, 'bench/results/')
const NYDUS_FS = join(ROOT, 'nydus-fs/bin/nydus-fs.ts')

const USAGE = `usage: node bench/scenarios/lazy-start.ts [options]
  --quick                     one trial of each (default: --runs)
  --runs N                    trials of each method, alternating (default 3)
  --registry-bandwidth MBIT   the registry's link, Mbit/s each way (default 100)
  --client-bandwidth MBIT     the client's link (default 1000)
  --mirror URL                Debian mirror for debootstrap (default: the machine's apt source)
  --methods LIST              chroot (nydus-fs mount vs skopeo+umoci), containerd (snapshotter vs
                              overlayfs), or both (default chroot,containerd)
  --rebuild                   ignore bench/.cache/lazy-start and build the image again
  --timeout DURATION          bound on the whole scenario (default 20m)
  --out PREFIX                results: PREFIX.json, PREFIX.md (default bench/results/lazy-start)`

const usageError = usageFailer('lazy-start', USAGE)

const args = parseCommandLine(USAGE, usageError, () => parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    runs: { type: 'string', default: '3' },
    'registry-bandwidth': { type: 'string', default: '100' },
    'client-bandwidth': { type: 'string', default: '1000' },
    mirror: { type: 'string' },
    methods: { type: 'string', default: 'chroot,containerd' },
    rebuild: { type: 'boolean', default: false },
    timeout: { type: 'string', default: '20m' },
    out: { type: 'string', default: join(RESULTS, 'lazy-start') },
    help: { type: 'boolean', short: 'h', default: false }
  }
}).values)
const positive = (v: string, flag: string): number => {
  const n = Number(v)
  if (!Number.isFinite(n) || n <= 0) usageError(`${flag} must be a positive number, not ${v}`)
  return n
}
const runs = args.quick ? 1 : positive(args.runs, '--runs')
const registryMbit = positive(args['registry-bandwidth'], '--registry-bandwidth')
const clientMbit = positive(args['client-bandwidth'], '--client-bandwidth')
let timeoutMs = 0
try {
  timeoutMs = parseDuration(args.timeout, '--timeout')
} catch (err) {
  usageError((err as Error).message)
}
const methodSets = args.methods.split(',').map((m) => m.trim()).filter((m) => m !== '')
if (methodSets.length === 0 || methodSets.some((m) => m !== 'chroot' && m !== 'containerd')) usageError(`--methods takes chroot and/or containerd, not "${args.methods}"`)
const GOALS = { timeRatio: 0.2, bytesRatio: 0.15 }
const CONTAINERD_GOALS = { timeRatio: 0.1, bytesRatio: 0.05 }
const COMMAND = ['python3', '-c', "print('hi')"]
const STEP_MS = 10 * 60_000

const interrupted = new AbortController()
for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => interrupted.abort(new Error(`interrupted by ${sig}`)))
const overall = AbortSignal.any([interrupted.signal, AbortSignal.timeout(timeoutMs)])
const log = (msg: string): void => { process.stderr.write(`${msg}\n`) }

// ---------------------------------------------------------------- the image (cached)

/** Runs a command in a node (or, without one, on the machine); fails on a non-zero exit. */
async function sh(bed: Testbed | undefined, node: Node | undefined, cmd: string, argv: string[], what: string): Promise<string> {
  if (bed === undefined || node === undefined) return run(cmd, argv, what, overall)
  const r = await runIn(bed, node, cmd, argv, AbortSignal.any([overall, AbortSignal.timeout(STEP_MS)]))
  if (r.code !== 0) throw new Error(`${what}: ${cmd} exited with ${r.code}: ${r.stderr.trim().slice(-2000)}`)
  return r.stdout
}

/** Fingerprint of the nydus-fs image format code: a change means converting again. */
async function nydusFingerprint(): Promise<string> {
  const h = createHash('sha256')
  const walk = async (dir: string): Promise<void> => {
    for (const e of (await readdir(dir, { withFileTypes: true })).sort((a, b) => a.name.localeCompare(b.name))) {
      const p = join(dir, e.name)
      if (e.isDirectory()) await walk(p)
      else if (e.name.endsWith('.ts')) h.update(p.slice(ROOT.length)).update(await readFile(p))
    }
  }
  await walk(join(ROOT, 'nydus-fs/src'))
  await walk(join(ROOT, 'proto/src/lazy-image'))
  return h.digest('hex').slice(0, 16)
}

// ---------------------------------------------------------------- the testbed

/** Bytes the node's interface has sent so far (its egress, packet headers included). */
async function txBytes(node: Node): Promise<number> {
  const out = await sh(undefined, undefined, 'ip', ['-n', node.ns, '-s', '-j', 'link', 'show', 'dev', 'eth0'], 'ip link stats')
  const [link] = JSON.parse(out) as Array<{ stats64: { tx: { bytes: number } } }>
  return link.stats64.tx.bytes
}

type Method = 'full-pull' | 'nydus-fs' | 'ctr-overlayfs' | 'ctr-naiad'

interface Trial {
  method: Method
  run: number
  /** From the first command's start (the `start` mark) to the line `hi` on stdout, s. */
  toOutputS: number
  /** Steps as the script timed them, s. */
  steps: Record<string, number>
  /** Registry interface egress until the output, and until the trial's end (umount / cleanup). */
  egressToOutput: number
  egressTotal: number
  otherCpuS: number
}

/**
 * Runs a bash script in the client's namespace, timing it from its `step start` mark (what
 * comes before, such as starting containerd, is not timed) to the first stdout line `hi`.
 * The script prints `step NAME NANOSECONDS` (wall clock) lines to stderr for the breakdown.
 */
async function timedScript(bed: Testbed, client: Node, registry: Node, script: string): Promise<{ toOutputS: number; egressToOutput: number; egressTotal: number; steps: Record<string, number> }> {
  const signal = AbortSignal.any([overall, AbortSignal.timeout(STEP_MS)])
  const tx0 = await txBytes(registry)
  const t0 = performance.now()
  const child = bed.spawn(client, 'bash', ['-c', script], { env: { ...process.env } })
  let stdout = ''
  let stderr = ''
  let outputAt: number | undefined
  let outputWallMs = 0
  let txAtOutput: Promise<number> | undefined
  child.stdout!.on('data', (d: Buffer) => {
    stdout += d.toString()
    if (outputAt === undefined && /^hi$/m.test(stdout)) {
      outputAt = performance.now()
      outputWallMs = Date.now()
      txAtOutput = txBytes(registry)
    }
  })
  child.stderr!.on('data', (d: Buffer) => { stderr = (stderr + d.toString()).slice(-20_000) })
  const kill = (): void => { child.kill('SIGTERM'); setTimeout(() => child.kill('SIGKILL'), 5000).unref() }
  signal.addEventListener('abort', kill, { once: true })
  const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)))
  signal.removeEventListener('abort', kill)
  const tx1 = await txBytes(registry)
  if (code !== 0 || outputAt === undefined || txAtOutput === undefined) throw new Error(`script exited with ${code}${outputAt === undefined ? ' without printing hi' : ''}: ${stderr.trim().slice(-3000)}`)
  const marks = [...stderr.matchAll(/^step (\S+) (\d+)$/gm)].map((m) => [m[1], Number(m[2])] as const)
  const steps: Record<string, number> = {}
  for (let i = 1; i < marks.length; i++) steps[marks[i][0]] = Math.round((marks[i][1] - marks[i - 1][1]) / 1e6) / 1000
  const start = marks.find(([name]) => name === 'start')
  const toOutputS = start === undefined ? (outputAt - t0) / 1000 : (outputWallMs - start[1] / 1e6) / 1000
  return { toOutputS, egressToOutput: (await txAtOutput) - tx0, egressTotal: tx1 - tx0, steps }
}

const q = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`
const cmd = COMMAND.map(q).join(' ')

function fullPullScript(ref: string, dir: string): string {
  return [
    'set -euo pipefail',
    'mark() { echo "step $1 $(date +%s%N)" >&2; }',
    `trap 'rm -rf ${q(dir)}' EXIT`,
    `mkdir -p ${q(dir)}`,
    'mark start',
    `skopeo copy --quiet --src-tls-verify=false docker://${ref} oci:${q(join(dir, 'oci'))}:base >&2`,
    'mark skopeo-copy',
    `umoci unpack --image ${q(join(dir, 'oci'))}:base ${q(join(dir, 'bundle'))} >&2`,
    'mark umoci-unpack',
    `chroot ${q(join(dir, 'bundle/rootfs'))} ${cmd}`,
    'mark command',
    ''
  ].join('\n')
}

function lazyScript(ref: string, dir: string, runDir: string): string {
  const mnt = join(dir, 'mnt')
  // The mount lives in this script's mount namespace (ip netns exec makes one): if the
  // script dies, killing the namespace's processes ends the FUSE mount with them.
  return [
    'set -euo pipefail',
    'mark() { echo "step $1 $(date +%s%N)" >&2; }',
    // The mount process may still write its final stats after umount returns: retry the rm.
    `cleanup() { ${q(process.execPath)} ${q(NYDUS_FS)} umount ${q(mnt)} >&2 || umount -l ${q(mnt)} 2>/dev/null || true; for i in 1 2 3 4 5; do rm -rf ${q(dir)} 2>/dev/null && break; sleep 0.5; done; true; }`,
    'trap cleanup EXIT',
    `mkdir -p ${q(mnt)} ${q(runDir)}`,
    'mark start',
    `NAIAD_RUN_DIR=${q(runDir)} ${q(process.execPath)} ${q(NYDUS_FS)} mount ${ref} ${q(mnt)} --plain-http --daemon none --cache-dir ${q(join(dir, 'cache'))} >&2`,
    'mark nydus-fs-mount',
    `chroot ${q(mnt)} ${cmd}`,
    'mark command',
    ''
  ].join('\n')
}

/**
 * A fresh containerd (and, for the lazy method, a fresh nydus-fs snapshotter as its proxy
 * plugin `naiad`) with their state under `dir`, started in the script's own mount namespace
 * (containerd must see the snapshotter's FUSE mounts), then the timed pull and run. Cleanup
 * (image removal, which unmounts the lazy image; stopping both) comes after the output.
 */
function containerdScript(method: 'ctr-overlayfs' | 'ctr-naiad', ref: string, dir: string): string {
  const sock = join(dir, 'containerd.sock')
  const snapSock = join(dir, 'snapshotter.sock')
  const snapRoot = join(dir, 'snapshotter')
  const ctr = `ctr -a ${q(sock)}`
  const lazy = method === 'ctr-naiad'
  const config = [
    'version = 2',
    `root = ${JSON.stringify(join(dir, 'root'))}`,
    `state = ${JSON.stringify(join(dir, 'state'))}`,
    'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
    '[grpc]', `  address = ${JSON.stringify(sock)}`,
    '[ttrpc]', `  address = ${JSON.stringify(`${sock}.ttrpc`)}`,
    ...(lazy ? ['[proxy_plugins]', '  [proxy_plugins.naiad]', '    type = "snapshot"', `    address = ${JSON.stringify(snapSock)}`] : []),
    ''
  ].join('\n')
  const snapshotter = lazy ? ['--snapshotter', 'naiad'] : []
  return [
    'set -euo pipefail',
    // ctr's progress lines end without a newline: start each mark on a line of its own.
    'mark() { printf \'\\nstep %s %s\\n\' "$1" "$(date +%s%N)" >&2; }',
    'SNAP=; CTD=',
    `cleanup() { ${ctr} image rm --sync ${ref} >/dev/null 2>&1 || true; ` +
      '[ -n "$CTD" ] && kill "$CTD" 2>/dev/null; [ -n "$SNAP" ] && kill "$SNAP" 2>/dev/null; wait 2>/dev/null; ' +
      `for m in ${q(join(snapRoot, 'mnt'))}/*; do [ -d "$m" ] && NAIAD_RUN_DIR=${q(join(snapRoot, 'run'))} ${q(process.execPath)} ${q(NYDUS_FS)} umount "$m" >&2 || true; done; ` +
      `for i in 1 2 3 4 5; do rm -rf ${q(dir)} 2>/dev/null && break; sleep 0.5; done; true; }`,
    'trap cleanup EXIT',
    `mkdir -p ${q(dir)}`,
    // `ip netns exec` mounted a fresh /sys, without the cgroup hierarchies runc needs: mount
    // the host's again (as init sees them) in this script's mount namespace.
    `awk '{ for (i = 1; i <= NF; i++) if ($i == "-") d = i; if ($5 == "/sys/fs/cgroup" || $5 ~ /^\\/sys\\/fs\\/cgroup\\//) print $5, $(d+1), $(d+3) }' /proc/1/mountinfo |`,
    '  while read -r mp fstype opts; do mkdir -p "$mp" 2>/dev/null || true; mount -t "$fstype" -o "$opts" "$fstype" "$mp"; done',
    `cat > ${q(join(dir, 'config.toml'))} <<'EOF'`, config, 'EOF',
    ...(lazy
      ? [`${q(process.execPath)} ${q(NYDUS_FS)} snapshotter --socket ${q(snapSock)} --root ${q(snapRoot)} --daemon none --plain-http 2>${q(join(dir, 'snapshotter.log'))} & SNAP=$!`,
          `for i in $(seq 200); do [ -S ${q(snapSock)} ] && break; sleep 0.05; done`]
      : []),
    `containerd --config ${q(join(dir, 'config.toml'))} 2>${q(join(dir, 'containerd.log'))} & CTD=$!`,
    `for i in $(seq 200); do ${ctr} version >/dev/null 2>&1 && break; sleep 0.05; done`,
    'mark start',
    // Their progress (on stdout) would crowd the marks out of the stderr the trial keeps.
    lazy ? `ctr-remote -a ${q(sock)} image rpull --plain-http --snapshotter naiad ${ref} >/dev/null` : `${ctr} image pull --plain-http ${ref} >/dev/null`,
    lazy ? 'mark ctr-remote-rpull' : 'mark ctr-pull',
    `${ctr} run --rm ${snapshotter.join(' ')} ${ref} bench-1 ${cmd}`,
    'mark ctr-run',
    ''
  ].join('\n')
}

// ---------------------------------------------------------------- report

const fmtS = (s: number): string => s.toFixed(2)

interface Pair {
  full: Method
  lazy: Method
  goals: { timeRatio: number; bytesRatio: number }
  /** What is compared, for the goal line. */
  what: string
}

const PAIRS: Record<'chroot' | 'containerd', Pair> = {
  chroot: { full: 'full-pull', lazy: 'nydus-fs', goals: GOALS, what: 'nydus-fs start' },
  containerd: { full: 'ctr-overlayfs', lazy: 'ctr-naiad', goals: CONTAINERD_GOALS, what: 'containerd start through the nydus-fs snapshotter (ctr-remote rpull + ctr run) against ctr pull + ctr run with overlayfs:' }
}

const pct = (x: number): string => `${(x * 100).toFixed(0)} %`

function summarize(trials: Trial[], image: { total: number }, pair: Pair = PAIRS.chroot): { full: { s: number; egress: number }; lazy: { s: number; egress: number; egressTotal: number }; timeRatio: number; bytesRatio: number; bytesVsFullPull: number; met: boolean; text: string } {
  const of = (m: Method): Trial[] => trials.filter((t) => t.method === m)
  const goals = pair.goals
  const full = { s: median(of(pair.full).map((t) => t.toOutputS)), egress: median(of(pair.full).map((t) => t.egressToOutput)) }
  const lazy = { s: median(of(pair.lazy).map((t) => t.toOutputS)), egress: median(of(pair.lazy).map((t) => t.egressToOutput)), egressTotal: median(of(pair.lazy).map((t) => t.egressTotal)) }
  const timeRatio = lazy.s / full.s
  const bytesRatio = lazy.egress / image.total
  const bytesVsFullPull = lazy.egress / full.egress
  const met = timeRatio <= goals.timeRatio && bytesRatio <= goals.bytesRatio
  const misses = [
    ...(timeRatio > goals.timeRatio ? [`time ${(timeRatio * 100).toFixed(1)} % of the full pull, ${((timeRatio / goals.timeRatio - 1) * 100).toFixed(0)} % over the ${pct(goals.timeRatio)} goal (${fmtS(lazy.s)} s against ${fmtS(goals.timeRatio * full.s)} s)`] : []),
    ...(bytesRatio > goals.bytesRatio ? [`bytes ${(bytesRatio * 100).toFixed(1)} % of the image, ${((bytesRatio / goals.bytesRatio - 1) * 100).toFixed(0)} % over the ${pct(goals.bytesRatio)} goal`] : [])
  ]
  const text = `Goal: ${pair.what} within ${pct(goals.timeRatio)} of the full pull's time and ${pct(goals.bytesRatio)} of the image's bytes. Measured (medians): ` +
    `${fmtS(lazy.s)} s against ${fmtS(full.s)} s = **${(timeRatio * 100).toFixed(1)} %** of the time; ${formatBytes(lazy.egress)} of registry egress against an image of ${formatBytes(image.total)} = **${(bytesRatio * 100).toFixed(1)} %** ` +
    `(${(bytesVsFullPull * 100).toFixed(1)} % of what the full pull took from the registry) → **${met ? 'met' : 'not met'}**${met ? '.' : `: ${misses.join('; ')}.`}`
  return { full, lazy, timeRatio, bytesRatio, bytesVsFullPull, met, text }
}

function markdown(trials: Trial[], image: { total: number; layers: number[]; unpacked: number }, delayNote: string | undefined): string {
  const goalLines = methodSets.map((m) => summarize(trials, image, PAIRS[m as 'chroot' | 'containerd']).text)
  const rows = [...trials].sort((a, b) => b.toOutputS - a.toOutputS)
  const other = trials.reduce((a, t) => a + t.otherCpuS, 0)
  const wall = trials.reduce((a, t) => a + t.toOutputS, 0)
  const share = other / (wall * cpus().length)
  return [
    `## Lazy start, Debian bookworm minbase + python3 (${formatBytes(image.total)} compressed in ${image.layers.length} layer${image.layers.length === 1 ? '' : 's'}, ${formatBytes(image.unpacked)} unpacked), registry link ${registryMbit} Mbit/s`,
    '',
    `Command: \`${COMMAND[0]} ${COMMAND[1]} "${COMMAND[2]}"\` in a chroot of the image, or a container of it (ctr-*). Time from the first command's start to \`hi\` on stdout; registry egress counted on the registry namespace's interface (packet headers included) until then. Slowest first.`,
    '',
    '| method | run | time to output, s | steps, s | registry egress to output | egress by the end | egress / image |',
    '|---|---:|---:|---|---:|---:|---:|',
    ...rows.map((t) => `| ${t.method} | ${t.run} | ${fmtS(t.toOutputS)} | ${Object.entries(t.steps).map(([k, v]) => `${k} ${v.toFixed(2)}`).join(', ')} | ${formatBytes(t.egressToOutput)} | ${formatBytes(t.egressTotal)} | ${(t.egressToOutput / image.total).toFixed(3)} |`),
    '',
    ...goalLines.flatMap((l) => [l, '']),
    `full-pull = \`skopeo copy docker://… oci:DIR\` + \`umoci unpack\` + \`chroot ROOTFS ${COMMAND[0]} …\`; nydus-fs = \`nydus-fs mount\` (registry only, \`--daemon none\`, fresh cache, prefetch on as by default) + \`chroot MNT ${COMMAND[0]} …\`, then \`nydus-fs umount\` (after the output, not timed). Both run in a client namespace (${clientMbit} Mbit/s link) through the registry's ${registryMbit} Mbit/s link; the nydus-fs conversion was done beforehand and is not timed. ` +
      'ctr-overlayfs = `ctr image pull` + `ctr run` (overlayfs snapshotter); ctr-naiad = `ctr-remote image rpull --snapshotter naiad` + `ctr run --snapshotter naiad` (nydus-fs snapshotter, `--daemon none`, fresh root and cache); each with a fresh containerd in the client namespace, started before the timed part, and `ctr image rm --sync` after it.',
    '',
    ...(delayNote === undefined ? [] : [`Note: ${delayNote}.`, '']),
    `${share > 0.1 ? '**Warning:** ' : ''}Other processes took ${other.toFixed(1)} CPU-s during the trials (${(share * 100).toFixed(0)} % of ${cpus().length} cores)${share > 0.1 ? '; the machine was not idle, times are noisy (the ratio is from trials run alternately)' : ''}. Load average at the end: ${loadavg().map((l) => l.toFixed(2)).join(', ')}.`,
    ''
  ].join('\n')
}

// ---------------------------------------------------------------- main

let bed: Testbed | undefined
let failed = false
const work = join(CACHE, `run-${process.pid}`)
try {
  await mkdir(CACHE, { recursive: true })
  const build = { rebuild: args.rebuild, mirror: args.mirror, log, signal: overall }
  const root = await debianPythonRootfs(build)
  const layout = await ociImage('debian-python/oci', 'base', root, [], build)
  const image = { ...await imageBytes(layout), unpacked: Number((await run('du', ['-sb', root], 'du')).split('\t')[0]) }
  log(`lazy-start: image ${formatBytes(image.total)} compressed (${image.layers.map((l) => formatBytes(l)).join(' + ')}), ${formatBytes(image.unpacked)} unpacked`)

  bed = await Testbed.create({ signal: overall, log, exitOnSignal: false })
  const registry = await bed.addNode('registry', { rateMbit: registryMbit, rttMs: 0 })
  const client = await bed.addNode('client', { rateMbit: clientMbit, rttMs: 0 })

  // Registry storage with the image and its conversion, cached per nydus-fs version.
  const fingerprint = await nydusFingerprint()
  const storage = join(CACHE, 'registry')
  const stamp = join(storage, 'naiad-stamp')
  const fresh = args.rebuild || (await readFile(stamp, 'utf8').catch(() => '')) !== fingerprint
  if (fresh) await rm(storage, { recursive: true, force: true })
  await mkdir(work, { recursive: true })
  await writeFile(join(work, 'registry.yml'), registryConfig(`${registry.ip}:5000`, storage))
  const reg = bed.spawn(registry, 'docker-registry', ['serve', join(work, 'registry.yml')])
  let regLog = ''
  reg.stderr!.on('data', (d: Buffer) => { regLog = (regLog + d.toString()).slice(-4000) })
  const host = `${registry.ip}:5000`
  for (let i = 0; ; i++) {
    const r = await runIn(bed, client, 'curl', ['-fsS', '-o', '/dev/null', `http://${host}/v2/`], overall)
    if (r.code === 0) break
    if (i > 100 || reg.exitCode !== null) throw new Error(`the registry did not come up: ${regLog.trim()}`)
    await new Promise((r2) => setTimeout(r2, 200))
  }
  const source = `${host}/bench/python:base`
  const lazyRef = `${host}/bench/python:nydus`
  if (fresh) {
    log('lazy-start: pushing the image and converting it with nydus-fs (cached for later runs)')
    await sh(bed, client, 'skopeo', ['copy', '--quiet', '--dest-tls-verify=false', `oci:${layout}:base`, `docker://${source}`], 'skopeo push')
    await sh(bed, client, process.execPath, [NYDUS_FS, 'convert', source, lazyRef, '--plain-http'], 'nydus-fs convert')
    await writeFile(stamp, fingerprint)
  }

  const trials: Trial[] = []
  for (let run = 0; run < runs; run++) {
    // Each pair alternates which goes first, so a drift in the machine's load hits both.
    const order = methodSets.flatMap((m): Method[] => {
      const p = PAIRS[m as 'chroot' | 'containerd']
      return run % 2 === 0 ? [p.full, p.lazy] : [p.lazy, p.full]
    })
    for (const method of order) {
      // containerd's overlayfs snapshotter needs a file system that can be an overlay's upper layer: the OS temp dir.
      const dir = method.startsWith('ctr-') ? join(tmpdir(), `naiad-lazy-start-${process.pid}`, `${method}-${run}`) : join(work, `${method}-${run}`)
      const script = method === 'full-pull' ? fullPullScript(source, dir)
        : method === 'nydus-fs' ? lazyScript(lazyRef, dir, join(work, 'run'))
          : containerdScript(method, method === 'ctr-naiad' ? lazyRef : source, dir)
      const { value, otherCpuS } = await foreignCpu(() => timedScript(bed!, client, registry, script))
      const t: Trial = { method, run: run + 1, ...value, otherCpuS }
      trials.push(t)
      log(`lazy-start: ${method} run ${run + 1}: ${fmtS(t.toOutputS)} s to output (${Object.entries(t.steps).map(([k, v]) => `${k} ${v.toFixed(2)}`).join(', ')}), registry egress ${formatBytes(t.egressToOutput)} (${formatBytes(t.egressTotal)} by the end)`)
    }
  }

  const md = markdown(trials, image, bed.delayUnsupported)
  process.stdout.write(`${md}\n`)
  const s = summarize(trials, image, PAIRS[methodSets.includes('chroot') ? 'chroot' : 'containerd'])
  const c = methodSets.includes('containerd') ? summarize(trials, image, PAIRS.containerd) : undefined
  await writeResults(args.out, 'lazy-start', {
    registryMbit, clientMbit, command: COMMAND, image, goals: GOALS, methods: methodSets,
    goal: { met: s.met, timeRatio: s.timeRatio, bytesRatio: s.bytesRatio, bytesVsFullPull: s.bytesVsFullPull, text: s.text },
    ...(c === undefined ? {} : { containerd: { goals: CONTAINERD_GOALS, met: c.met, timeRatio: c.timeRatio, bytesRatio: c.bytesRatio, bytesVsFullPull: c.bytesVsFullPull, text: c.text } }),
    trials
  }, md)
  log(`wrote ${args.out}.json, .md`)
} catch (err) {
  failed = true
  log(`lazy-start: ${overall.aborted ? (overall.reason as Error).message : (err as Error).stack ?? String(err)}`)
} finally {
  await bed?.destroy()
  await killDescendants()
  // A mount the scripts could not undo (they died with their namespace, which ends the FUSE
  // process and so the mount); the directories go with the run's work dir.
  await withSignal(rm(work, { recursive: true, force: true }), AbortSignal.timeout(30_000), 'removing the work dir').catch((e: Error) => log(`lazy-start: ${e.message}`))
  await rm(join(tmpdir(), `naiad-lazy-start-${process.pid}`), { recursive: true, force: true }).catch(() => {})
}
process.exit(failed ? 1 : 0)
