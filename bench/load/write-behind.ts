// What the fsync of a freshly downloaded task costs, with and without the piece store's
// write-behind. A task of --size bytes is written into a real DiskPieceStore in 1 MiB
// pieces at --rate MB/s (a download bound by its link), then its file is opened by another
// handle and fsynced, as dfget does with its hard link to the daemon's file before the rename
// that makes it the output. Rounds alternate the two stores; medians.
//
//   node bench/load/write-behind.ts [--size 256MiB] [--rate 125] [--rounds 3] [--dir DIR]

import { open, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { parseArgs } from 'node:util'

import { formatBytes, parseSize } from '@naiad/proto'
import { DiskPieceStore } from '@naiad/peer'

import { median } from '../report/helpers.ts'

const { values } = parseArgs({
  options: {
    size: { type: 'string', default: '256MiB' },
    rate: { type: 'string', default: '125' },
    rounds: { type: 'string', default: '3' },
    dir: { type: 'string' }
  }
})
const size = parseSize(values.size)
const rate = Number(values.rate) * 1e6
const rounds = Number(values.rounds)
const base = values.dir ?? tmpdir()
const PIECE = 1024 * 1024

interface Round { writeMs: number; fsyncMs: number; flushes: number; cpuMs: number }

async function once(writeBehind: boolean): Promise<Round> {
  const dir = await mkdtemp(join(base, 'naiad-write-behind-'))
  const store = new DiskPieceStore({ dir, quota: size * 2, ...(writeBehind ? {} : { writeBehindBytes: 0 }) })
  try {
    const id = 'b'.repeat(64)
    store.ensureTask(id, 'http://origin/blob', PIECE)
    const piece = Buffer.alloc(PIECE, 7)
    const cpu0 = process.cpuUsage()
    const t0 = performance.now()
    for (let offset = 0; offset < size; offset += PIECE) {
      await store.writeAt(id, offset, piece.subarray(0, Math.min(PIECE, size - offset)))
      // Keep to the rate: the download's bytes arrive no faster than its link.
      const due = t0 + (offset + PIECE) / rate * 1000
      const ahead = due - performance.now()
      if (ahead > 0) await sleep(ahead)
    }
    const t1 = performance.now()
    const fh = await open(store.dataPath(id), 'r')
    await fh.sync()
    const t2 = performance.now()
    await fh.close()
    const cpu = process.cpuUsage(cpu0)
    return { writeMs: t1 - t0, fsyncMs: t2 - t1, flushes: store.writeBehinds, cpuMs: (cpu.user + cpu.system) / 1000 }
  } finally {
    await store.close()
    await rm(dir, { recursive: true, force: true })
  }
}

const rows: Record<'off' | 'on', Round[]> = { off: [], on: [] }
for (let round = 0; round < rounds; round++) {
  for (const which of (round % 2 === 0 ? ['off', 'on'] : ['on', 'off']) as Array<'off' | 'on'>) {
    const r = await once(which === 'on')
    rows[which].push(r)
    process.stderr.write(`round ${round + 1} write-behind ${which}: wrote in ${r.writeMs.toFixed(0)} ms, fsync ${r.fsyncMs.toFixed(1)} ms (${r.flushes} flushes), this process ${r.cpuMs.toFixed(0)} CPU-ms\n`)
  }
}
const med = (which: 'off' | 'on', k: 'writeMs' | 'fsyncMs' | 'cpuMs'): number => median(rows[which].map((r) => r[k]))
process.stdout.write([
  `## fsync after a ${formatBytes(size)} download at ${values.rate} MB/s (${rounds} rounds, medians)`,
  '',
  '| store | write s | final fsync ms | CPU-ms of the writer (write and fsync) |',
  '|---|---:|---:|---:|',
  `| without write-behind | ${(med('off', 'writeMs') / 1000).toFixed(2)} | ${med('off', 'fsyncMs').toFixed(1)} | ${med('off', 'cpuMs').toFixed(0)} |`,
  `| with write-behind (every 32 MiB) | ${(med('on', 'writeMs') / 1000).toFixed(2)} | ${med('on', 'fsyncMs').toFixed(1)} | ${med('on', 'cpuMs').toFixed(0)} |`,
  ''
].join('\n') + '\n')
