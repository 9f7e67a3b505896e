// Naiad binaries as real child processes, the way an operator runs them. Each is started
// with the test's Node, on loopback, and is ready once it logs its ready line.

import { spawn, type ChildProcess } from 'node:child_process'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createInterface } from 'node:readline'

import { ClusterSigner, mintToken } from '@naiad/proto/contracts'

const ROOT = fileURLToPath(new URL('../../', import.meta.url))

export const BINS = {
  supernode: `${ROOT}supernode/bin/supernode.ts`,
  dfdaemon: `${ROOT}dfdaemon/bin/dfdaemon.ts`,
  dfget: `${ROOT}dfget/bin/dfget.ts`
} as const

/**
 * An address nothing can listen on: binding port 0 picks an ephemeral port, so a connection
 * to port 0 itself is refused at once (ECONNREFUSED). Tests of "cannot be reached" use it
 * instead of probing for a free port and releasing it, which another process could take.
 */
export const REFUSED_URL = 'http://127.0.0.1:0'

export class NaiadProcess {
  readonly proc: ChildProcess
  readonly logs: string[] = []
  /** The daemon's or supernode's ready log line, parsed. */
  readonly ready: Promise<Record<string, unknown>>
  readonly exited: Promise<number | null>

  constructor(bin: string, args: string[], env: Record<string, string> = {}) {
    this.proc = spawn(process.execPath, [bin, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
    this.exited = new Promise((resolve) => this.proc.once('exit', (code) => resolve(code)))
    this.ready = new Promise((resolve, reject) => {
      const rl = createInterface({ input: this.proc.stderr! })
      rl.on('line', (line) => {
        this.logs.push(line)
        if (this.logs.length > 5000) this.logs.shift()
        if (line.includes(' ready"')) {
          try {
            const entry = JSON.parse(line) as Record<string, unknown>
            if (entry.msg === 'dfdaemon ready' || entry.msg === 'supernode ready') resolve(entry)
          } catch { /* not JSON */ }
        }
      })
      this.proc.stdout!.on('data', (d: Buffer) => this.logs.push(d.toString()))
      this.exited.then((code) => reject(new Error(`${bin} exited with ${code} before it was ready:\n${this.logs.slice(-20).join('\n')}`)))
    })
    this.ready.catch(() => {})
  }

  get pid(): number {
    return this.proc.pid!
  }

  kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<number | null> {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill(signal)
    return this.exited
  }

  async stop(): Promise<void> {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return
    this.proc.kill('SIGTERM')
    const t = setTimeout(() => this.proc.kill('SIGKILL'), 5000)
    await this.exited
    clearTimeout(t)
  }
}

/**
 * Test origins, registries and the Naiad processes themselves all live on loopback, which
 * the source policy refuses by default: test processes allow it, unless a test sets its
 * own NAIAD_SOURCE_ALLOW (the outsider suite does).
 */
export const TEST_SOURCE_ALLOW = '127.0.0.1'

export interface SupernodeHandle {
  process: NaiadProcess
  url: string
  port: number
  dataDir: string
  /** A join token daemons started with startDaemon(…, url) use unless given another. */
  joinToken: string
  /** An API token for the supernode's HTTP API (see apiHeaders). */
  apiToken: string
}

/** Tokens of the supernodes this process started, by URL: startDaemon and getJson find them there. */
const tokens = new Map<string, { joinToken: string; apiToken: string }>()

/** `Authorization: Bearer` for a supernode this process started (by URL prefix); empty for anything else. */
export function apiHeaders(url: string): Record<string, string> {
  for (const [base, t] of tokens) if (url.startsWith(base)) return { authorization: `Bearer ${t.apiToken}` }
  return {}
}

/** A token of the cluster whose key is in `dataDir`, as `supernode token create` makes it (without starting a process). */
export async function createToken(dataDir: string, scope: 'join' | 'api', ttlMs = 24 * 3600_000): Promise<string> {
  return mintToken(ClusterSigner.fromPem(await readFile(join(dataDir, 'cluster.key'))), scope, ttlMs)
}

/**
 * Starts a supernode on loopback. Its HTTP API binds port 0 (or `port`, to come back where an
 * earlier one was) and the address is read from its ready line.
 */
export async function startSupernode(dataDir: string, options: { port?: number; args?: string[]; env?: Record<string, string> } = {}): Promise<SupernodeHandle> {
  const p = new NaiadProcess(BINS.supernode, [
    '--data-dir', dataDir, '--listen', `127.0.0.1:${options.port ?? 0}`, '--p2p-listen', '/ip4/127.0.0.1/tcp/0', '--log-level', 'info', ...(options.args ?? [])
  ], { NAIAD_SOURCE_ALLOW: TEST_SOURCE_ALLOW, ...options.env })
  const ready = await p.ready
  const url = String(ready.http)
  const port = Number(new URL(url).port)
  const t = { joinToken: await createToken(dataDir, 'join'), apiToken: await createToken(dataDir, 'api') }
  tokens.set(url, t)
  return { process: p, url, port, dataDir, ...t }
}

export interface DaemonHandle {
  process: NaiadProcess
  apiUrl: string
  /** The registry mirror / forward proxy. */
  proxyUrl: string
  peerId: string
  /** The data channel's port (piece bytes to other peers). */
  dataPort: number
}

/**
 * Starts a daemon attached to `supernodeUrl`. It joins with the join token of the supernode
 * startSupernode started at that URL, unless `joinToken` names another (null: none, for a
 * daemon that must be refused or already holds a credential).
 */
export async function startDaemon(dataDir: string, supernodeUrl: string, options: { args?: string[]; bin?: string; env?: Record<string, string>; joinToken?: string | null } = {}): Promise<DaemonHandle> {
  const token = options.joinToken === undefined ? tokens.get(supernodeUrl)?.joinToken : options.joinToken ?? undefined
  const p = new NaiadProcess(options.bin ?? BINS.dfdaemon, [
    '--supernode', supernodeUrl, '--data-dir', dataDir, '--api-listen', '127.0.0.1:0', '--proxy-listen', '127.0.0.1:0', '--p2p-listen', '/ip4/127.0.0.1/tcp/0',
    '--log-level', 'info', ...(options.args ?? [])
  ], { NAIAD_SOURCE_ALLOW: TEST_SOURCE_ALLOW, ...(token === undefined ? {} : { NAIAD_JOIN_TOKEN: token }), ...options.env })
  const ready = await p.ready
  return { process: p, apiUrl: ready.api as string, proxyUrl: ready.proxy as string, peerId: ready.peerId as string, dataPort: Number(String(ready.data).split(':').at(-1)) }
}

export interface CommandResult {
  code: number | null
  stdout: string
  stderr: string
}

/** Runs a program to completion (never blocking the event loop) and collects its output. */
export function runTool(cmd: string, args: string[], options: { timeoutMs?: number; env?: Record<string, string> } = {}): Promise<CommandResult> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { env: { ...process.env, ...options.env }, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d: Buffer) => { stdout += d.toString() })
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
    const t = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 120_000)
    child.on('exit', (code) => { clearTimeout(t); resolve({ code, stdout, stderr }) })
  })
}

/** Runs one of Naiad's Node binaries (or any Node script) with the test's Node. */
export function run(bin: string, args: string[], options: { timeoutMs?: number; env?: Record<string, string> } = {}): Promise<CommandResult> {
  return runTool(process.execPath, [bin, ...args], options)
}
