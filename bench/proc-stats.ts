// CPU accounting from /proc (Linux): per process, and for everything on the machine that
// is not part of the benchmark, which on a shared machine competes for the same cores.

import { readdir, readFile } from 'node:fs/promises'

/** Linux USER_HZ, the unit of utime/stime in /proc/PID/stat. */
const CLK_TCK = 100

interface ProcStat {
  ppid: number
  cpuS: number
}

function parseStat(stat: string): ProcStat {
  // After "pid (comm) " come state, ppid, …; utime and stime are the 12th and 13th.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return { ppid: Number(fields[1]), cpuS: (Number(fields[11]) + Number(fields[12])) / CLK_TCK }
}

/** CPU seconds (user + system) a process has used so far; 0 once it is gone. */
export async function cpuSeconds(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '')
  return stat === '' ? 0 : parseStat(stat).cpuS
}

/**
 * CPU seconds one thread of a process has used so far (by default its main thread, the one
 * that runs JavaScript: a process busy on other threads is not limited by it); 0 once gone.
 */
export async function threadCpuSeconds(pid: number, tid = pid): Promise<number> {
  const stat = await readFile(`/proc/${pid}/task/${tid}/stat`, 'utf8').catch(() => '')
  return stat === '' ? 0 : parseStat(stat).cpuS
}

/** CPU seconds used by each of `pids` while `fn` ran. */
export async function cpuDuring<T>(pids: Record<string, number>, fn: () => Promise<T>): Promise<{ value: T; cpu: Record<string, number> }> {
  const sample = async (): Promise<Record<string, number>> =>
    Object.fromEntries(await Promise.all(Object.entries(pids).map(async ([k, pid]) => [k, await cpuSeconds(pid)] as const)))
  const before = await sample()
  const value = await fn()
  const after = await sample()
  return { value, cpu: Object.fromEntries(Object.keys(pids).map((k) => [k, Math.round((after[k] - before[k]) * 100) / 100])) }
}

async function scanProcs(): Promise<Map<number, ProcStat>> {
  const out = new Map<number, ProcStat>()
  const pids = (await readdir('/proc')).filter((n) => /^\d+$/.test(n))
  await Promise.all(pids.map(async (p) => {
    const stat = await readFile(`/proc/${p}/stat`, 'utf8').catch(() => '')
    if (stat !== '') out.set(Number(p), parseStat(stat))
  }))
  return out
}

function isOurs(pid: number, procs: Map<number, ProcStat>): boolean {
  for (let p = pid, hops = 0; p > 1 && hops < 64; hops++) {
    if (p === process.pid) return true
    p = procs.get(p)?.ppid ?? 0
  }
  return false
}

/** CPU seconds the whole machine spent busy, and stolen by the hypervisor, so far. */
async function machineCpu(): Promise<{ busyS: number; stealS: number }> {
  const line = (await readFile('/proc/stat', 'utf8')).split('\n')[0]
  // cpu user nice system idle iowait irq softirq steal …
  const [user, nice, system, , , irq, softirq, steal] = line.trim().split(/\s+/).slice(1).map(Number)
  return { busyS: (user + nice + system + irq + softirq) / CLK_TCK, stealS: steal / CLK_TCK }
}

/** CPU seconds of this process, its reaped children, and its live descendants. */
async function treeCpu(): Promise<number> {
  const own = await readFile(`/proc/${process.pid}/stat`, 'utf8')
  const f = own.slice(own.lastIndexOf(')') + 2).split(' ')
  let total = (Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14])) / CLK_TCK
  const procs = await scanProcs()
  for (const [pid, st] of procs) if (pid !== process.pid && isOurs(pid, procs)) total += st.cpuS
  return total
}

/**
 * The machine's /proc/stat CPU line: cores' seconds idle (idle + iowait) and busy so far, with
 * the time it was read (ms since the epoch). Read every 100 ms through a trial, it shows when
 * the cores sat idle, which per-process counts cannot (they leave out the kernel's softirq
 * work, other processes and the benchmark's own).
 */
export async function machineCores(): Promise<{ at: number; idleS: number; busyS: number }> {
  const line = (await readFile('/proc/stat', 'utf8')).split('\n')[0]
  const [user, nice, system, idle, iowait, irq, softirq] = line.trim().split(/\s+/).slice(1).map(Number)
  return { at: Date.now(), idleS: (idle + iowait) / CLK_TCK, busyS: (user + nice + system + irq + softirq) / CLK_TCK }
}

/**
 * CPU seconds the rest of the machine (processes outside this one's tree, short-lived ones
 * included) used while `fn` ran, and the seconds the hypervisor stole.
 */
export async function foreignCpu<T>(fn: () => Promise<T>): Promise<{ value: T; otherCpuS: number; stealS: number }> {
  const [m0, t0] = await Promise.all([machineCpu(), treeCpu()])
  const value = await fn()
  const [m1, t1] = await Promise.all([machineCpu(), treeCpu()])
  const other = Math.max(0, (m1.busyS - m0.busyS) - (t1 - t0))
  return { value, otherCpuS: Math.round(other * 100) / 100, stealS: Math.round((m1.stealS - m0.stealS) * 100) / 100 }
}

/** Last resort on the way out: SIGKILLs this process's descendants, e.g. a daemon that never became ready. */
export async function killDescendants(): Promise<void> {
  const procs = await scanProcs()
  for (const pid of procs.keys()) {
    if (pid === process.pid || !isOurs(pid, procs)) continue
    try { process.kill(pid, 'SIGKILL') } catch { /* already gone */ }
  }
}

/** Resident set of a process, MiB (0 once it is gone). */
export async function rssMiB(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '')
  const m = /^VmRSS:\s+(\d+) kB/m.exec(status)
  return m === null ? 0 : Number(m[1]) / 1024
}

/** The largest resident set of `pid` while `fn` ran, sampled every 100 ms. */
export async function peakRss<T>(pid: number, fn: () => Promise<T>): Promise<{ value: T; peakMiB: number }> {
  let peak = await rssMiB(pid)
  const timer = setInterval(() => { rssMiB(pid).then((r) => { peak = Math.max(peak, r) }, () => {}) }, 100)
  try {
    const value = await fn()
    peak = Math.max(peak, await rssMiB(pid))
    return { value, peakMiB: Math.round(peak) }
  } finally {
    clearInterval(timer)
  }
}

/** CPU seconds of this process's children that have exited and been waited for (cutime + cstime). */
export async function reapedChildrenCpu(): Promise<number> {
  const own = await readFile(`/proc/${process.pid}/stat`, 'utf8')
  const f = own.slice(own.lastIndexOf(')') + 2).split(' ')
  return (Number(f[13]) + Number(f[14])) / CLK_TCK
}
