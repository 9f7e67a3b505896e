// Naiad's binaries and plain commands as processes inside a testbed node, started the way
// testkit's NaiadProcess starts them on loopback (ready once they log their ready line), but
// through `ip netns exec`.

import type { ChildProcess } from 'node:child_process'
import { createInterface } from 'node:readline'

import type { Node, Testbed } from './netns.ts'

export class NodeProcess {
  readonly child: ChildProcess
  readonly logs: string[] = []
  readonly exited: Promise<number | null>
  /** The ready log line (`dfdaemon ready` / `supernode ready`), parsed. */
  readonly ready: Promise<Record<string, unknown>>

  constructor(bed: Testbed, node: Node, bin: string, args: string[], env: Record<string, string> = {}) {
    this.child = bed.spawn(node, process.execPath, [bin, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
    this.exited = new Promise((resolve) => this.child.once('exit', (code, sig) => resolve(code ?? (sig === null ? null : 128))))
    this.ready = new Promise((resolve, reject) => {
      createInterface({ input: this.child.stderr! }).on('line', (line) => {
        this.logs.push(line)
        if (this.logs.length > 2000) this.logs.shift()
        if (!line.includes(' ready"')) return
        try {
          const entry = JSON.parse(line) as Record<string, unknown>
          if (entry.msg === 'dfdaemon ready' || entry.msg === 'supernode ready') resolve(entry)
        } catch { /* not JSON */ }
      })
      this.child.stdout!.on('data', (d: Buffer) => this.logs.push(d.toString()))
      this.exited.then((code) => reject(new Error(`${bin} in ${node.name} exited with ${code} before it was ready:\n${this.logs.slice(-20).join('\n')}`)))
    })
    this.ready.catch(() => {})
  }

  get pid(): number {
    return this.child.pid!
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return
    this.child.kill('SIGTERM')
    const t = setTimeout(() => this.child.kill('SIGKILL'), 5000)
    await this.exited
    clearTimeout(t)
  }
}

export interface Finished {
  code: number | null
  /** From the spawn to the exit, ms. */
  ms: number
  stdout: string
  stderr: string
}

/** Runs a command in a node to completion, timing it from spawn to exit. */
export function runIn(bed: Testbed, node: Node, cmd: string, args: string[], signal: AbortSignal): Promise<Finished> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now()
    const child = bed.spawn(node, cmd, args)
    let stdout = ''
    let stderr = ''
    child.stdout!.on('data', (d: Buffer) => { stdout += d.toString() })
    child.stderr!.on('data', (d: Buffer) => { stderr += d.toString() })
    const kill = (): void => { child.kill('SIGKILL') }
    signal.addEventListener('abort', kill, { once: true })
    child.once('error', reject)
    child.once('exit', (code) => {
      signal.removeEventListener('abort', kill)
      resolve({ code, ms: performance.now() - t0, stdout, stderr })
    })
  })
}
