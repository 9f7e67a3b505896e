// CPU caps for benchmark processes: each capped process gets its own child group of the
// cgroup v1 `cpu` controller, limited by CFS bandwidth to a fraction of one core. That models
// "one machine of FRACTION cores" for a process that in production has a machine of its own,
// on a test machine whose few cores also hold the load generators (scheduler-scale's
// `--supernode-cpu`). The group's weight is raised too, so that the process gets its fraction
// even when the machine is busy (a reservation as well as a limit).
//
//   const caps = await createCpuCaps(0.3, 'naiad-sched-scale')
//   caps.join('sn0', child.pid)           // right after spawn, before the child does any work
//   const s = await caps.stat('sn0')      // throttling counters
//   await caps.remove()                   // once the processes have exited

import { existsSync, mkdirSync, writeFileSync } from 'node:fs'
import { readFile, rmdir } from 'node:fs/promises'
import { join } from 'node:path'

/** Where the v1 `cpu` controller is mounted on the machines this runs on. */
export const CPU_CONTROLLER = '/sys/fs/cgroup/cpu'

/**
 * The CFS period (µs) a cap is enforced over. The kernel default (100 ms) lets a process run
 * its whole quota and then stall for the rest of the period: at 0.3 core, 70 ms stalls that
 * would show up in every latency percentile as an artefact of the cap, not of a slower
 * machine. A 10 ms period keeps the stalls at a few ms (the kernel allows periods down to 1 ms).
 */
export const DEFAULT_PERIOD_US = 10_000
/** The smallest quota the kernel accepts (1 ms). */
const MIN_QUOTA_US = 1_000
const MAX_PERIOD_US = 1_000_000
/**
 * The weight of a capped group against the machine's other processes (1,024 each). A machine
 * of its own would give the process its whole fraction; on a shared test machine with a load
 * of 20, the default weight would leave it a tenth of a core whatever the cap, and the cap
 * would measure the neighbours. Sixteen times the default reserves the fraction up to a load of
 * about 100; the quota still bounds what the group takes.
 */
export const RESERVE_SHARES = 16 * 1024
/** The kernel's largest cpu.shares. */
const MAX_SHARES = 262_144

/**
 * The weight of the parent group that holds `n` capped groups. In v1 a child's weight only
 * divides its parent's share among siblings: the parent competes at its own level as one
 * entity, so with the default 1,024 all `n` capped processes together would weigh as one
 * process (what the first runs measured: three supernodes sharing one process's share of a
 * busy machine). The parent gets the sum of its children's weights.
 */
export function parentShares(n: number): number {
  return Math.min(MAX_SHARES, RESERVE_SHARES * Math.max(1, n))
}

/** `--supernode-cpu` and the like: a positive number of cores, at most `maxCores` (the machine's). */
export function parseCpuFraction(v: string, flag: string, maxCores: number): number {
  const n = Number(v)
  if (v.trim() === '' || !Number.isFinite(n) || n <= 0) throw new Error(`${flag} must be a positive number of cores (e.g. 0.3), not ${v}`)
  if (n > maxCores) throw new Error(`${flag} ${v} is more than the machine's ${maxCores} cores: such a cap caps nothing`)
  return n
}

/**
 * The CFS quota and period for `fraction` of a core: the default period, or a longer one when
 * the quota would fall under the kernel's 1 ms minimum (0.05 core: 1 ms every 20 ms).
 */
export function cfsBandwidth(fraction: number, periodUs = DEFAULT_PERIOD_US): { periodUs: number; quotaUs: number } {
  if (!(fraction > 0)) throw new Error(`a CPU cap must be positive, not ${fraction}`)
  const period = Math.min(MAX_PERIOD_US, Math.max(periodUs, Math.ceil(MIN_QUOTA_US / fraction)))
  return { periodUs: period, quotaUs: Math.max(MIN_QUOTA_US, Math.round(fraction * period)) }
}

/**
 * Whether `cpuS` CPU-seconds over `wallS` seconds stayed within `fraction` of a core. CPU time
 * from /proc ticks at 10 ms and the two reads bracket the window loosely, so allow a few ticks.
 */
export function underCap(cpuS: number, wallS: number, fraction: number, slackS = 0.05): boolean {
  return cpuS <= fraction * wallS + slackS
}

/** This process's group in the v1 hierarchy of `controller`, from /proc/self/cgroup ("4:cpu,cpuacct:/a/b"). */
export function ownGroup(procCgroup: string, controller = 'cpu'): string | undefined {
  for (const line of procCgroup.split('\n')) {
    const m = /^\d+:([^:]*):(.*)$/.exec(line.trim())
    if (m !== null && m[1].split(',').includes(controller)) return m[2]
  }
  return undefined
}

/** Throttling counters of one group's `cpu.stat`: periods it ran in, periods it hit the cap, time held back. */
export interface ThrottleStat {
  periods: number
  throttled: number
  throttledS: number
}

export function parseCpuStat(text: string): ThrottleStat {
  const field = (key: string): number => Number(new RegExp(`^${key} (\\d+)$`, 'm').exec(text)?.[1] ?? 0)
  return { periods: field('nr_periods'), throttled: field('nr_throttled'), throttledS: field('throttled_time') / 1e9 }
}

export function throttleDelta(a: ThrottleStat, b: ThrottleStat): ThrottleStat {
  return { periods: b.periods - a.periods, throttled: b.throttled - a.throttled, throttledS: Math.round((b.throttledS - a.throttledS) * 100) / 100 }
}

export interface CpuCaps {
  readonly fraction: number
  readonly periodUs: number
  readonly quotaUs: number
  /** The parent group every capped process's own group sits in. */
  readonly dir: string
  /**
   * Moves process `pid` (every thread of it) into its own group `name`, made on first use.
   * Synchronous, so a caller that spawns and joins in one turn of the event loop caps the
   * child before it has run more than the start of Node's bootstrap; its later threads and
   * children inherit the group.
   */
  join(name: string, pid: number): void
  stat(name: string): Promise<ThrottleStat>
  /** Removes the groups (they must be empty: call once the capped processes have exited). */
  remove(): Promise<void>
}

/**
 * Makes a parent group `<prefix>-<pid>` under this process's own `cpu` group. Fails with a
 * message that says what is missing when the machine has no v1 `cpu` controller with CFS
 * bandwidth control, or when this process may not make groups (it needs root).
 */
export async function createCpuCaps(fraction: number, prefix: string, root = CPU_CONTROLLER): Promise<CpuCaps> {
  if (!existsSync(join(root, 'cpu.cfs_quota_us'))) {
    const v2 = existsSync('/sys/fs/cgroup/cgroup.controllers')
    throw new Error(`CPU caps need the cgroup v1 cpu controller with CFS bandwidth control (${join(root, 'cpu.cfs_quota_us')}), which this machine does not have${v2 ? ' (it runs cgroup v2, which this benchmark does not drive)' : ''}; run without the cap`)
  }
  const own = ownGroup(await readFile('/proc/self/cgroup', 'utf8').catch(() => '')) ?? '/'
  const dir = join(root, own, `${prefix}-${process.pid}`)
  const { periodUs, quotaUs } = cfsBandwidth(fraction)
  try {
    mkdirSync(dir, { recursive: true })
  } catch (err) {
    throw new Error(`CPU caps: cannot make the group ${dir} (${(err as NodeJS.ErrnoException).code}): it needs root and a writable cgroup v1 cpu controller`, { cause: err })
  }
  const made: string[] = []
  const groupOf = (name: string): string => {
    if (!/^[\w.-]+$/.test(name)) throw new Error(`CPU caps: bad group name ${name}`)
    const g = join(dir, name)
    if (!made.includes(g)) {
      mkdirSync(g, { recursive: true })
      made.push(g)
      // Period first: a quota longer than the current period would otherwise be refused.
      writeFileSync(join(g, 'cpu.cfs_period_us'), String(periodUs))
      writeFileSync(join(g, 'cpu.cfs_quota_us'), String(quotaUs))
      writeFileSync(join(g, 'cpu.shares'), String(RESERVE_SHARES))
      writeFileSync(join(dir, 'cpu.shares'), String(parentShares(made.length)))
    }
    return g
  }
  return {
    fraction,
    periodUs,
    quotaUs,
    dir,
    join(name, pid) {
      writeFileSync(join(groupOf(name), 'cgroup.procs'), String(pid))
    },
    async stat(name) {
      return parseCpuStat(await readFile(join(groupOf(name), 'cpu.stat'), 'utf8'))
    },
    async remove() {
      // A process that was just killed leaves its group a moment later: retry briefly.
      for (const g of [...made].reverse().concat(dir)) {
        for (let attempt = 0; ; attempt++) {
          try {
            await rmdir(g)
            break
          } catch (err) {
            const code = (err as NodeJS.ErrnoException).code
            if (code === 'ENOENT') break
            if (attempt >= 20) throw new Error(`CPU caps: cannot remove the group ${g} (${code}): a capped process is still in it`, { cause: err })
            await new Promise((r) => setTimeout(r, 100))
          }
        }
      }
    }
  }
}
