// What holds a process's heap? Reads a V8 .heapsnapshot (node --heapsnapshot-signal, or
// v8.writeHeapSnapshot) without a browser: self and retained size by constructor (retained
// through the dominator tree, weak edges ignored, as DevTools does), and for the largest
// groups the owner chain that holds them (the constructors of their dominators, nearest
// first), so that "47 KB per peer" can be put on the structures that hold it.
//
//   node bench/heap-summary.ts FILE.heapsnapshot [--top 30] [--per 10000] [--base OTHER.heapsnapshot]
//   node bench/heap-summary.ts FILE.heapprofile [--top 30]
//
// A .heapprofile (V8's sampling heap profile, e.g. loop-probe.ts's NAIAD_LOOP_PROBE_SAMPLE) is
// summed by the allocating function, by the nearest Naiad function on its stack (which of our
// calls made it), and by component.
//
// --per N also prints each size divided by N (e.g. bytes per registered peer). --base subtracts
// another snapshot's groups (the same process with fewer peers, or another build): with --per
// the peers between the two, it is the marginal cost of a peer, with the fixed part (code,
// module sources, caches) taken out.

import { readFile } from 'node:fs/promises'
import { parseArgs } from 'node:util'

import { componentOf, label } from './cpuprofile-summary.ts'

interface Snapshot {
  snapshot: { meta: { node_fields: string[]; node_types: [string[]]; edge_fields: string[]; edge_types: [string[]] }; node_count: number }
  nodes: number[]
  edges: number[]
  strings: string[]
}

export interface HeapGroup {
  name: string
  count: number
  selfBytes: number
  /** Bytes the group's objects keep alive that nothing outside it does (dominated subtrees, not double counted within the group). */
  retainedBytes: number
  /** The most common chain of owners (dominators' group names, nearest first) above the group's objects, with its share of their retained size. */
  owners: Array<{ chain: string; bytes: number }>
}

export interface HeapSummary {
  totalBytes: number
  nodes: number
  groups: HeapGroup[]
  /** The largest single objects below the roots' own (module scopes, caches), each with the edge its dominator holds it by. */
  objects: Array<{ name: string; retainedBytes: number; heldBy: string }>
}

/** The group an object is counted in: its constructor for objects, its type otherwise ("(closure) name" for functions). */
function groupName(type: string, name: string): string {
  switch (type) {
    case 'object': return name
    case 'closure': return `(closure) ${name || '(anonymous)'}`
    case 'native': return `(native) ${name.replace(/\s.*$/, '')}`
    case 'string': case 'concatenated string': case 'sliced string': return '(string)'
    case 'array': return `(array) ${name}`
    case 'code': return '(code)'
    case 'hidden': return `(system) ${name.replace(/\s.*$/, '').slice(0, 40)}`
    case 'object shape': return '(object shape)'
    default: return `(${type})`
  }
}

export function summarize(snap: Snapshot, top = 30): HeapSummary {
  const nf = snap.snapshot.meta.node_fields
  const ef = snap.snapshot.meta.edge_fields
  const nodeTypes = snap.snapshot.meta.node_types[0]
  const edgeTypes = snap.snapshot.meta.edge_types[0]
  const N = nf.length
  const E = ef.length
  const TYPE = nf.indexOf('type')
  const NAME = nf.indexOf('name')
  const SELF = nf.indexOf('self_size')
  const EDGES = nf.indexOf('edge_count')
  const ETYPE = ef.indexOf('type')
  const ETO = ef.indexOf('to_node')
  const WEAK = edgeTypes.indexOf('weak')
  const SHORTCUT = edgeTypes.indexOf('shortcut')
  const count = snap.nodes.length / N
  const nodes = snap.nodes
  const edges = snap.edges

  // Forward edges in CSR form (node ordinals), weak and shortcut edges left out.
  const firstEdge = new Uint32Array(count + 1)
  for (let i = 0, e = 0; i < count; i++) { firstEdge[i] = e; e += nodes[i * N + EDGES] * E }
  firstEdge[count] = edges.length
  const kept = new Uint8Array(edges.length / E)
  for (let k = 0; k < kept.length; k++) {
    const t = edges[k * E + ETYPE]
    kept[k] = t === WEAK || t === SHORTCUT ? 0 : 1
  }

  // Post order from the root (ordinal 0), iterative.
  const post = new Uint32Array(count)
  const order = new Int32Array(count).fill(-1)
  const stack = new Uint32Array(count)
  const cursor = new Uint32Array(count)
  let sp = 0
  let np = 0
  stack[sp++] = 0
  order[0] = -2
  cursor[0] = firstEdge[0]
  while (sp > 0) {
    const v = stack[sp - 1]
    let pushed = false
    while (cursor[v] < firstEdge[v + 1]) {
      const e = cursor[v]
      cursor[v] += E
      if (kept[e / E] === 0) continue
      const w = edges[e + ETO] / N
      if (order[w] !== -1) continue
      order[w] = -2
      cursor[w] = firstEdge[w]
      stack[sp++] = w
      pushed = true
      break
    }
    if (!pushed) { sp--; order[v] = np; post[np++] = v }
  }

  // Predecessors (reachable ones only), CSR.
  const predCount = new Uint32Array(count + 1)
  for (let v = 0; v < count; v++) {
    if (order[v] < 0) continue
    for (let e = firstEdge[v]; e < firstEdge[v + 1]; e += E) if (kept[e / E] === 1) predCount[edges[e + ETO] / N]++
  }
  const predStart = new Uint32Array(count + 1)
  for (let v = 0; v < count; v++) predStart[v + 1] = predStart[v] + predCount[v]
  const preds = new Uint32Array(predStart[count])
  const fill = predStart.slice(0, count)
  for (let v = 0; v < count; v++) {
    if (order[v] < 0) continue
    for (let e = firstEdge[v]; e < firstEdge[v + 1]; e += E) if (kept[e / E] === 1) preds[fill[edges[e + ETO] / N]++] = v
  }

  // Dominators (Cooper, Harvey, Kennedy), on post-order numbers.
  const UNDEF = 0xffffffff
  const idom = new Uint32Array(np).fill(UNDEF)
  const root = order[0]
  idom[root] = root
  for (let changed = true; changed;) {
    changed = false
    for (let i = np - 1; i >= 0; i--) {
      if (i === root) continue
      const v = post[i]
      let nd = UNDEF
      for (let p = predStart[v]; p < predStart[v + 1]; p++) {
        const u = order[preds[p]]
        if (u < 0 || idom[u] === UNDEF) continue
        if (nd === UNDEF) { nd = u; continue }
        let a = u
        let b = nd
        while (a !== b) {
          while (a < b) a = idom[a]
          while (b < a) b = idom[b]
        }
        nd = a
      }
      if (nd !== UNDEF && idom[i] !== nd) { idom[i] = nd; changed = true }
    }
  }

  // Retained sizes: children before their dominators in post order.
  const retained = new Float64Array(np)
  for (let i = 0; i < np; i++) retained[i] = nodes[post[i] * N + SELF]
  for (let i = 0; i < np; i++) if (i !== root) retained[idom[i]] += retained[i]

  const groupOf = new Array<string>(np)
  for (let i = 0; i < np; i++) {
    const v = post[i]
    groupOf[i] = groupName(nodeTypes[nodes[v * N + TYPE]], snap.strings[nodes[v * N + NAME]])
  }
  const byGroup = new Map<string, { count: number; self: number; retained: number; chains: Map<string, number> }>()
  for (let i = 0; i < np; i++) {
    const name = groupOf[i]
    let g = byGroup.get(name)
    if (g === undefined) { g = { count: 0, self: 0, retained: 0, chains: new Map() }; byGroup.set(name, g) }
    g.count++
    g.self += retained[i] === 0 ? 0 : nodes[post[i] * N + SELF]
    // Retained counted once per group: an object dominated by another of its own group is inside that one's size.
    let d = idom[i]
    let inside = false
    while (d !== root) { if (groupOf[d] === name) { inside = true; break } d = idom[d] }
    if (inside) continue
    g.retained += retained[i]
    const chain: string[] = []
    for (let a = idom[i]; a !== root && chain.length < 4; a = idom[a]) if (chain[chain.length - 1] !== groupOf[a]) chain.push(groupOf[a])
    const key = chain.join(' < ') || '(root)'
    g.chains.set(key, (g.chains.get(key) ?? 0) + retained[i])
  }
  byGroup.delete('(synthetic)')
  const groups = [...byGroup].map(([name, g]) => ({
    name,
    count: g.count,
    selfBytes: g.self,
    retainedBytes: g.retained,
    owners: [...g.chains].sort((a, b) => b[1] - a[1]).slice(0, 2).map(([chain, bytes]) => ({ chain, bytes }))
  }))
  groups.sort((a, b) => b.retainedBytes - a.retainedBytes)
  let total = 0
  for (let i = 0; i < np; i++) total += nodes[post[i] * N + SELF]
  // The largest objects that are not (system) / code / contexts, named by the edge from their dominator.
  const edgeName = (from: number, to: number): string => {
    for (let e = firstEdge[from]; e < firstEdge[from + 1]; e += E) {
      if (edges[e + ETO] / N !== to) continue
      const t = edgeTypes[edges[e + ETYPE]]
      const n = edges[e + ef.indexOf('name_or_index')]
      return t === 'element' || t === 'hidden' ? `[${n}]` : snap.strings[n]
    }
    return '?'
  }
  const big = [...retained.keys()].filter((i) => i !== root && !groupOf[i].startsWith('(') && !groupOf[i].startsWith('system'))
    .sort((a, b) => retained[b] - retained[a]).slice(0, 400)
  const objects = big.filter((i) => !big.some((j) => j !== i && dominates(j, i))).slice(0, top).map((i) => ({
    name: groupOf[i],
    retainedBytes: retained[i],
    heldBy: `${groupOf[idom[i]]}.${edgeName(post[idom[i]], post[i])}`
  }))
  function dominates(a: number, b: number): boolean {
    for (let d = idom[b]; d !== root; d = idom[d]) if (d === a) return true
    return false
  }
  return { totalBytes: total, nodes: np, groups: groups.slice(0, top), objects }
}

/** `s` less `base`, group by group (owners from `s`), largest retained difference first. */
export function subtract(s: HeapSummary, base: HeapSummary, top = 30): HeapSummary {
  const old = new Map(base.groups.map((g) => [g.name, g]))
  const groups = s.groups.map((g) => {
    const b = old.get(g.name)
    return { ...g, count: g.count - (b?.count ?? 0), selfBytes: g.selfBytes - (b?.selfBytes ?? 0), retainedBytes: g.retainedBytes - (b?.retainedBytes ?? 0) }
  })
  groups.sort((a, b) => b.retainedBytes - a.retainedBytes)
  return { totalBytes: s.totalBytes - base.totalBytes, nodes: s.nodes - base.nodes, groups: groups.slice(0, top), objects: [] }
}

export function formatHeap(s: HeapSummary, per?: number): string {
  const kb = (b: number): string => (b / 1024).toFixed(0)
  const each = (b: number): string => ` ${(b / per!).toFixed(0)} |`
  const lines = [
    `Heap: ${(s.totalBytes / 2 ** 20).toFixed(1)} MiB reachable in ${s.nodes.toLocaleString('en-US')} objects${per === undefined ? '' : `; ${(s.totalBytes / per).toFixed(0)} bytes each of ${per}`}`,
    '',
    `| group | objects | self KiB | retained KiB |${per === undefined ? '' : ' self B per | retained B per |'} held by (nearest first) |`,
    `|---|---:|---:|---:|${per === undefined ? '' : '---:|---:|'}---|`
  ]
  for (const g of s.groups) {
    const owners = g.owners.map((o) => `${o.chain} (${kb(o.bytes)})`).join('; ')
    lines.push(`| ${g.name.replace(/\|/g, '\\|')} | ${g.count.toLocaleString('en-US')} | ${kb(g.selfBytes)} | ${kb(g.retainedBytes)} |${per === undefined ? '' : `${each(g.selfBytes)}${each(g.retainedBytes)}`} ${owners.replace(/\|/g, '\\|')} |`)
  }
  if (s.objects.length > 0) {
    lines.push('', `| largest objects (none inside another) | retained KiB |${per === undefined ? '' : ' B per |'} held as |`, `|---|---:|${per === undefined ? '' : '---:|'}---|`)
    for (const o of s.objects) lines.push(`| ${o.name} | ${kb(o.retainedBytes)} |${per === undefined ? '' : each(o.retainedBytes)} ${o.heldBy.replace(/\|/g, '\\|')} |`)
  }
  return lines.join('\n')
}

interface AllocationNode {
  callFrame: { functionName: string; url: string; lineNumber: number }
  selfSize: number
  children: AllocationNode[]
}

/** Bytes sampled by allocating function, by nearest Naiad function on the stack, and by component. */
export function summarizeAllocations(head: AllocationNode, top = 30): string {
  const root = new URL('../', import.meta.url).href
  const ours = (url: string): boolean => url.includes('/src/') && !url.includes('/node_modules/') && !url.startsWith('node:')
  const by = { fn: new Map<string, number>(), naiad: new Map<string, number>(), component: new Map<string, number>() }
  const add = (m: Map<string, number>, k: string, b: number): void => { m.set(k, (m.get(k) ?? 0) + b) }
  let total = 0
  const walk = (n: AllocationNode, stack: AllocationNode[]): void => {
    stack.push(n)
    if (n.selfSize > 0) {
      total += n.selfSize
      const caller = stack[stack.length - 2]?.callFrame
      add(by.fn, label(n.callFrame, caller), n.selfSize)
      add(by.component, componentOf(n.callFrame, caller), n.selfSize)
      let k = stack.length - 1
      while (k >= 0 && !ours(stack[k].callFrame.url)) k--
      add(by.naiad, k < 0 ? '(none)' : label(stack[k].callFrame, undefined).replace(root, ''), n.selfSize)
    }
    for (const c of n.children) walk(c, stack)
    stack.pop()
  }
  walk(head, [])
  const table = (title: string, m: Map<string, number>): string[] => [
    '', `| ${title} | KiB | % |`, '|---|---:|---:|',
    ...[...m].sort((a, b) => b[1] - a[1]).slice(0, top).map(([k, b]) => `| ${k.replace(/\|/g, '\\|')} | ${(b / 1024).toFixed(0)} | ${((b / total) * 100).toFixed(1)} |`)
  ]
  return [`Sampled: ${(total / 2 ** 20).toFixed(1)} MiB`, ...table('allocated in', by.fn), ...table('nearest Naiad function', by.naiad), ...table('component', by.component)].join('\n')
}

if (import.meta.main) {
  const { values, positionals } = parseArgs({ allowPositionals: true, options: { top: { type: 'string', default: '30' }, per: { type: 'string' }, base: { type: 'string' } } })
  if (positionals.length !== 1) {
    process.stderr.write('usage: node bench/heap-summary.ts FILE.heapsnapshot [--top 30] [--per N] [--base OTHER.heapsnapshot]\n')
    process.exit(2)
  }
  if (positionals[0].endsWith('.heapprofile')) {
    process.stdout.write(`${summarizeAllocations((JSON.parse(await readFile(positionals[0], 'utf8')) as { head: AllocationNode }).head, Number(values.top))}\n`)
    process.exit(0)
  }
  const load = async (file: string): Promise<Snapshot> => JSON.parse(await readFile(file, 'utf8')) as Snapshot
  const top = Number(values.top)
  let summary = summarize(await load(positionals[0]), values.base === undefined ? top : Infinity)
  if (values.base !== undefined) summary = subtract(summary, summarize(await load(values.base), Infinity), top)
  process.stdout.write(`${formatHeap(summary, values.per === undefined ? undefined : Number(values.per))}\n`)
}
