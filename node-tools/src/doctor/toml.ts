// Just enough TOML for the runtime files the doctor reads: containerd's hosts.toml and
// containers-registries.conf. Tables (`[a."b.c"]`), arrays of tables (`[[registry]]`,
// `[[registry.mirror]]`), `key = value` with strings, numbers, booleans and (multi-line)
// arrays of those, and comments. Other values (inline tables, dates) are kept as raw text.

export type TomlValue = string | number | boolean | TomlValue[] | TomlTable
export interface TomlTable { [k: string]: TomlValue }

export class TomlError extends Error {
  readonly line: number

  constructor(line: number, why: string) {
    super(`line ${line}: ${why}`)
    this.line = line
  }
}

/** Splits a dotted key, honouring quoted segments: `host."http://a:1"` → ['host', 'http://a:1']. */
function splitKey(raw: string, line: number): string[] {
  const parts: string[] = []
  let i = 0
  const s = raw.trim()
  while (i < s.length) {
    while (s[i] === ' ' || s[i] === '\t') i++
    if (s[i] === '"' || s[i] === "'") {
      const q = s[i]
      const end = s.indexOf(q, i + 1)
      if (end < 0) throw new TomlError(line, `unterminated quoted key in "${raw}"`)
      parts.push(s.slice(i + 1, end))
      i = end + 1
    } else {
      const m = /^[A-Za-z0-9_-]+/.exec(s.slice(i))
      if (m === null) throw new TomlError(line, `bad key "${raw}"`)
      parts.push(m[0])
      i += m[0].length
    }
    while (s[i] === ' ' || s[i] === '\t') i++
    if (i < s.length) {
      if (s[i] !== '.') throw new TomlError(line, `bad key "${raw}"`)
      i++
    }
  }
  if (parts.length === 0) throw new TomlError(line, 'empty key')
  return parts
}

/** Removes a trailing comment that is not inside a string. */
function stripComment(s: string): string {
  let q: string | null = null
  for (let i = 0; i < s.length; i++) {
    const c = s[i]
    if (q !== null) {
      if (c === '\\' && q === '"') i++
      else if (c === q) q = null
    } else if (c === '"' || c === "'") {
      q = c
    } else if (c === '#') {
      return s.slice(0, i)
    }
  }
  return s
}

function parseValue(raw: string, line: number): TomlValue {
  const s = raw.trim()
  if (s.startsWith('"')) {
    if (!s.endsWith('"') || s.length < 2) throw new TomlError(line, `unterminated string ${s}`)
    try {
      return JSON.parse(s) as string
    } catch {
      return s.slice(1, -1)
    }
  }
  if (s.startsWith("'")) {
    if (!s.endsWith("'") || s.length < 2) throw new TomlError(line, `unterminated string ${s}`)
    return s.slice(1, -1)
  }
  if (s === 'true' || s === 'false') return s === 'true'
  if (/^[+-]?\d[\d_]*(\.\d+)?$/.test(s)) return Number(s.replace(/_/g, ''))
  if (s.startsWith('[')) {
    if (!s.endsWith(']')) throw new TomlError(line, 'unterminated array')
    const items: TomlValue[] = []
    let depth = 0
    let q: string | null = null
    let cur = ''
    for (const c of s.slice(1, -1)) {
      if (q !== null) {
        cur += c
        if (c === q) q = null
        continue
      }
      if (c === '"' || c === "'") q = c
      if (c === '[') depth++
      if (c === ']') depth--
      if (c === ',' && depth === 0) {
        if (cur.trim() !== '') items.push(parseValue(cur, line))
        cur = ''
        continue
      }
      cur += c
    }
    if (cur.trim() !== '') items.push(parseValue(cur, line))
    return items
  }
  if (s === '') throw new TomlError(line, 'missing value')
  return s
}

function bracketBalance(s: string): number {
  let n = 0
  let q: string | null = null
  for (const c of s) {
    if (q !== null) { if (c === q) q = null; continue }
    if (c === '"' || c === "'") q = c
    else if (c === '[') n++
    else if (c === ']') n--
  }
  return n
}

export function parseToml(text: string): TomlTable {
  const root: TomlTable = {}
  let current = root
  const lines = text.split(/\r?\n/)
  const descend = (path: string[], line: number, arrayLast: boolean): TomlTable => {
    let t = root
    path.forEach((k, idx) => {
      const last = idx === path.length - 1
      let next = t[k]
      if (last && arrayLast) {
        if (next === undefined) { next = []; t[k] = next }
        if (!Array.isArray(next)) throw new TomlError(line, `"${path.join('.')}" is not an array of tables`)
        const tbl: TomlTable = {}
        next.push(tbl)
        t = tbl
        return
      }
      if (next === undefined) { next = {}; t[k] = next }
      // `[registry.mirror]` after `[[registry]]` addresses the last registry.
      if (Array.isArray(next)) next = next[next.length - 1]
      if (next === null || typeof next !== 'object' || Array.isArray(next)) throw new TomlError(line, `"${k}" is not a table`)
      t = next
    })
    return t
  }
  for (let i = 0; i < lines.length; i++) {
    const lineNo = i + 1
    let s = stripComment(lines[i]).trim()
    if (s === '') continue
    if (s.startsWith('[[')) {
      if (!s.endsWith(']]')) throw new TomlError(lineNo, `bad table header ${s}`)
      current = descend(splitKey(s.slice(2, -2), lineNo), lineNo, true)
      continue
    }
    if (s.startsWith('[')) {
      if (!s.endsWith(']')) throw new TomlError(lineNo, `bad table header ${s}`)
      current = descend(splitKey(s.slice(1, -1), lineNo), lineNo, false)
      continue
    }
    const eq = s.search(/=(?=(?:[^"']|"[^"]*"|'[^']*')*$)/)
    if (eq <= 0) throw new TomlError(lineNo, `expected key = value, got "${s}"`)
    // A multi-line array continues until its brackets balance.
    while (bracketBalance(s) > 0 && i + 1 < lines.length) {
      i++
      s += ` ${stripComment(lines[i]).trim()}`
    }
    const key = splitKey(s.slice(0, eq), lineNo)
    const value = parseValue(s.slice(eq + 1), lineNo)
    let t = current
    for (const k of key.slice(0, -1)) {
      let n = t[k]
      if (n === undefined) { n = {}; t[k] = n }
      if (typeof n !== 'object' || Array.isArray(n)) throw new TomlError(lineNo, `"${k}" is not a table`)
      t = n
    }
    t[key[key.length - 1]] = value
  }
  return root
}
