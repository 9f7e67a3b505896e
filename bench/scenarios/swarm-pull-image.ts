// Scenario 1 of the benchmark issue, image part: N hosts pull the same real multi-layer image
// at once with skopeo, directly from the registry against through their own dfdaemon's
// registry mirror (configured the way an operator would, by `dfdaemon init-config --runtime
// podman`), each host on its own shaped link. The registry (Debian docker-registry) and the
// supernode have namespaces of their own.
//
//   node bench/scenarios/swarm-pull-image.ts [--quick] [--hosts 1,4,8] [--host-bandwidth 200] [--registry-bandwidth 400]
//
// Reports completion time per N (median and max over the hosts, from the common start to each
// skopeo's exit) and registry egress (bytes its interface sent, headers included), against the
// image's size. Goal (issue 5, as for the blob): Naiad at the largest N within 1.3× the
// physical limit (image size / host bandwidth) with registry egress at most 1.1× the image.

import { mkdir, rm, writeFile } from 'node:fs/promises'
import { cpus, loadavg } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'

import { formatBytes, parseDuration } from '@naiad/proto'
import { BINS, createToken } from '@naiad/testkit'

import { foreignCpu, killDescendants } from '../proc-stats.ts'
import { parseCommandLine, usageFailer } from '../report/cli.ts'
import { median, withSignal, writeResults } from '../report/helpers.ts'
import { linePlot } from '../report/svg-plot.ts'
import { CACHE, debianPythonRootfs, imageBytes, ociImage, registryConfig, run } from '../testbed/images.ts'
import { Testbed, type Node } from '../testbed/netns.ts'
import { NodeProcess, runIn } from '../testbed/processes.ts'

const RESULTS = fileURLToPath(new URL('../results/', import.meta.url))

const USAGE = `usage: node bench/scenarios/swarm-pull-image.ts [options]
  --quick                     N = 2 only (unless given)
  --hosts LIST                numbers of hosts (default 1,4,8)
  --host-bandwidth MBIT       each host's link (default 200)
  --registry-bandwidth MBIT   the registry's link (default 400)
  --supernode-bandwidth MBIT  the supernode's link (default: the host bandwidth)
  --rebuild                   build the cached image again
  --timeout DURATION          bound on the whole scenario (default 30m)
  --out PREFIX                results: PREFIX.json, .md, .svg (default bench/results/swarm-pull-image)`

const usageError = usageFailer('swarm-pull-image', USAGE)

const args = parseCommandLine(USAGE, usageError, () => parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    hosts: { type: 'string' },
    'host-bandwidth': { type: 'string', default: '200' },
    'registry-bandwidth': { type: 'string', default: '400' },
    'supernode-bandwidth': { type: 'string' },
    rebuild: { type: 'boolean', default: false },
    timeout: { type: 'string', default: '30m' },
    out: { type: 'string', default: join(RESULTS, 'swarm-pull-image') },
    help: { type: 'boolean', short: 'h', default: false }
  }
}).values)
const positive = (v: string, flag: string): number => {
  const n = Number(v)
  if (!Number.isFinite(n) || n <= 0) usageError(`${flag} must be a positive number, not ${v}`)
  return n
}
const hostCounts = (args.hosts ?? (args.quick ? '2' : '1,4,8')).split(',').map((s) => positive(s, '--hosts'))
if (hostCounts.some((n) => !Number.isInteger(n) || n > 100)) usageError('--hosts takes whole numbers up to 100')
const hostMbit = positive(args['host-bandwidth'], '--host-bandwidth')
const registryMbit = positive(args['registry-bandwidth'], '--registry-bandwidth')
const supernodeMbit = positive(args['supernode-bandwidth'] ?? args['host-bandwidth'], '--supernode-bandwidth')
let timeoutMs = 0
try {
  timeoutMs = parseDuration(args.timeout, '--timeout')
} catch (err) {
  usageError((err as Error).message)
}

const interrupted = new AbortController()
for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => interrupted.abort(new Error(`interrupted by ${sig}`)))
const overall = AbortSignal.any([interrupted.signal, AbortSignal.timeout(timeoutMs)])
const log = (msg: string): void => { process.stderr.write(`${msg}\n`) }
const MIRROR = '127.0.0.1:65001'

async function txBytes(node: Node): Promise<number> {
  const out = await run('ip', ['-n', node.ns, '-s', '-j', 'link', 'show', 'dev', 'eth0'], 'ip link stats', overall)
  return (JSON.parse(out) as Array<{ stats64: { tx: { bytes: number } } }>)[0].stats64.tx.bytes
}

interface Trial {
  method: 'direct' | 'naiad'
  hosts: number
  times: number[]
  medianS: number
  maxS: number
  registryEgress: number
  /** Naiad: downloads (blobs) a daemon fetched from the registry itself, by the reason it logged. */
  backToSource?: Record<string, number>
  otherCpuS: number
}

const work = join(CACHE, `swarm-image-run-${process.pid}`)

async function pullAll(bed: Testbed, hosts: Node[], argvOf: (h: Node) => string[]): Promise<number[]> {
  const signal = AbortSignal.any([overall, AbortSignal.timeout(15 * 60_000)])
  const runs = await Promise.all(hosts.map((h) => runIn(bed, h, 'skopeo', argvOf(h), signal)))
  runs.forEach((r, i) => {
    if (r.code !== 0) throw new Error(`skopeo on ${hosts[i].name} exited with ${r.code}: ${r.stderr.trim().slice(-1500)}`)
  })
  await Promise.all(hosts.map((h) => rm(join(work, `${h.name}.oci`), { recursive: true, force: true })))
  return runs.map((r) => r.ms / 1000)
}

async function direct(bed: Testbed, hosts: Node[], ref: string): Promise<number[]> {
  return pullAll(bed, hosts, (h) => ['copy', '--quiet', '--src-tls-verify=false', `docker://${ref}`, `oci:${join(work, `${h.name}.oci`)}:v1`])
}

async function naiad(bed: Testbed, sn: Node, hosts: Node[], registryHost: string, ref: string): Promise<{ times: number[]; backToSource: Record<string, number> }> {
  const started: NodeProcess[] = []
  const dir = join(work, `naiad-${hosts.length}`)
  try {
    // The registry sits on the testbed's private network: the supernode's source policy must allow it (the daemons' does, as an --insecure-registry).
    const supernode = new NodeProcess(bed, sn, BINS.supernode, ['--data-dir', join(dir, 'sn'), '--listen', `${sn.ip}:8002`, '--p2p-listen', `/ip4/${sn.ip}/tcp/8003`, '--log-level', 'info'], { NAIAD_SOURCE_ALLOW: registryHost })
    started.push(supernode)
    await withSignal(supernode.ready, AbortSignal.any([overall, AbortSignal.timeout(30_000)]), 'starting the supernode')
    const joinToken = await createToken(join(dir, 'sn'), 'join')
    const daemons = hosts.map((h) => new NodeProcess(bed, h, BINS.dfdaemon, [
      '--supernode', `http://${sn.ip}:8002`, '--data-dir', join(dir, h.name), '--api-listen', '127.0.0.1:65003', '--proxy-listen', MIRROR,
      '--p2p-listen', `/ip4/${h.ip}/tcp/65002`, '--insecure-registry', registryHost, '--log-level', 'info'
    ], { NAIAD_JOIN_TOKEN: joinToken }))
    started.push(...daemons)
    await withSignal(Promise.all(daemons.map((d) => d.ready)), AbortSignal.any([overall, AbortSignal.timeout(60_000)]), 'starting the daemons')
    // The mirror configuration as an operator writes it; skopeo reads it with --registries-conf.
    const conf = join(dir, 'registries.conf')
    await run(process.execPath, [BINS.dfdaemon, 'init-config', '--runtime', 'podman', '--registry', registryHost, '--mirror', `http://${MIRROR}`, '--file', conf], 'dfdaemon init-config', overall)
    // The registry itself is not listed as insecure: if the mirror failed, skopeo's fallback
    // to it would fail too, rather than quietly pulling direct.
    const times = await pullAll(bed, hosts, (h) => ['--registries-conf', conf, 'copy', '--quiet', `docker://${ref}`, `oci:${join(work, `${h.name}.oci`)}:v1`])
    // Why daemons went to the registry themselves (their `back to source` log lines).
    const backToSource: Record<string, number> = {}
    for (const d of daemons) {
      for (const line of d.logs) {
        // A scheduler call that timed out marks the supernode unreachable; until the next
        // keep-alive reaches it, the mirror relays blobs straight from the registry.
        if (line.includes('supernode unreachable')) {
          const key = 'supernode marked unreachable (blobs relayed from the registry meanwhile)'
          backToSource[key] = (backToSource[key] ?? 0) + 1
          continue
        }
        if (!line.includes('"back to source"')) continue
        try {
          const reason = String((JSON.parse(line) as { reason?: string }).reason)
          backToSource[reason] = (backToSource[reason] ?? 0) + 1
        } catch { /* not JSON */ }
      }
    }
    return { times, backToSource }
  } finally {
    await Promise.all(started.map((p) => p.stop()))
    await rm(dir, { recursive: true, force: true })
  }
}

const fmtS = (s: number): string => s.toFixed(2)

let bed: Testbed | undefined
let failed = false
try {
  const build = { rebuild: args.rebuild, log, signal: overall }
  const rootfs = await debianPythonRootfs(build)
  // Four layers: the Debian rootfs (gzip) and three of random data (incompressible).
  const layout = await ociImage('swarm-image/oci', 'v1', rootfs, [
    { path: '/opt/data/a.bin', randomBytes: 32 * 1024 * 1024 },
    { path: '/opt/data/b.bin', randomBytes: 16 * 1024 * 1024 },
    { path: '/opt/data/c.bin', randomBytes: 8 * 1024 * 1024 }
  ], build)
  const image = await imageBytes(layout)
  const physicalS = (image.total * 8) / (hostMbit * 1e6)
  log(`swarm-pull-image: image ${formatBytes(image.total)} in ${image.layers.length} layers (${image.layers.map((l) => formatBytes(l)).join(', ')}); physical limit ${fmtS(physicalS)} s`)

  bed = await Testbed.create({ signal: overall, log, exitOnSignal: false })
  const registry = await bed.addNode('registry', { rateMbit: registryMbit, rttMs: 0 })
  const sn = await bed.addNode('supernode', { rateMbit: supernodeMbit, rttMs: 0 })
  const hosts: Node[] = []
  for (let i = 0; i < Math.max(...hostCounts); i++) hosts.push(await bed.addNode(`h${i}`, { rateMbit: hostMbit, rttMs: 0 }))
  await mkdir(work, { recursive: true })
  await writeFile(join(work, 'registry.yml'), registryConfig(`${registry.ip}:5000`, join(work, 'registry')))
  const reg = bed.spawn(registry, 'docker-registry', ['serve', join(work, 'registry.yml')])
  let regLog = ''
  reg.stderr!.on('data', (d: Buffer) => { regLog = (regLog + d.toString()).slice(-4000) })
  const registryHost = `${registry.ip}:5000`
  for (let i = 0; ; i++) {
    const r = await runIn(bed, hosts[0], 'curl', ['-fsS', '-o', '/dev/null', `http://${registryHost}/v2/`], overall)
    if (r.code === 0) break
    if (i > 100 || reg.exitCode !== null) throw new Error(`the registry did not come up: ${regLog.trim()}`)
    await new Promise((r2) => setTimeout(r2, 200))
  }
  // One push; every Naiad trial starts with a fresh supernode and fresh daemons, so no trial
  // finds what an earlier one fetched.
  const ref = `${registryHost}/bench/multilayer:v1`
  const pushed = await runIn(bed, hosts[0], 'skopeo', ['copy', '--quiet', '--dest-tls-verify=false', `oci:${layout}:v1`, `docker://${ref}`], AbortSignal.any([overall, AbortSignal.timeout(10 * 60_000)]))
  if (pushed.code !== 0) throw new Error(`pushing the image: ${pushed.stderr.trim()}`)

  const trials: Trial[] = []
  for (const [k, n] of hostCounts.entries()) {
    const hs = hosts.slice(0, n)
    const order: Array<Trial['method']> = k % 2 === 0 ? ['direct', 'naiad'] : ['naiad', 'direct']
    for (const method of order) {
      const tx0 = await txBytes(registry)
      const { value, otherCpuS } = await foreignCpu(async () => method === 'direct' ? { times: await direct(bed!, hs, ref), backToSource: undefined } : naiad(bed!, sn, hs, registryHost, ref))
      const { times, backToSource } = value
      const t: Trial = { method, hosts: n, times, medianS: median(times), maxS: Math.max(...times), registryEgress: (await txBytes(registry)) - tx0, backToSource, otherCpuS }
      trials.push(t)
      log(`N=${n} ${method}: median ${fmtS(t.medianS)} s, max ${fmtS(t.maxS)} s (${(t.maxS / physicalS).toFixed(2)}× the limit), registry egress ${formatBytes(t.registryEgress)} (${(t.registryEgress / image.total).toFixed(2)}× the image)${t.backToSource === undefined ? '' : `; daemons back to source: ${JSON.stringify(t.backToSource)}`}`)
    }
  }

  const nMax = Math.max(...hostCounts)
  const top = trials.find((t) => t.method === 'naiad' && t.hosts === nMax)!
  const timeRatio = top.maxS / physicalS
  const egressRatio = top.registryEgress / image.total
  const met = timeRatio <= 1.3 && egressRatio <= 1.1
  const misses = [
    ...(timeRatio > 1.3 ? [`time ${timeRatio.toFixed(2)}× the limit, ${((timeRatio / 1.3 - 1) * 100).toFixed(1)} % over the 1.3× goal`] : []),
    ...(egressRatio > 1.1 ? [`registry egress ${egressRatio.toFixed(2)}× the image, ${((egressRatio / 1.1 - 1) * 100).toFixed(1)} % over the 1.1× goal`] : [])
  ]
  const goalText = `Goal: Naiad at N = ${nMax} within 1.3× the physical limit (${fmtS(physicalS)} s) with registry egress ≤ 1.1× the image. Measured: ${timeRatio.toFixed(2)}× the limit (max ${fmtS(top.maxS)} s), egress ${egressRatio.toFixed(3)}× the image → **${met ? 'met' : 'not met'}**${met ? '.' : `: ${misses.join('; ')}.`}`
  const directMax = (n: number): number => trials.find((t) => t.method === 'direct' && t.hosts === n)!.maxS
  const other = trials.reduce((a, t) => a + t.otherCpuS, 0)
  const wall = trials.reduce((a, t) => a + t.maxS, 0)
  const share = other / (wall * cpus().length)
  const md = [
    `## Swarm pull of an image, ${formatBytes(image.total)} in ${image.layers.length} layers, hosts at ${hostMbit} Mbit/s, registry ${registryMbit} Mbit/s, supernode ${supernodeMbit} Mbit/s`,
    '',
    `skopeo copy docker://… oci:DIR on every host at once: directly from the registry, or through the host's dfdaemon mirror (registries.conf written by \`dfdaemon init-config --runtime podman\`). Physical limit (image / host bandwidth): ${fmtS(physicalS)} s. Slowest first.`,
    '',
    '| method | hosts | median s | max s | max / limit | registry egress | egress / image | max vs direct, same N | fetches the daemons made from the registry themselves, by reason |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---|',
    ...[...trials].sort((a, b) => b.maxS - a.maxS).map((t) => `| ${t.method} | ${t.hosts} | ${fmtS(t.medianS)} | ${fmtS(t.maxS)} | ${(t.maxS / physicalS).toFixed(2)} | ${formatBytes(t.registryEgress)} | ${(t.registryEgress / image.total).toFixed(2)} | ${(t.maxS / directMax(t.hosts)).toFixed(2)} | ${t.backToSource === undefined ? '' : Object.entries(t.backToSource).map(([r, c]) => `${c}× ${r}`).join('; ') || 'none'} |`),
    '',
    goalText,
    '',
    'Registry egress is what the registry namespace\'s interface sent (packet headers included, so a little above the bytes served). Times run from the common start to each skopeo\'s exit; daemons and supernode are started before.',
    ...(bed.delayUnsupported === undefined ? [] : ['', `Note: ${bed.delayUnsupported}.`]),
    '',
    `${share > 0.1 ? '**Warning:** ' : ''}Other processes took ${other.toFixed(1)} CPU-s during the trials (${(share * 100).toFixed(0)} % of ${cpus().length} cores)${share > 0.1 ? '; the times are noisy' : ''}. Load average at the end: ${loadavg().map((l) => l.toFixed(2)).join(', ')}.`,
    ''
  ].join('\n')
  process.stdout.write(`${md}\n`)
  await writeResults(args.out, 'swarm-pull-image', {
    image, hostCounts, hostMbit, registryMbit, supernodeMbit, physicalLimitS: physicalS, goal: { met, timeRatio, egressRatio, text: goalText }, trials
  }, md)
  const series = (m: Trial['method']): Array<[number, number]> => trials.filter((t) => t.method === m).map((t) => [t.hosts, t.maxS])
  await writeFile(`${args.out}.svg`, linePlot([
    { label: 'direct (max)', color: '#d62728', points: series('direct') },
    { label: 'Naiad (max)', color: '#1f77b4', points: series('naiad') },
    { label: 'physical limit', color: '#555', dashed: true, points: hostCounts.map((n) => [n, physicalS]) }
  ], { title: `skopeo pull of a ${formatBytes(image.total)} image, ${hostMbit} Mbit/s hosts`, xLabel: 'hosts pulling at once', yLabel: 'completion time, s (slowest host)' }))
  log(`wrote ${args.out}.json, .md, .svg`)
} catch (err) {
  failed = true
  log(`swarm-pull-image: ${overall.aborted ? (overall.reason as Error).message : (err as Error).stack ?? String(err)}`)
} finally {
  await bed?.destroy()
  await killDescendants()
  await rm(work, { recursive: true, force: true })
}
process.exit(failed ? 1 : 0)
