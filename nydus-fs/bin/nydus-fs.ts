#!/usr/bin/env node
// convert and check stream gigabytes through short-lived buffers; with V8's default young
// generation (tens of MiB per semi-space, kept committed once grown) that alone costs
// ~70 MiB of RSS. They run in a child Node with a small young generation instead;
// signals and the exit status pass through. mount and umount run in this process.
import { spawn } from 'node:child_process'

import { checkNode } from '@naiad/proto/node-version'

checkNode('nydus-fs')

const YOUNG = '--max-semi-space-size=2'
const sub = process.argv[2]

if ((sub === 'convert' || sub === 'check') && !process.execArgv.some((a) => a.startsWith('--max-semi-space-size'))) {
  const child = spawn(process.execPath, [...process.execArgv, YOUNG, ...process.argv.slice(1)], { stdio: 'inherit' })
  const forward = (signal: NodeJS.Signals): void => { child.kill(signal) }
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(signal, forward)
  child.on('exit', (code, signal) => {
    if (signal !== null) {
      process.removeAllListeners(signal)
      process.kill(process.pid, signal)
      return
    }
    process.exit(code ?? 1)
  })
} else {
  // The CLI module alone, not the package's whole entry: a mount's parent starts fast.
  const { main } = await import('@naiad/nydus-fs/cli')
  await main(process.argv.slice(2))
}
