// A Node script (tcp-pipe.ts roles, read workers, the origin server) as a child process whose
// JSON lines are read one at a time: `next()` resolves the next line, or rejects when the
// child failed. The child is SIGKILLed when `signal` aborts, so a bounded step never leaves
// it behind.

import { spawn, type ChildProcess } from 'node:child_process'
import { createInterface } from 'node:readline'

export interface ChildLines {
  pid: number
  next: () => Promise<Record<string, unknown>>
  exited: Promise<void>
  kill: () => void
  /** Writes a line to the child's stdin (when it was spawned with stdin 'pipe'). */
  send: (line: string) => void
}

export function childLines(script: string, args: string[], signal: AbortSignal, options: { nodeArgs?: string[]; stdin?: 'pipe' | 'ignore' } = {}): ChildLines {
  const child = spawn(process.execPath, [...(options.nodeArgs ?? []), script, ...args], { stdio: [options.stdin ?? 'ignore', 'pipe', 'pipe'] })
  return linesOf(child, `${script} ${args[0] ?? ''}`, signal)
}

/** The same reader over a child spawned elsewhere (inside a network namespace, say). */
export function linesOf(child: ChildProcess, label: string, signal: AbortSignal): ChildLines {
  const lines: Array<Record<string, unknown>> = []
  const waiters: Array<(v: Record<string, unknown> | Error) => void> = []
  let stderr = ''
  let failure: Error | undefined
  child.stderr!.on('data', (d: Buffer) => { stderr = (stderr + d.toString()).slice(-4000) })
  createInterface({ input: child.stdout! }).on('line', (line) => {
    let obj: Record<string, unknown>
    try { obj = JSON.parse(line) as Record<string, unknown> } catch { return }
    const w = waiters.shift()
    if (w !== undefined) w(obj)
    else lines.push(obj)
  })
  const kill = (): void => { child.kill('SIGKILL') }
  signal.addEventListener('abort', kill, { once: true })
  const exited = new Promise<void>((resolve, reject) => {
    child.once('close', (code, sig) => {
      signal.removeEventListener('abort', kill)
      if (code === 0) {
        failure = new Error(`${label} exited before printing what was expected: ${stderr.trim()}`)
        for (const w of waiters.splice(0)) w(failure)
        return resolve()
      }
      failure = new Error(`${label} exited with ${code ?? sig}: ${stderr.trim()}`)
      for (const w of waiters.splice(0)) w(failure)
      reject(failure)
    })
  })
  exited.catch(() => {})
  return {
    pid: child.pid!,
    exited,
    kill,
    send: (line) => { child.stdin?.write(`${line}\n`) },
    next: () => {
      const ready = lines.shift()
      if (ready !== undefined) return Promise.resolve(ready)
      if (failure !== undefined) return Promise.reject(failure)
      return new Promise((resolve, reject) => waiters.push((v) => (v instanceof Error ? reject(v) : resolve(v))))
    }
  }
}
