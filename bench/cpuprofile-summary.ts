// Where did a process spend its CPU? Reads a V8 .cpuprofile (node --cpu-prof) and adds up
// self time per function and per component (npm package, Node core module, Naiad folder).
//
//   node bench/cpuprofile-summary.ts FILE.cpuprofile [--top 25] [--from US --to US]
//
// --from/--to keep only samples in a window of the profile's clock (microseconds of the
// monotonic clock, the one process.hrtime() reads), so a profile of a whole daemon run can
// be cut down to one transfer.

import { readFile } from 'node:fs/promises'
import { parseArgs } from 'node:util'

export interface CallFrame {
  functionName: string
  url: string
  lineNumber: number
}

export interface ProfileNode {
  id: number
  callFrame: CallFrame
  children?: number[]
}

export interface CpuProfile {
  nodes: ProfileNode[]
  startTime: number
  endTime: number
  samples: number[]
  timeDeltas: number[]
}

export interface SelfTime {
  name: string
  ms: number
  /** Share of the busy (non-idle) time in the window. */
  pct: number
}

export interface ProfileSummary {
  file: string
  windowMs: number
  busyMs: number
  idleMs: number
  functions: SelfTime[]
  components: SelfTime[]
}

const ROOT = new URL('../', import.meta.url).href

/** npm package, Node core area or Naiad source folder a frame belongs to. */
export function componentOf(frame: CallFrame, caller: CallFrame | undefined): string {
  const { url, functionName } = frame
  if (url === '') {
    if (functionName.startsWith('(')) return functionName
    // A native function (crypto, fs, socket writes): its JS caller says what it served.
    return caller === undefined || caller.url === '' ? '(native)' : `${componentOf(caller, undefined)} (native)`
  }
  const nm = url.lastIndexOf('/node_modules/')
  if (nm >= 0) {
    const parts = url.slice(nm + '/node_modules/'.length).split('/')
    return parts[0].startsWith('@') ? `${parts[0]}/${parts[1]}` : parts[0]
  }
  if (url.startsWith('node:')) {
    const parts = url.slice('node:'.length).split('/')
    return parts[0] === 'internal' && parts.length > 2 ? `node:${parts[1]}` : `node:${parts[0] === 'internal' ? parts[1] : parts[0]}`
  }
  if (url.startsWith(ROOT)) {
    // dfdaemon/src/upload/upload-server.ts → dfdaemon/upload
    const parts = url.slice(ROOT.length).split('/')
    return parts[1] === 'src' && parts.length > 3 ? `${parts[0]}/${parts[2]}` : parts[0]
  }
  return url
}

function shortUrl(url: string): string {
  if (url.startsWith(ROOT)) return url.slice(ROOT.length)
  const nm = url.lastIndexOf('/node_modules/')
  return nm >= 0 ? url.slice(nm + '/node_modules/'.length) : url
}

export function label(frame: CallFrame, caller: CallFrame | undefined): string {
  const name = frame.functionName === '' ? '(anonymous)' : frame.functionName
  if (frame.url === '') {
    if (name.startsWith('(') || caller === undefined || caller.url === '') return name
    return `${name} [native, from ${caller.functionName === '' ? '(anonymous)' : caller.functionName} ${shortUrl(caller.url)}:${caller.lineNumber + 1}]`
  }
  return `${name} ${shortUrl(frame.url)}:${frame.lineNumber + 1}`
}

/** The profile's nodes by ID, and each node's parent (its caller). */
export function indexProfile(profile: CpuProfile): { byId: Map<number, ProfileNode>; parent: Map<number, number> } {
  const byId = new Map<number, ProfileNode>()
  const parent = new Map<number, number>()
  for (const n of profile.nodes) {
    byId.set(n.id, n)
    for (const c of n.children ?? []) parent.set(c, n.id)
  }
  return { byId, parent }
}

export function summarize(profile: CpuProfile, file: string, options: { top?: number; from?: number; to?: number } = {}): ProfileSummary {
  const { byId, parent } = indexProfile(profile)
  const from = options.from ?? -Infinity
  const to = options.to ?? Infinity
  const selfUs = new Map<number, number>()
  let t = profile.startTime
  for (let i = 0; i < profile.samples.length; i++) {
    t += profile.timeDeltas[i]
    if (t < from || t > to) continue
    // A sample's time is the delta to the next sample (V8 attributes it that way too).
    const dt = profile.timeDeltas[i + 1] ?? 0
    selfUs.set(profile.samples[i], (selfUs.get(profile.samples[i]) ?? 0) + dt)
  }
  const functions = new Map<string, number>()
  const components = new Map<string, number>()
  let idleUs = 0
  let totalUs = 0
  for (const [id, us] of selfUs) {
    const node = byId.get(id)!
    const callerId = parent.get(id)
    const caller = callerId === undefined ? undefined : byId.get(callerId)?.callFrame
    totalUs += us
    if (node.callFrame.functionName === '(idle)') {
      idleUs += us
      continue
    }
    const fn = label(node.callFrame, caller)
    functions.set(fn, (functions.get(fn) ?? 0) + us)
    const comp = componentOf(node.callFrame, caller)
    components.set(comp, (components.get(comp) ?? 0) + us)
  }
  const busyUs = totalUs - idleUs
  const rank = (m: Map<string, number>): SelfTime[] => [...m]
    .sort((a, b) => b[1] - a[1])
    .slice(0, options.top ?? 25)
    .map(([name, us]) => ({ name, ms: Math.round(us / 100) / 10, pct: busyUs === 0 ? 0 : Math.round((us / busyUs) * 1000) / 10 }))
  return {
    file,
    windowMs: Math.round(totalUs / 1000),
    busyMs: Math.round(busyUs / 1000),
    idleMs: Math.round(idleUs / 1000),
    functions: rank(functions),
    components: rank(components)
  }
}

/**
 * Who calls the functions whose label matches `pattern`: self time of those functions
 * grouped by their `depth` nearest callers.
 */
export function callers(profile: CpuProfile, pattern: RegExp, options: { depth?: number; from?: number; to?: number } = {}): SelfTime[] {
  const { byId, parent } = indexProfile(profile)
  const frameOf = (id: number | undefined): CallFrame | undefined => (id === undefined ? undefined : byId.get(id)?.callFrame)
  const out = new Map<string, number>()
  let total = 0
  let t = profile.startTime
  for (let i = 0; i < profile.samples.length; i++) {
    t += profile.timeDeltas[i]
    if (t < (options.from ?? -Infinity) || t > (options.to ?? Infinity)) continue
    const dt = profile.timeDeltas[i + 1] ?? 0
    const id = profile.samples[i]
    if (byId.get(id)?.callFrame.functionName !== '(idle)') total += dt
    if (!pattern.test(label(byId.get(id)!.callFrame, frameOf(parent.get(id))))) continue
    const chain: string[] = []
    for (let p = parent.get(id), k = 0; p !== undefined && k < (options.depth ?? 3); p = parent.get(p), k++) {
      chain.push(label(byId.get(p)!.callFrame, frameOf(parent.get(p))))
    }
    const key = chain.join(' ← ')
    out.set(key, (out.get(key) ?? 0) + dt)
  }
  return [...out].sort((a, b) => b[1] - a[1]).map(([name, us]) => ({ name, ms: Math.round(us / 100) / 10, pct: total === 0 ? 0 : Math.round((us / total) * 1000) / 10 }))
}

export async function summarizeFile(file: string, options: { top?: number; from?: number; to?: number } = {}): Promise<ProfileSummary> {
  return summarize(JSON.parse(await readFile(file, 'utf8')) as CpuProfile, file, options)
}

export function formatSummary(s: ProfileSummary, title: string): string {
  const lines = [
    `### ${title}`,
    '',
    `${s.windowMs} ms sampled: ${s.busyMs} ms busy, ${s.idleMs} ms idle. Self time, % of busy:`,
    '',
    '| component | ms | % |',
    '|---|---:|---:|',
    ...s.components.slice(0, 12).map((c) => `| ${c.name} | ${c.ms} | ${c.pct} |`),
    '',
    '| function | ms | % |',
    '|---|---:|---:|',
    ...s.functions.map((f) => `| \`${f.name}\` | ${f.ms} | ${f.pct} |`),
    ''
  ]
  return lines.join('\n')
}

if (import.meta.main) {
  const { positionals, values } = parseArgs({
    allowPositionals: true,
    options: {
      top: { type: 'string', default: '25' },
      from: { type: 'string' },
      to: { type: 'string' },
      callers: { type: 'string' },
      depth: { type: 'string', default: '3' }
    }
  })
  if (positionals.length === 0) {
    process.stderr.write('usage: cpuprofile-summary.ts FILE.cpuprofile... [--top N] [--from US --to US] [--callers REGEX [--depth N]]\n')
    process.exit(2)
  }
  const window = {
    top: Number(values.top),
    from: values.from === undefined ? undefined : Number(values.from),
    to: values.to === undefined ? undefined : Number(values.to)
  }
  for (const file of positionals) {
    if (values.callers !== undefined) {
      const profile = JSON.parse(await readFile(file, 'utf8')) as CpuProfile
      const rows = callers(profile, new RegExp(values.callers), { ...window, depth: Number(values.depth) }).slice(0, window.top)
      process.stdout.write(`### callers of /${values.callers}/ in ${file}\n\n| ms | % of busy | call chain |\n|---:|---:|---|\n`)
      process.stdout.write(`${rows.map((r) => `| ${r.ms} | ${r.pct} | ${r.name} |`).join('\n')}\n\n`)
      continue
    }
    process.stdout.write(`${formatSummary(await summarizeFile(file, window), file)}\n`)
  }
}
