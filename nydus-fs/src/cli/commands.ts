// The nydus-fs command line: one option table per subcommand (flags > NAIAD_* env >
// defaults) and the handlers behind them. bin/nydus-fs.ts only dispatches.

import { readFileSync } from 'node:fs'

import { CHUNK_SIZE, defineCommand, NaiadError, runCli, type Loaded, type OptionValues } from '@naiad/proto/contracts'

import { MOUNT_COMMAND, mountOptionsFrom, UMOUNT_COMMAND, umountOptionsFrom } from '../mount/config.ts'
import { SNAPSHOTTER_COMMAND, snapshotterOptionsFrom } from '../snapshotter/config.ts'

// Each handler imports what its subcommand needs when it runs: `mount` without --foreground
// only starts the real mount process and waits, so it must not load the converter, zstd or
// fuse-native first (that was half the start-up of every background mount).

const NAME = 'nydus-fs'

export const CONVERT_COMMAND = defineCommand({
  name: NAME,
  usage: 'nydus-fs convert SOURCE_REF TARGET_REF [--plain-http] [--chunk-size SIZE] [--compressor zstd|none] [--chunk-dict REF] [--platform OS/ARCH]',
  summary: 'Convert an OCI image into a chunked, deduplicated, Merkle-verified lazy image and push it to TARGET_REF.\nRegistry credentials: NAIAD_REGISTRY_AUTH=user:pass.',
  positionals: { min: 2, max: 2 },
  options: [
    { key: 'plain-http', flag: 'plain-http', type: 'bool', default: false, help: 'talk to the registries over plain HTTP' },
    { key: 'chunk-size', flag: 'chunk-size', type: 'size', default: '1MiB', help: 'chunk size, a power of two from 64KiB to 16MiB' },
    { key: 'compressor', flag: 'compressor', type: 'enum', values: ['zstd', 'none'], default: 'zstd', meta: 'zstd|none', help: 'how chunks are stored' },
    { key: 'chunk-dict', flag: 'chunk-dict', type: 'string', default: '', meta: 'REF', help: 'a lazy image in the same registry whose chunks are reused, not stored again' },
    { key: 'platform', flag: 'platform', type: 'string', default: 'linux/amd64', meta: 'OS/ARCH', help: 'platform picked from a multi-platform source' },
    { key: 'timeout', flag: 'timeout', type: 'duration', default: '30s', help: 'registry connect and idle timeout' }
  ]
})

export const CHECK_COMMAND = defineCommand({
  name: NAME,
  usage: 'nydus-fs check REF [--plain-http]',
  summary: 'Verify every chunk, file and directory of a lazy image and its Merkle root against the manifest.',
  positionals: { min: 1, max: 1 },
  options: [
    { key: 'plain-http', flag: 'plain-http', type: 'bool', default: false, help: 'talk to the registry over plain HTTP' },
    { key: 'platform', flag: 'platform', type: 'string', default: 'linux/amd64', meta: 'OS/ARCH', help: 'platform picked from an index' },
    { key: 'timeout', flag: 'timeout', type: 'duration', default: '30s', help: 'registry connect and idle timeout' }
  ]
})

export const SUBCOMMANDS = {
  convert: CONVERT_COMMAND,
  mount: MOUNT_COMMAND,
  umount: UMOUNT_COMMAND,
  check: CHECK_COMMAND,
  snapshotter: SNAPSHOTTER_COMMAND
}

export const TOP_USAGE = `Usage: nydus-fs COMMAND [ARGS] [OPTIONS]

Lazy container images: convert, mount, check, and run them in containerd.

Commands:
  convert SOURCE_REF TARGET_REF   convert an OCI image into a lazy image
  mount REF MOUNTPOINT            mount a lazy image over FUSE
  umount MOUNTPOINT               unmount it
  check REF                       verify every chunk, file and the Merkle root
  snapshotter --socket PATH --root DIR
                                  containerd proxy snapshotter: lazy images start without a pull

Run 'nydus-fs COMMAND --help' for a command's options.`

const stderrLine = (line: string): void => { process.stderr.write(`${NAME}: ${line}\n`) }

async function convertMain({ values: v, positionals }: Loaded<OptionValues<typeof CONVERT_COMMAND.options>>): Promise<number> {
  const { convertImage, formatBytes } = await import('../convert/convert.ts')
  const { isValidChunkSize } = await import('../image/bootstrap.ts')
  const chunkSize = v['chunk-size']
  if (!isValidChunkSize(chunkSize)) {
    throw new NaiadError('PROTO_ERR_USAGE', `--chunk-size ${formatBytes(chunkSize)} must be a power of two from ${formatBytes(CHUNK_SIZE.min)} to ${formatBytes(CHUNK_SIZE.max)}`)
  }
  const compressor = v.compressor
  const result = await convertImage({
    source: positionals[0], target: positionals[1], plainHttp: v['plain-http'], chunkSize, compressor,
    chunkDict: v['chunk-dict'], platform: v.platform, timeoutMs: v.timeout, log: stderrLine
  })
  process.stdout.write(`${result.manifestDigest}\n`)
  return 0
}

async function checkMain({ values: v, positionals }: Loaded<OptionValues<typeof CHECK_COMMAND.options>>): Promise<number> {
  const { checkImage } = await import('../check/check.ts')
  const { formatBytes } = await import('../convert/convert.ts')
  const r = await checkImage({ ref: positionals[0], plainHttp: v['plain-http'], platform: v.platform, timeoutMs: v.timeout, log: stderrLine })
  process.stdout.write(`ok: ${r.chunks} chunks (${formatBytes(r.bytes)}) in ${r.blobs} blobs, ${r.files} files, ${r.directories} directories verified; root ${r.rootDigest}\n`)
  return 0
}

// The mount module loads fuse-native; convert and check do without it, and so does a
// background mount's parent, which hands the work to its detached child.
async function mountMain(loaded: Loaded<OptionValues<typeof MOUNT_COMMAND.options>>): Promise<number> {
  const options = mountOptionsFrom(loaded)
  if (!options.foreground) {
    const { mountInBackground } = await import('../mount/daemonize.ts')
    return mountInBackground(options)
  }
  const { runMount } = await import('../mount/index.ts')
  return runMount(options)
}

async function umountMain(loaded: Loaded<OptionValues<typeof UMOUNT_COMMAND.options>>): Promise<number> {
  const { runUmount } = await import('../mount/index.ts')
  return runUmount(umountOptionsFrom(loaded))
}

// The snapshotter module loads gRPC and SQLite; the other commands do without them.
async function snapshotterMain(loaded: Loaded<OptionValues<typeof SNAPSHOTTER_COMMAND.options>>): Promise<number> {
  const { runSnapshotter } = await import('../snapshotter/index.ts')
  return runSnapshotter(snapshotterOptionsFrom(loaded))
}

type Subcommand = keyof typeof SUBCOMMANDS

/** Each subcommand's table with its handler, typed together. */
const RUN: { readonly [K in Subcommand]: (argv: string[]) => Promise<void> } = {
  convert: (argv) => runCli(CONVERT_COMMAND, argv, convertMain),
  mount: (argv) => runCli(MOUNT_COMMAND, argv, mountMain),
  umount: (argv) => runCli(UMOUNT_COMMAND, argv, umountMain),
  check: (argv) => runCli(CHECK_COMMAND, argv, checkMain),
  snapshotter: (argv) => runCli(SNAPSHOTTER_COMMAND, argv, snapshotterMain)
}

function isSubcommand(s: string): s is Subcommand {
  return Object.hasOwn(SUBCOMMANDS, s)
}

/**
 * This process's peak RSS. getrusage's ru_maxrss is not used: Linux carries it across
 * exec from the forked parent, so a child of a big test runner reports the runner's peak.
 * VmHWM belongs to this process's own address space.
 */
function peakRssKiB(): number {
  try {
    const m = /^VmHWM:\s+(\d+) kB/m.exec(readFileSync('/proc/self/status', 'utf8'))
    if (m !== null) return Number(m[1])
  } catch { /* not Linux */ }
  return process.resourceUsage().maxRSS
}

/** Runs `nydus-fs ARGV…`; sets process.exitCode (0 ok, 1 failure, 2 usage). */
export async function main(argv: string[]): Promise<void> {
  const [sub, ...rest] = argv
  if (sub === undefined || sub === '--help' || sub === '-h' || sub === 'help') {
    process[sub === undefined ? 'stderr' : 'stdout'].write(`${TOP_USAGE}\n`)
    if (sub === undefined) process.exitCode = 2
    return
  }
  if (!isSubcommand(sub)) {
    process.stderr.write(`${NAME}: unknown command "${sub}"\nTry '${NAME} --help'.\n`)
    process.exitCode = 2
    return
  }
  await RUN[sub](rest)
  if (process.env.NAIAD_REPORT_MAXRSS === '1') process.stderr.write(`${NAME}: maxrss ${peakRssKiB()} KiB\n`)
}
