// The doctor's query language: select facts, compare, explain. A query is parsed into a
// small AST and evaluated by walking it; nothing is ever handed to `eval` or `Function`,
// and only the functions in FUNCTIONS can be called. Grammar and examples: docs/doctor.md.
//
//   query    := 'select' path ['where' expr] '|' 'expect' expr
//             | ['expect'] expr
//   expr     := and ('or' and)*
//   and      := not ('and' not)*
//   not      := 'not' not | compare
//   compare  := sum [('=='|'='|'!='|'<'|'<='|'>'|'>='|'in'|'contains'|'matches') sum]
//   sum      := product (('+'|'-') product)*
//   product  := unary (('*'|'/') unary)*
//   unary    := '-' unary | primary
//   primary  := NUMBER[unit] | STRING | 'true' | 'false' | 'null' | '[' [expr (',' expr)*] ']'
//             | IDENT '(' [expr (',' expr)*] ')' | path | '(' expr ')'
//   path     := ('it' | IDENT) ('.' IDENT | '[' NUMBER ']')*

import { NaiadError } from '@naiad/proto/contracts'

export type Value = null | boolean | number | string | Value[] | { [k: string]: Value }

export type Node =
  | { kind: 'lit'; value: Value; pos: number }
  | { kind: 'list'; items: Node[]; pos: number }
  | { kind: 'path'; root: string; parts: Array<string | number>; text: string; pos: number }
  | { kind: 'call'; name: string; args: Node[]; pos: number }
  | { kind: 'unary'; op: 'not' | '-'; arg: Node; pos: number }
  | { kind: 'binary'; op: string; left: Node; right: Node; pos: number }

export interface Query {
  source: string
  /** The facts to iterate; undefined checks the root facts once. */
  select?: Extract<Node, { kind: 'path' }>
  where?: Node
  expect: Node
}

/** A query that does not parse: `pos` is the 1-based column of the offending token. */
export class QueryError extends NaiadError {
  readonly pos: number

  constructor(source: string, pos: number, why: string) {
    super('DFD_ERR_DOCTOR_RULE', `${why} at column ${pos + 1}\n  ${source}\n  ${' '.repeat(pos)}^`)
    this.pos = pos + 1
  }
}

type TokKind = 'num' | 'str' | 'ident' | 'op' | 'end'
interface Token { kind: TokKind; text: string; value?: Value; pos: number }

const UNITS: Record<string, number> = {
  b: 1, kb: 1e3, mb: 1e6, gb: 1e9, tb: 1e12, kib: 2 ** 10, mib: 2 ** 20, gib: 2 ** 30, tib: 2 ** 40,
  ms: 1, s: 1000, m: 60_000, h: 3_600_000
}
const KEYWORDS = new Set(['select', 'where', 'expect', 'and', 'or', 'not', 'in', 'contains', 'matches', 'true', 'false', 'null'])
const OPS = ['==', '!=', '<=', '>=', '<', '>', '=', '(', ')', '[', ']', ',', '.', '|', '+', '-', '*', '/']
const MAX_QUERY = 4096

function tokenize(src: string): Token[] {
  const out: Token[] = []
  let i = 0
  while (i < src.length) {
    const c = src[i]
    if (/\s/.test(c)) { i++; continue }
    const start = i
    if (/[0-9]/.test(c)) {
      const m = /^(\d+(?:\.\d+)?)([a-zA-Z]*)/.exec(src.slice(i))!
      let n = Number(m[1])
      if (m[2] !== '') {
        const mul = UNITS[m[2].toLowerCase()]
        if (mul === undefined) throw new QueryError(src, i + m[1].length, `unknown unit "${m[2]}" (sizes: B, KiB, MiB, GiB, TiB, KB, MB, GB, TB; durations: ms, s, m, h)`)
        n *= mul
      }
      i += m[0].length
      out.push({ kind: 'num', text: m[0], value: n, pos: start })
      continue
    }
    if (c === '"' || c === "'") {
      let s = ''
      i++
      while (i < src.length && src[i] !== c) {
        if (src[i] === '\\' && i + 1 < src.length) {
          const e = src[i + 1]
          s += e === 'n' ? '\n' : e === 't' ? '\t' : e
          i += 2
        } else {
          s += src[i++]
        }
      }
      if (i >= src.length) throw new QueryError(src, start, 'unterminated string')
      i++
      out.push({ kind: 'str', text: src.slice(start, i), value: s, pos: start })
      continue
    }
    if (/[A-Za-z_$]/.test(c)) {
      const m = /^[A-Za-z_$][A-Za-z0-9_]*/.exec(src.slice(i))!
      i += m[0].length
      out.push({ kind: 'ident', text: m[0], pos: start })
      continue
    }
    const op = OPS.find((o) => src.startsWith(o, i))
    if (op === undefined) throw new QueryError(src, i, `unexpected character "${c}"`)
    i += op.length
    out.push({ kind: 'op', text: op, pos: start })
  }
  out.push({ kind: 'end', text: 'end of query', pos: src.length })
  return out
}

class Parser {
  private i = 0
  private readonly toks: Token[]
  private readonly src: string

  constructor(src: string) {
    this.src = src
    this.toks = tokenize(src)
  }

  private peek(): Token { return this.toks[this.i] }
  private next(): Token { return this.toks[this.i++] }
  private isKw(t: Token, kw: string): boolean { return t.kind === 'ident' && t.text === kw }
  private isOp(t: Token, op: string): boolean { return t.kind === 'op' && t.text === op }
  private fail(t: Token, want: string): never {
    throw new QueryError(this.src, t.pos, `expected ${want} but found ${t.kind === 'end' ? 'the end of the query' : `"${t.text}"`}`)
  }

  private expectOp(op: string): Token {
    const t = this.next()
    if (!this.isOp(t, op)) this.fail(t, `"${op}"`)
    return t
  }

  query(): Query {
    const first = this.peek()
    let select: Query['select']
    let where: Node | undefined
    if (this.isKw(first, 'select')) {
      this.next()
      const p = this.peek()
      if (p.kind !== 'ident' || (KEYWORDS.has(p.text))) this.fail(p, 'a fact path after "select"')
      select = this.path()
      if (this.isKw(this.peek(), 'where')) {
        this.next()
        where = this.expr()
      }
      const bar = this.peek()
      if (!this.isOp(bar, '|')) this.fail(bar, where === undefined ? '"where" or "| expect"' : '"| expect"')
      this.next()
      if (!this.isKw(this.peek(), 'expect')) this.fail(this.peek(), '"expect" after "|"')
    }
    if (this.isKw(this.peek(), 'expect')) this.next()
    const expect = this.expr()
    const end = this.peek()
    if (end.kind !== 'end') this.fail(end, 'an operator or the end of the query')
    return { source: this.src, select, where, expect }
  }

  expr(): Node {
    let left = this.and()
    while (this.isKw(this.peek(), 'or')) {
      const t = this.next()
      left = { kind: 'binary', op: 'or', left, right: this.and(), pos: t.pos }
    }
    return left
  }

  private and(): Node {
    let left = this.not()
    while (this.isKw(this.peek(), 'and')) {
      const t = this.next()
      left = { kind: 'binary', op: 'and', left, right: this.not(), pos: t.pos }
    }
    return left
  }

  private not(): Node {
    const t = this.peek()
    if (this.isKw(t, 'not')) {
      this.next()
      return { kind: 'unary', op: 'not', arg: this.not(), pos: t.pos }
    }
    return this.compare()
  }

  private compare(): Node {
    const left = this.sum()
    const t = this.peek()
    const ops = ['==', '=', '!=', '<', '<=', '>', '>=']
    if ((t.kind === 'op' && ops.includes(t.text)) || this.isKw(t, 'in') || this.isKw(t, 'contains') || this.isKw(t, 'matches')) {
      this.next()
      const right = this.sum()
      const after = this.peek()
      if ((after.kind === 'op' && ops.includes(after.text)) || this.isKw(after, 'in') || this.isKw(after, 'contains') || this.isKw(after, 'matches')) {
        throw new QueryError(this.src, after.pos, `comparisons do not chain: put "and" between "${t.text}" and "${after.text}"`)
      }
      if (t.text === 'matches' && right.kind === 'lit' && typeof right.value === 'string') {
        try { new RegExp(right.value) } catch (err) { throw new QueryError(this.src, right.pos, `bad regular expression: ${(err as Error).message}`) }
      }
      return { kind: 'binary', op: t.text === '=' ? '==' : t.text, left, right, pos: t.pos }
    }
    return left
  }

  private sum(): Node {
    let left = this.product()
    while (this.isOp(this.peek(), '+') || this.isOp(this.peek(), '-')) {
      const t = this.next()
      left = { kind: 'binary', op: t.text, left, right: this.product(), pos: t.pos }
    }
    return left
  }

  private product(): Node {
    let left = this.unary()
    while (this.isOp(this.peek(), '*') || this.isOp(this.peek(), '/')) {
      const t = this.next()
      left = { kind: 'binary', op: t.text, left, right: this.unary(), pos: t.pos }
    }
    return left
  }

  private unary(): Node {
    const t = this.peek()
    if (this.isOp(t, '-')) {
      this.next()
      return { kind: 'unary', op: '-', arg: this.unary(), pos: t.pos }
    }
    return this.primary()
  }

  private primary(): Node {
    const t = this.peek()
    if (t.kind === 'num' || t.kind === 'str') {
      this.next()
      return { kind: 'lit', value: t.value!, pos: t.pos }
    }
    if (this.isOp(t, '(')) {
      this.next()
      const e = this.expr()
      this.expectOp(')')
      return e
    }
    if (this.isOp(t, '[')) {
      this.next()
      const items: Node[] = []
      if (!this.isOp(this.peek(), ']')) {
        items.push(this.expr())
        while (this.isOp(this.peek(), ',')) { this.next(); items.push(this.expr()) }
      }
      const close = this.next()
      if (!this.isOp(close, ']')) this.fail(close, '"," or "]"')
      return { kind: 'list', items, pos: t.pos }
    }
    if (t.kind === 'ident') {
      if (t.text === 'true' || t.text === 'false') { this.next(); return { kind: 'lit', value: t.text === 'true', pos: t.pos } }
      if (t.text === 'null') { this.next(); return { kind: 'lit', value: null, pos: t.pos } }
      if (KEYWORDS.has(t.text)) this.fail(t, 'a value')
      if (this.isOp(this.toks[this.i + 1], '(')) {
        this.next()
        this.next()
        const fn = FUNCTIONS[t.text]
        if (fn === undefined) throw new QueryError(this.src, t.pos, `unknown function "${t.text}" (known: ${Object.keys(FUNCTIONS).join(', ')})`)
        const args: Node[] = []
        if (!this.isOp(this.peek(), ')')) {
          args.push(this.expr())
          while (this.isOp(this.peek(), ',')) { this.next(); args.push(this.expr()) }
        }
        const close = this.next()
        if (!this.isOp(close, ')')) this.fail(close, '"," or ")"')
        if (args.length < fn.min || args.length > fn.max) {
          throw new QueryError(this.src, t.pos, `${t.text}() takes ${fn.min === fn.max ? fn.min : `${fn.min} to ${fn.max}`} argument(s), got ${args.length}`)
        }
        return { kind: 'call', name: t.text, args, pos: t.pos }
      }
      return this.path()
    }
    return this.fail(t, 'a value, a fact path or "("')
  }

  path(): Extract<Node, { kind: 'path' }> {
    const t = this.next()
    const parts: Array<string | number> = []
    let end = t.pos + t.text.length
    for (;;) {
      const p = this.peek()
      if (this.isOp(p, '.')) {
        this.next()
        const name = this.next()
        if (name.kind !== 'ident') this.fail(name, 'a field name after "."')
        parts.push(name.text)
        end = name.pos + name.text.length
      } else if (this.isOp(p, '[')) {
        this.next()
        const n = this.next()
        if (n.kind !== 'num' || !Number.isInteger(n.value)) this.fail(n, 'a whole number index')
        const close = this.expectOp(']')
        parts.push(n.value as number)
        end = close.pos + 1
      } else {
        break
      }
    }
    return { kind: 'path', root: t.text, parts, text: this.src.slice(t.pos, end), pos: t.pos }
  }
}

/** Parses a query; throws QueryError (code DFD_ERR_DOCTOR_RULE) naming the column. */
export function parseQuery(source: string): Query {
  if (source.length > MAX_QUERY) throw new QueryError(source.slice(0, 40), 0, `query longer than ${MAX_QUERY} characters`)
  return new Parser(source).query()
}

/** Parses a bare fact path (`daemon.proxyUrl`, `hosts[0].file`), as used in message templates. */
export function parsePath(source: string): Extract<Node, { kind: 'path' }> {
  const p = new Parser(source)
  const node = p.expr()
  if (node.kind !== 'path') throw new QueryError(source, 0, 'expected a fact path')
  return node
}

// ---- evaluation ------------------------------------------------------------------------

/** Where names resolve: the selected item first (and as `it`), then the root facts. */
export interface Scope {
  root: Value
  item?: Value
}

const isObj = (v: Value): v is { [k: string]: Value } => v !== null && typeof v === 'object' && !Array.isArray(v)

export function truthy(v: Value): boolean {
  if (Array.isArray(v)) return v.length > 0
  return v !== null && v !== false && v !== 0 && v !== ''
}

function equal(a: Value, b: Value): boolean {
  if (Array.isArray(a) && Array.isArray(b)) return a.length === b.length && a.every((x, i) => equal(x, b[i]))
  if (isObj(a) && isObj(b)) {
    const ka = Object.keys(a)
    return ka.length === Object.keys(b).length && ka.every((k) => equal(a[k], b[k] ?? null))
  }
  return a === b
}

const str = (v: Value): string => typeof v === 'string' ? v : JSON.stringify(v)
const num = (v: Value): number | null => typeof v === 'number' ? v : null

const FUNCTIONS: Record<string, { min: number; max: number; fn: (args: Value[]) => Value }> = {
  len: { min: 1, max: 1, fn: ([v]) => Array.isArray(v) || typeof v === 'string' ? v.length : isObj(v) ? Object.keys(v).length : 0 },
  abs: { min: 1, max: 1, fn: ([v]) => num(v) === null ? null : Math.abs(v as number) },
  min: { min: 1, max: 16, fn: (a) => { const ns = a.flat().map(num).filter((n) => n !== null); return ns.length === 0 ? null : Math.min(...ns) } },
  max: { min: 1, max: 16, fn: (a) => { const ns = a.flat().map(num).filter((n) => n !== null); return ns.length === 0 ? null : Math.max(...ns) } },
  lower: { min: 1, max: 1, fn: ([v]) => typeof v === 'string' ? v.toLowerCase() : v },
  upper: { min: 1, max: 1, fn: ([v]) => typeof v === 'string' ? v.toUpperCase() : v },
  exists: { min: 1, max: 1, fn: ([v]) => v !== null },
  startsWith: { min: 2, max: 2, fn: ([s, p]) => typeof s === 'string' && typeof p === 'string' && s.startsWith(p) },
  endsWith: { min: 2, max: 2, fn: ([s, p]) => typeof s === 'string' && typeof p === 'string' && s.endsWith(p) },
  /** True when the two lists share an element. */
  overlaps: { min: 2, max: 2, fn: ([a, b]) => Array.isArray(a) && Array.isArray(b) && a.some((x) => b.some((y) => equal(x, y))) },
  /** The first element of a list, or null. */
  first: { min: 1, max: 1, fn: ([v]) => Array.isArray(v) && v.length > 0 ? v[0] : null }
}

export function lookup(node: Extract<Node, { kind: 'path' }>, scope: Scope): Value {
  let v: Value
  if (node.root === 'it') v = scope.item ?? null
  else if (scope.item !== undefined && isObj(scope.item) && Object.hasOwn(scope.item, node.root)) v = scope.item[node.root]
  else v = isObj(scope.root) && Object.hasOwn(scope.root, node.root) ? scope.root[node.root] : null
  for (const part of node.parts) {
    if (typeof part === 'number') v = Array.isArray(v) ? v[part] ?? null : null
    else v = isObj(v) && Object.hasOwn(v, part) ? v[part] : null
  }
  return v ?? null
}

export function evaluate(node: Node, scope: Scope): Value {
  switch (node.kind) {
    case 'lit': return node.value
    case 'list': return node.items.map((n) => evaluate(n, scope))
    case 'path': return lookup(node, scope)
    case 'call': return FUNCTIONS[node.name].fn(node.args.map((n) => evaluate(n, scope)))
    case 'unary': {
      const v = evaluate(node.arg, scope)
      if (node.op === 'not') return !truthy(v)
      return num(v) === null ? null : -(v as number)
    }
    case 'binary': {
      if (node.op === 'and') return truthy(evaluate(node.left, scope)) && truthy(evaluate(node.right, scope))
      if (node.op === 'or') return truthy(evaluate(node.left, scope)) || truthy(evaluate(node.right, scope))
      const a = evaluate(node.left, scope)
      const b = evaluate(node.right, scope)
      switch (node.op) {
        case '==': return equal(a, b)
        case '!=': return !equal(a, b)
        case '<': case '<=': case '>': case '>=': {
          // An unknown (null) or mismatched side never satisfies an ordering.
          if (!((typeof a === 'number' && typeof b === 'number') || (typeof a === 'string' && typeof b === 'string'))) return false
          return node.op === '<' ? a < b : node.op === '<=' ? a <= b : node.op === '>' ? a > b : a >= b
        }
        case 'in': return Array.isArray(b) ? b.some((x) => equal(a, x)) : typeof b === 'string' && typeof a === 'string' && b.includes(a)
        case 'contains': return Array.isArray(a) ? a.some((x) => equal(x, b)) : typeof a === 'string' && typeof b === 'string' && a.includes(b)
        case 'matches': return typeof a === 'string' && typeof b === 'string' && safeRegExp(b).test(a)
        case '+':
          if (typeof a === 'number' && typeof b === 'number') return a + b
          if (typeof a === 'string' || typeof b === 'string') return `${a === null ? '' : str(a)}${b === null ? '' : str(b)}`
          return null
        case '-': case '*': case '/': {
          if (typeof a !== 'number' || typeof b !== 'number') return null
          if (node.op === '-') return a - b
          if (node.op === '*') return a * b
          return b === 0 ? null : a / b
        }
      }
      return null
    }
  }
}

const regexCache = new Map<string, RegExp>()
function safeRegExp(src: string): RegExp {
  let re = regexCache.get(src)
  if (re === undefined) {
    try { re = new RegExp(src) } catch { re = /(?!)/ }
    if (regexCache.size < 256) regexCache.set(src, re)
  }
  return re
}

/** The fact paths an expression reads, with their values: the "what was found" of a finding. */
export function explain(node: Node, scope: Scope): Record<string, Value> {
  const out: Record<string, Value> = {}
  const walk = (n: Node): void => {
    switch (n.kind) {
      case 'path': out[n.text] = lookup(n, scope); break
      case 'list': n.items.forEach(walk); break
      case 'call': n.args.forEach(walk); break
      case 'unary': walk(n.arg); break
      case 'binary': walk(n.left); walk(n.right); break
      default: break
    }
  }
  walk(node)
  return out
}

/** Fills `{path}` placeholders in a message from the scope; unknown paths print as-is. */
export function interpolate(template: string, scope: Scope): string {
  return template.replace(/\{([A-Za-z_$][A-Za-z0-9_.[\]]*)\}/g, (whole, path: string) => {
    try {
      // An absent fact reads as "-" so a message never shows a raw placeholder.
      const v = lookup(parsePath(path), scope)
      return v === null ? '-' : str(v)
    } catch {
      return whole
    }
  })
}

export function formatValue(v: Value): string {
  return str(v)
}
