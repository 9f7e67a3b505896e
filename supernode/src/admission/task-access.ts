// Which nodes may have a task's pieces. Public content (the origin serves it to anyone)
// needs nothing but membership. Private content (the origin refuses an anonymous request:
// a private registry's blob, a URL behind a password) is granted only to a node that proved
// its client may read it: the supernode asks the origin for the first byte with the headers
// the node forwarded in its registration, and remembers the answer for a while, in memory
// only. Those headers are also what the seed fetches the task with; they never reach disk.

import { NaiadError, raceSignal, toNaiadError } from '@naiad/proto'

export interface AccessProbe {
  /** The origin's status for a one-byte GET of `url` with `headers` (see OriginClient.probe). */
  probe(url: string, headers: Record<string, string>, signal?: AbortSignal): Promise<number>
}

export interface TaskAccessOptions {
  /** How long the origin's answer to an anonymous request (public or not) is trusted. */
  ttlMs: number
  /** How long a node's proof of access to a private task lasts (a long download must not lose it). */
  proofTtlMs: number
  /** Tasks remembered at most (oldest dropped first). */
  maxTasks: number
  probeTimeoutMs: number
}

export const TASK_ACCESS_DEFAULTS: TaskAccessOptions = { ttlMs: 10 * 60_000, proofTtlMs: 60 * 60_000, maxTasks: 100_000, probeTimeoutMs: 15_000 }

interface Visibility {
  public: boolean
  at: number
  /** Nodes that proved they may read the private task: host ID → when. */
  proven: Map<string, number>
  /** The headers of the latest proof, for the seed. */
  headers?: Record<string, string>
}

const ok = (status: number): boolean => status >= 200 && status < 300

export class TaskAccess {
  private readonly tasks = new Map<string, Visibility>()
  private readonly probing = new Map<string, Promise<Visibility>>()
  private readonly probe: AccessProbe
  private readonly options: TaskAccessOptions

  constructor(probe: AccessProbe, options: TaskAccessOptions = TASK_ACCESS_DEFAULTS) {
    this.probe = probe
    this.options = options
  }

  /**
   * Before `hostId` joins task `id`: resolves when the node may have its pieces, throws
   * SN_ERR_FORBIDDEN when the task is private and the node's headers do not open it.
   */
  async check(hostId: string, task: { id: string; url: string; headers: Record<string, string> }, signal?: AbortSignal): Promise<void> {
    const now = Date.now()
    const v = await this.visibility(task, signal)
    if (v.public) return
    const at = v.proven.get(hostId)
    if (at !== undefined && now - at < this.options.proofTtlMs) return
    if (Object.keys(task.headers).length === 0) throw forbidden(task.url, 'its origin refuses anonymous requests and the node forwarded no credentials')
    let status: number
    try {
      status = await this.probe.probe(task.url, task.headers, timeout(signal, this.options.probeTimeoutMs))
    } catch (err) {
      throw toNaiadError(err, 'DFD_ERR_ORIGIN_UNREACHABLE', 'checking the node\'s access')
    }
    if (!ok(status)) throw forbidden(task.url, `its origin answered ${status} to the node's credentials`)
    v.proven.set(hostId, now)
    v.headers = { ...task.headers }
  }

  /** May `hostId` have task `id`'s pieces now (public, or proven recently)? */
  allowed(hostId: string, id: string): boolean {
    const v = this.tasks.get(id)
    if (v === undefined) return false
    if (v.public) return true
    const at = v.proven.get(hostId)
    return at !== undefined && Date.now() - at < this.options.proofTtlMs
  }

  /** Headers that opened a private task (the latest proof's), for the seed to fetch it with. */
  headersFor(id: string): Record<string, string> | undefined {
    return this.tasks.get(id)?.headers
  }

  /** Drops a node's proofs (it was revoked). */
  forget(hostId: string): void {
    for (const v of this.tasks.values()) v.proven.delete(hostId)
  }

  private visibility(task: { id: string; url: string }, signal?: AbortSignal): Promise<Visibility> {
    const known = this.tasks.get(task.id)
    if (known !== undefined && Date.now() - known.at < this.options.ttlMs) return Promise.resolve(known)
    let p = this.probing.get(task.id)
    if (p === undefined) {
      p = this.probe.probe(task.url, {}, AbortSignal.timeout(this.options.probeTimeoutMs)).then((status) => {
        const v: Visibility = { public: ok(status), at: Date.now(), proven: known?.proven ?? new Map(), headers: known?.headers }
        this.tasks.delete(task.id)
        if (this.tasks.size >= this.options.maxTasks) this.tasks.delete(this.tasks.keys().next().value!)
        this.tasks.set(task.id, v)
        return v
      }).finally(() => this.probing.delete(task.id))
      this.probing.set(task.id, p)
    }
    return signal === undefined ? p : raceSignal(p, signal)
  }
}

function timeout(signal: AbortSignal | undefined, ms: number): AbortSignal {
  return signal === undefined ? AbortSignal.timeout(ms) : AbortSignal.any([signal, AbortSignal.timeout(ms)])
}

function forbidden(url: string, why: string): NaiadError {
  let where = url
  try {
    const u = new URL(url)
    where = `${u.origin}${u.pathname}`
  } catch { /* the URL was checked before */ }
  return new NaiadError('SN_ERR_FORBIDDEN', `no grant for ${where}: ${why}`)
}
