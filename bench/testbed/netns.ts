// A cluster of hosts on one machine: each host is a network namespace joined by a veth pair
// to a Linux bridge that lives in a namespace of its own, with `tc` shaping every link's
// bandwidth and delay. Addresses come from a /24 that exists only inside these namespaces,
// so no traffic reaches the machine's own network; names carry a random per-run tag so two
// runs (or a crashed one) never collide.
//
//   const bed = await Testbed.create({ signal })
//   const origin = await bed.addNode('origin', { rateMbit: 400, rttMs: 2 })
//   const child = bed.spawn(origin, process.execPath, ['server.ts'])
//   …
//   await bed.destroy()          // also runs on SIGINT/SIGTERM/uncaught errors, see below
//
// Needs root and iproute2 (`ip`, `tc`).

import { spawn, spawnSync, type ChildProcess, type SpawnOptions } from 'node:child_process'
import { randomBytes } from 'node:crypto'

export interface LinkShape {
  /** Bandwidth of the link in Mbit/s, in each direction. */
  rateMbit: number
  /** Round-trip time this link adds between two nodes, in ms (split over the four egress queues on the path). */
  rttMs: number
}

export interface Node {
  /** Short name inside the testbed, e.g. `h3`, `origin`. */
  name: string
  /** Network namespace name (tagged). */
  ns: string
  /** IPv4 address on the testbed /24. */
  ip: string
  shape: LinkShape
}

export class TestbedError extends Error {
  readonly code: string
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.code = code
    this.name = 'TestbedError'
  }
}

/** Runs a command to completion without blocking the event loop; rejects on a non-zero exit. */
function run(cmd: string, args: string[], signal?: AbortSignal): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], signal })
    let out = ''
    let err = ''
    child.stdout.on('data', (d: Buffer) => { out += d.toString() })
    child.stderr.on('data', (d: Buffer) => { err += d.toString() })
    child.once('error', (e) => reject(new TestbedError('BENCH_ERR_TESTBED_CMD', `${cmd} ${args.join(' ')}: ${e.message}`, { cause: e })))
    child.once('exit', (code) => {
      if (code === 0) resolve(out)
      else reject(new TestbedError('BENCH_ERR_TESTBED_CMD', `${cmd} ${args.join(' ')} exited with ${code}: ${err.trim()}`))
    })
  })
}

export interface TestbedOptions {
  /** Prefix of every namespace name (default `nb-` + 6 random hex digits). */
  tag?: string
  signal?: AbortSignal
  /** Progress lines; default silent. */
  log?: (msg: string) => void
  /**
   * Whether SIGINT/SIGTERM tear down and exit at once (default). A caller that handles the
   * signals itself (aborting its run, which ends in `destroy()`) passes false; the testbed
   * then only tears down after 30 s, should that not happen.
   */
  exitOnSignal?: boolean
}

export class Testbed {
  readonly tag: string
  /** First three octets of the testbed's /24, e.g. `10.213.7`. */
  readonly prefix: string
  readonly nodes = new Map<string, Node>()
  private readonly bridgeNs: string
  /** Namespaces created so far, in order; torn down in reverse. */
  private readonly created: string[] = []
  private readonly children = new Set<ChildProcess>()
  private readonly signal: AbortSignal | undefined
  private readonly log: (msg: string) => void
  private readonly exitOnSignal: boolean
  private signals = 0
  /** Set when links cannot be given a delay (no netem): why. */
  delayUnsupported: string | undefined
  private nextHost = 2
  private destroyed = false
  private readonly onExit = (): void => { this.destroySync() }

  private constructor(options: TestbedOptions) {
    const rnd = randomBytes(4)
    this.tag = options.tag ?? `nb-${rnd.toString('hex').slice(0, 6)}`
    // 10.200.0.0–10.255.255.0: unlikely to shadow anything, and it never leaves the namespaces anyway.
    this.prefix = `10.${200 + (rnd[0] % 56)}.${rnd[1]}`
    this.bridgeNs = `${this.tag}-br`
    this.signal = options.signal
    this.log = options.log ?? (() => {})
    this.exitOnSignal = options.exitOnSignal ?? true
  }

  /**
   * Creates the bridge namespace. From here until `destroy()`, leaving the process (normally,
   * by a signal, or by an uncaught error) removes every namespace and kills every process
   * this testbed started.
   */
  static async create(options: TestbedOptions = {}): Promise<Testbed> {
    const bed = new Testbed(options)
    bed.installCleanup()
    try {
      await bed.ip(['netns', 'add', bed.bridgeNs])
      bed.created.push(bed.bridgeNs)
      await bed.ip(['-n', bed.bridgeNs, 'link', 'set', 'lo', 'up'])
      await bed.ip(['-n', bed.bridgeNs, 'link', 'add', 'br0', 'type', 'bridge'])
      await bed.ip(['-n', bed.bridgeNs, 'link', 'set', 'br0', 'up'])
      bed.log(`testbed ${bed.tag}: bridge namespace ${bed.bridgeNs}, subnet ${bed.prefix}.0/24`)
      return bed
    } catch (err) {
      await bed.destroy()
      throw err
    }
  }

  private ip(args: string[]): Promise<string> {
    return run('ip', args, this.signal)
  }

  private tc(ns: string, args: string[]): Promise<string> {
    return run('ip', ['netns', 'exec', ns, 'tc', ...args], this.signal)
  }

  /**
   * Adds a namespace `tag-name` with one interface `eth0` (a veth whose peer, `name` in the
   * bridge namespace, is a bridge port). Both ends are shaped: a host's egress is its upload,
   * the bridge port's egress its download.
   */
  async addNode(name: string, shape: LinkShape): Promise<Node> {
    if (this.nodes.has(name)) throw new TestbedError('BENCH_ERR_TESTBED_NODE', `node ${name} exists`)
    if (name.length > 15) throw new TestbedError('BENCH_ERR_TESTBED_NODE', `node name ${name} is longer than an interface name may be (15)`)
    if (this.nextHost > 254) throw new TestbedError('BENCH_ERR_TESTBED_FULL', 'the testbed /24 is full (253 nodes)')
    const ns = `${this.tag}-${name}`
    const ip = `${this.prefix}.${this.nextHost++}`
    await this.ip(['netns', 'add', ns])
    this.created.push(ns)
    await this.ip(['-n', ns, 'link', 'set', 'lo', 'up'])
    // Created inside the bridge namespace with its peer moved straight into the node's: no
    // interface ever appears in the machine's own namespace.
    await this.ip(['-n', this.bridgeNs, 'link', 'add', name, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns])
    await this.ip(['-n', this.bridgeNs, 'link', 'set', name, 'master', 'br0'])
    await this.ip(['-n', this.bridgeNs, 'link', 'set', name, 'up'])
    await this.ip(['-n', ns, 'addr', 'add', `${ip}/24`, 'dev', 'eth0'])
    await this.ip(['-n', ns, 'link', 'set', 'eth0', 'up'])
    await this.shape(ns, 'eth0', shape)
    await this.shape(this.bridgeNs, name, shape)
    const node = { name, ns, ip, shape }
    this.nodes.set(name, node)
    this.log(`testbed ${this.tag}: ${name} ${ip} (${shape.rateMbit} Mbit/s, +${shape.rttMs} ms RTT)`)
    return node
  }

  /**
   * HTB caps the rate, netem under it adds the delay (when the kernel has netem). A packet between two nodes crosses four
   * shaped egress queues (sender eth0, bridge port to the receiver, and the same back for
   * the answer), so each adds a quarter of the RTT: any two nodes with the same shape see
   * `rttMs` between them.
   */
  private async shape(ns: string, dev: string, { rateMbit, rttMs }: LinkShape): Promise<void> {
    const rate = `${rateMbit}mbit`
    await this.tc(ns, ['qdisc', 'add', 'dev', dev, 'root', 'handle', '1:', 'htb', 'default', '10'])
    await this.tc(ns, ['class', 'add', 'dev', dev, 'parent', '1:', 'classid', '1:10', 'htb', 'rate', rate, 'ceil', rate, 'burst', '64k', 'cburst', '64k'])
    if (rttMs <= 0 || this.delayUnsupported !== undefined) return
    try {
      await this.tc(ns, ['qdisc', 'add', 'dev', dev, 'parent', '1:10', 'handle', '10:', 'netem', 'delay', `${(rttMs / 4).toFixed(3)}ms`, 'limit', '10000'])
    } catch (err) {
      // Some kernels (this VM's among them) are built without sch_netem; then links are rate
      // limited but add no delay, and the results must say so rather than claim an RTT.
      if (!/qdisc kind is unknown/.test((err as Error).message)) throw err
      this.delayUnsupported = 'the kernel has no sch_netem (CONFIG_NET_SCH_NETEM is not set): links are rate limited but add no delay'
      this.log(`testbed ${this.tag}: ${this.delayUnsupported}`)
    }
  }

  /** Spawns `cmd args` inside a node's namespace (`ip netns exec` execs, so the child's pid is the command's). */
  spawn(node: Node, cmd: string, args: string[], options: SpawnOptions = {}): ChildProcess {
    if (this.destroyed) throw new TestbedError('BENCH_ERR_TESTBED_GONE', 'the testbed was torn down')
    const child = spawn('ip', ['netns', 'exec', node.ns, cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'], ...options })
    this.children.add(child)
    child.once('exit', () => this.children.delete(child))
    return child
  }

  private installCleanup(): void {
    process.once('exit', this.onExit)
    process.on('SIGINT', this.onSignal)
    process.on('SIGTERM', this.onSignal)
    process.on('uncaughtException', this.onFatal)
    process.on('unhandledRejection', this.onFatal)
  }

  private removeCleanup(): void {
    process.removeListener('exit', this.onExit)
    process.removeListener('SIGINT', this.onSignal)
    process.removeListener('SIGTERM', this.onSignal)
    process.removeListener('uncaughtException', this.onFatal)
    process.removeListener('unhandledRejection', this.onFatal)
  }

  private readonly onSignal = (sig: NodeJS.Signals): void => {
    // A second Ctrl-C means now.
    if (!this.exitOnSignal && ++this.signals < 2) {
      // The caller handles the signal (by aborting its run, which ends in destroy()); this is
      // the backstop in case that takes too long.
      setTimeout(() => { this.destroySync(); process.exit(130) }, 30_000).unref()
      return
    }
    this.destroySync()
    process.exit(sig === 'SIGINT' ? 130 : 143)
  }

  private readonly onFatal = (err: unknown): void => {
    process.stderr.write(`testbed ${this.tag}: uncaught error, tearing down: ${(err as Error)?.stack ?? String(err)}\n`)
    this.destroySync()
    process.exit(1)
  }

  /** Kills what runs in the namespaces and removes them. Safe to call twice. */
  async destroy(): Promise<void> {
    const alive = [...this.children].filter((c) => c.exitCode === null && c.signalCode === null)
    for (const c of alive) c.kill('SIGTERM')
    await Promise.race([
      Promise.all(alive.map((c) => new Promise((r) => { if (c.exitCode !== null || c.signalCode !== null) r(null); else c.once('exit', r) }))),
      new Promise((r) => setTimeout(r, 5000).unref())
    ])
    this.destroySync()
  }

  /**
   * The synchronous teardown, usable from an `exit` handler: SIGKILL every process still in
   * one of our namespaces (found by `ip netns pids`, so also grandchildren), then delete the
   * namespaces; the veth pairs and the bridge go with them.
   */
  destroySync(): void {
    if (this.destroyed) return
    this.destroyed = true
    for (const c of this.children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL')
    for (const ns of [...this.created].reverse()) {
      const pids = spawnSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' }).stdout ?? ''
      for (const pid of pids.split('\n').filter((p) => /^\d+$/.test(p))) {
        try { process.kill(Number(pid), 'SIGKILL') } catch { /* already gone */ }
      }
      const r = spawnSync('ip', ['netns', 'del', ns], { encoding: 'utf8' })
      if (r.status !== 0) process.stderr.write(`testbed ${this.tag}: ip netns del ${ns}: ${r.stderr.trim()}\n`)
    }
    this.created.length = 0
    this.removeCleanup()
    this.log(`testbed ${this.tag}: torn down`)
  }
}
