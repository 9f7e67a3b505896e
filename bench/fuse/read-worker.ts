// Reads a file the way the fuse-read scenario measures it, in its own process (a FUSE mount
// must never be read from the process that serves it). Prints one JSON line.
//
//   node read-worker.ts seq FILE [--block 1MiB] [--hash]
//        reads the file from start to end with pread of --block bytes
//        → {"bytes","ms","mbps","sha256"?}
//   node read-worker.ts random FILE --count N [--seed S] [--block 4096]
//        N preads of --block bytes at block-aligned offsets drawn from a seeded generator,
//        one at a time → {"reads","bytes","ms","iops","p50Us","p99Us","sha256"} where sha256
//        covers the bytes read in order, so two file systems can be compared.

import { createHash } from 'node:crypto'
import { closeSync, fstatSync, openSync, readSync } from 'node:fs'
import { parseArgs } from 'node:util'

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: {
    block: { type: 'string' },
    count: { type: 'string', default: '1000' },
    seed: { type: 'string', default: 'fuse-read' },
    hash: { type: 'boolean', default: false }
  }
})
const [mode, file] = positionals
if ((mode !== 'seq' && mode !== 'random') || file === undefined) {
  process.stderr.write('usage: read-worker.ts seq|random FILE [--block BYTES] [--count N] [--seed S] [--hash]\n')
  process.exit(2)
}
const block = Number(values.block ?? (mode === 'seq' ? 1024 * 1024 : 4096))
if (!Number.isInteger(block) || block <= 0) throw new Error(`--block must be a whole number of bytes, not ${values.block}`)

/** xorshift32 from a string seed: the same offsets for every file system. */
function generator(seed: string): () => number {
  let x = createHash('sha256').update(seed).digest().readUInt32LE(0) || 1
  return () => {
    x ^= x << 13; x >>>= 0
    x ^= x >>> 17
    x ^= x << 5; x >>>= 0
    return x
  }
}

const fd = openSync(file, 'r')
const size = fstatSync(fd).size
const buf = Buffer.allocUnsafe(block)
const out: Record<string, unknown> = {}
if (mode === 'seq') {
  const hash = values.hash ? createHash('sha256') : undefined
  const t0 = performance.now()
  let pos = 0
  for (;;) {
    const n = readSync(fd, buf, 0, block, pos)
    if (n === 0) break
    hash?.update(buf.subarray(0, n))
    pos += n
  }
  const ms = performance.now() - t0
  Object.assign(out, { bytes: pos, ms, mbps: pos / 1e6 / (ms / 1000), ...(hash === undefined ? {} : { sha256: hash.digest('hex') }) })
} else {
  const count = Number(values.count)
  const blocks = Math.floor(size / block)
  if (blocks < 1) throw new Error(`${file} is smaller than one block`)
  const next = generator(values.seed)
  const hash = createHash('sha256')
  const lat = new Float64Array(count)
  let bytes = 0
  const t0 = performance.now()
  for (let i = 0; i < count; i++) {
    const pos = (next() % blocks) * block
    const s = performance.now()
    const n = readSync(fd, buf, 0, block, pos)
    lat[i] = performance.now() - s
    if (n !== block) throw new Error(`short read at ${pos}: ${n} of ${block} bytes`)
    bytes += n
    hash.update(buf)
  }
  const ms = performance.now() - t0
  lat.sort()
  Object.assign(out, {
    reads: count, bytes, ms, iops: count / (ms / 1000),
    p50Us: Math.round(lat[Math.floor(count * 0.5)] * 1000), p99Us: Math.round(lat[Math.min(count - 1, Math.floor(count * 0.99))] * 1000),
    sha256: hash.digest('hex')
  })
}
closeSync(fd)
process.stdout.write(`${JSON.stringify(out)}\n`)
