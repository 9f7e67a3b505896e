// Rule conditions: a tiny expression language over a host's facts, parsed by hand (never
// eval'd) and type-checked against the known facts when the config is read, so a typo in a
// rule stops the supernode at start-up instead of silently never firing.
//
//   condition  := or
//   or         := and (("or" | "||") and)*
//   and        := not (("and" | "&&") not)*
//   not        := ("not" | "!") not | comparison
//   comparison := operand (("<" | "<=" | ">" | ">=" | "==" | "!=") operand)?
//   operand    := number | "true" | "false" | fact | "(" or ")"
//   number     := "-"? digits ("." digits)? (e[+-]digits)? (KiB | MiB | GiB | TiB | KB | MB | GB | TB | ms | s | m | h)?
//
// A condition that names a fact the host has not reported is false (unknown is not unhealthy).

export type FactType = 'number' | 'boolean'
export type FactValue = number | boolean
type CmpOp = '<' | '<=' | '>' | '>=' | '==' | '!='

type Node =
  | { kind: 'literal'; value: FactValue }
  | { kind: 'fact'; name: string }
  | { kind: 'not'; arg: Node }
  | { kind: 'and' | 'or'; left: Node; right: Node }
  | { kind: 'cmp'; op: CmpOp; left: Node; right: Node }

export interface Condition {
  readonly source: string
  /** The facts the condition reads. */
  readonly facts: readonly string[]
  /** True when the condition holds; false when it does not or a fact it reads is missing. */
  test(facts: Readonly<Record<string, FactValue | undefined>>): boolean
}

export class ConditionError extends Error {
  override readonly name = 'ConditionError'
  readonly position: number

  constructor(message: string, position: number) {
    super(`${message} at column ${position + 1}`)
    this.position = position
  }
}

const UNITS: Record<string, number> = {
  KiB: 2 ** 10, MiB: 2 ** 20, GiB: 2 ** 30, TiB: 2 ** 40, KB: 1e3, MB: 1e6, GB: 1e9, TB: 1e12,
  ms: 1, s: 1000, m: 60_000, h: 3_600_000
}
const MAX_LENGTH = 2000
const MAX_DEPTH = 64

interface Token {
  kind: 'num' | 'ident' | 'op' | 'lparen' | 'rparen' | 'end'
  text: string
  value?: number
  pos: number
}

const TOKEN = /\s*(?:(\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)(KiB|MiB|GiB|TiB|KB|MB|GB|TB|ms|s|m|h)?(?![A-Za-z0-9_])|([A-Za-z_][A-Za-z0-9_]*)|(<=|>=|==|!=|&&|\|\||<|>|!|-)|(\()|(\)))/y

function tokenize(src: string): Token[] {
  const out: Token[] = []
  let pos = 0
  while (true) {
    while (pos < src.length && /\s/.test(src[pos])) pos++
    if (pos >= src.length) break
    TOKEN.lastIndex = pos
    const m = TOKEN.exec(src)
    if (m === null) throw new ConditionError(`unexpected "${src[pos]}"`, pos)
    const start = pos + (m[0].length - m[0].trimStart().length)
    if (m[1] !== undefined) out.push({ kind: 'num', text: m[0].trim(), value: Number(m[1]) * (m[2] === undefined ? 1 : UNITS[m[2]]), pos: start })
    else if (m[3] !== undefined) out.push({ kind: 'ident', text: m[3], pos: start })
    else if (m[4] !== undefined) out.push({ kind: 'op', text: m[4], pos: start })
    else if (m[5] !== undefined) out.push({ kind: 'lparen', text: '(', pos: start })
    else out.push({ kind: 'rparen', text: ')', pos: start })
    pos = TOKEN.lastIndex
  }
  out.push({ kind: 'end', text: 'end of condition', pos: src.length })
  return out
}

class Parser {
  private i = 0
  private depth = 0
  private readonly tokens: Token[]
  private readonly types: Readonly<Record<string, FactType>>
  readonly used = new Set<string>()

  constructor(tokens: Token[], types: Readonly<Record<string, FactType>>) {
    this.tokens = tokens
    this.types = types
  }

  private peek(): Token {
    return this.tokens[this.i]
  }

  private next(): Token {
    return this.tokens[this.i++]
  }

  private isWord(t: Token, ...words: string[]): boolean {
    return (t.kind === 'ident' || t.kind === 'op') && words.includes(t.text)
  }

  parse(): Node {
    const node = this.or()
    const t = this.peek()
    if (t.kind !== 'end') throw new ConditionError(`unexpected "${t.text}"`, t.pos)
    this.expect(node, 'boolean', 0)
    return node
  }

  private or(): Node {
    let left = this.and()
    while (this.isWord(this.peek(), 'or', '||')) {
      const t = this.next()
      const right = this.and()
      this.expect(left, 'boolean', t.pos)
      this.expect(right, 'boolean', t.pos)
      left = { kind: 'or', left, right }
    }
    return left
  }

  private and(): Node {
    let left = this.not()
    while (this.isWord(this.peek(), 'and', '&&')) {
      const t = this.next()
      const right = this.not()
      this.expect(left, 'boolean', t.pos)
      this.expect(right, 'boolean', t.pos)
      left = { kind: 'and', left, right }
    }
    return left
  }

  private not(): Node {
    if (this.isWord(this.peek(), 'not', '!')) {
      const t = this.next()
      if (++this.depth > MAX_DEPTH) throw new ConditionError('condition nested too deeply', t.pos)
      const arg = this.not()
      this.depth--
      this.expect(arg, 'boolean', t.pos)
      return { kind: 'not', arg }
    }
    return this.comparison()
  }

  private comparison(): Node {
    const left = this.operand()
    const t = this.peek()
    if (t.kind !== 'op' || !['<', '<=', '>', '>=', '==', '!='].includes(t.text)) return left
    this.next()
    const right = this.operand()
    const op = t.text as CmpOp
    if (op === '==' || op === '!=') {
      if (this.typeOf(left) !== this.typeOf(right)) throw new ConditionError(`"${op}" compares a ${this.typeOf(left)} with a ${this.typeOf(right)}`, t.pos)
    } else {
      this.expect(left, 'number', t.pos)
      this.expect(right, 'number', t.pos)
    }
    return { kind: 'cmp', op, left, right }
  }

  private operand(): Node {
    const t = this.next()
    if (t.kind === 'num') return { kind: 'literal', value: t.value! }
    if (t.kind === 'op' && t.text === '-') {
      const n = this.next()
      if (n.kind !== 'num') throw new ConditionError('"-" must be followed by a number', t.pos)
      return { kind: 'literal', value: -n.value! }
    }
    if (t.kind === 'lparen') {
      if (++this.depth > MAX_DEPTH) throw new ConditionError('condition nested too deeply', t.pos)
      const inner = this.or()
      this.depth--
      const close = this.next()
      if (close.kind !== 'rparen') throw new ConditionError(`expected ")" but found "${close.text}"`, close.pos)
      return inner
    }
    if (t.kind === 'ident') {
      if (t.text === 'true' || t.text === 'false') return { kind: 'literal', value: t.text === 'true' }
      if (['and', 'or', 'not'].includes(t.text)) throw new ConditionError(`"${t.text}" needs an operand before it`, t.pos)
      if (!Object.hasOwn(this.types, t.text)) {
        throw new ConditionError(`unknown fact "${t.text}" (known: ${Object.keys(this.types).join(', ')})`, t.pos)
      }
      this.used.add(t.text)
      return { kind: 'fact', name: t.text }
    }
    throw new ConditionError(t.kind === 'end' ? 'the condition ends too early' : `unexpected "${t.text}"`, t.pos)
  }

  private typeOf(n: Node): FactType {
    switch (n.kind) {
      case 'literal': return typeof n.value === 'boolean' ? 'boolean' : 'number'
      case 'fact': return this.types[n.name]
      default: return 'boolean'
    }
  }

  private expect(n: Node, type: FactType, pos: number): void {
    const got = this.typeOf(n)
    if (got !== type) throw new ConditionError(`expected a ${type} but ${n.kind === 'fact' ? `fact "${n.name}"` : 'this'} is a ${got}`, pos)
  }
}

function evaluate(n: Node, facts: Readonly<Record<string, FactValue | undefined>>): FactValue {
  switch (n.kind) {
    case 'literal': return n.value
    case 'fact': return facts[n.name]!
    case 'not': return !evaluate(n.arg, facts)
    case 'and': return evaluate(n.left, facts) === true && evaluate(n.right, facts) === true
    case 'or': return evaluate(n.left, facts) === true || evaluate(n.right, facts) === true
    case 'cmp': {
      const a = evaluate(n.left, facts)
      const b = evaluate(n.right, facts)
      switch (n.op) {
        case '==': return a === b
        case '!=': return a !== b
        case '<': return a < b
        case '<=': return a <= b
        case '>': return a > b
        case '>=': return a >= b
      }
    }
  }
}

/** Parses and type-checks `source` against the facts and their types; throws ConditionError. */
export function parseCondition(source: string, types: Readonly<Record<string, FactType>>): Condition {
  if (source.length > MAX_LENGTH) throw new ConditionError(`condition longer than ${MAX_LENGTH} characters`, MAX_LENGTH)
  const parser = new Parser(tokenize(source), types)
  const root = parser.parse()
  const used = [...parser.used]
  return {
    source,
    facts: used,
    test(facts) {
      for (const name of used) if (typeof facts[name] !== types[name]) return false
      return evaluate(root, facts) === true
    }
  }
}
