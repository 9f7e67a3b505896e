// Doctor rules: loaded from YAML (the built-in file, then the user's, which may replace or
// disable a built-in rule by its id) and evaluated over the collected facts.

import { readFile } from 'node:fs/promises'

import { parse as parseYaml } from 'yaml'
import { NaiadError } from '@naiad/proto/contracts'

import { evaluate, explain, formatValue, interpolate, parseQuery, truthy, type Query, type Scope, type Value } from './query.ts'

export type Severity = 'error' | 'warning' | 'info'
export type Status = 'ok' | 'fail' | 'warn' | 'info'

export interface Rule {
  id: string
  severity: Severity
  query: Query
  /** One line saying what the rule checks. */
  title: string
  why: string
  fix: string
  /** Optional template for what was found; the default lists the facts the expectation read. */
  found?: string
  /** Outcome when `select … where …` matches nothing. */
  whenEmpty: 'ok' | 'fail'
  origin: string
}

export interface Finding {
  rule: string
  severity: Severity
  /** What was found, in words. */
  found: string
  /** The facts behind it: the values the expectation read, and the selected item. */
  facts: Record<string, Value>
  why: string
  fix: string
}

export interface RuleResult {
  rule: string
  severity: Severity
  status: Status
  title: string
  /** Facts the rule looked at (items selected). */
  checked: number
  findings: Finding[]
}

export interface DoctorReport {
  version: 1
  generatedAt: string
  node: { hostname: string; peerId?: string }
  summary: { ok: number; warn: number; fail: number; info: number }
  results: RuleResult[]
}

const SEVERITIES = ['error', 'warning', 'info']
const ID = /^[a-z0-9][a-z0-9._-]{0,63}$/

function bad(origin: string, why: string, cause?: unknown): NaiadError {
  return new NaiadError('DFD_ERR_DOCTOR_RULE', `${origin}: ${why}`, { cause })
}

/** Validates rule documents (`{ rules: [...] }` or a bare list); `origin` names the file in errors. */
export function rulesFromDocument(doc: unknown, origin: string): Array<Rule | { id: string; disabled: true; origin: string }> {
  const list = Array.isArray(doc) ? doc : (doc as { rules?: unknown } | null)?.rules
  if (!Array.isArray(list)) throw bad(origin, 'expected a list of rules under "rules:"')
  const seen = new Set<string>()
  return list.map((raw: unknown, i) => {
    const where = `${origin}: rule ${i + 1}`
    if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw bad(where, 'expected a mapping')
    const r = raw as Record<string, unknown>
    const known = ['id', 'severity', 'query', 'title', 'why', 'fix', 'found', 'when-empty', 'disabled']
    const unknown = Object.keys(r).find((k) => !known.includes(k))
    if (unknown !== undefined) throw bad(where, `unknown key "${unknown}" (known: ${known.join(', ')})`)
    if (typeof r.id !== 'string' || !ID.test(r.id)) throw bad(where, 'id must be lower-case letters, digits, ".", "_" or "-"')
    const w = `${origin}: rule ${r.id}`
    if (seen.has(r.id)) throw bad(w, 'duplicate id')
    seen.add(r.id)
    if (r.disabled === true) return { id: r.id, disabled: true as const, origin }
    const severity = r.severity ?? 'error'
    if (typeof severity !== 'string' || !SEVERITIES.includes(severity)) throw bad(w, `severity must be one of ${SEVERITIES.join(', ')}`)
    for (const k of ['query', 'why', 'fix']) {
      if (typeof r[k] !== 'string' || (r[k] as string).trim() === '') throw bad(w, `"${k}" is required (a string)`)
    }
    for (const k of ['title', 'found']) {
      if (r[k] !== undefined && typeof r[k] !== 'string') throw bad(w, `"${k}" must be a string`)
    }
    const whenEmpty = r['when-empty'] ?? 'ok'
    if (whenEmpty !== 'ok' && whenEmpty !== 'fail') throw bad(w, '"when-empty" must be ok or fail')
    let query: Query
    try {
      query = parseQuery((r.query as string).trim())
    } catch (err) {
      throw bad(w, `query: ${(err as Error).message}`, err)
    }
    return {
      id: r.id, severity: severity as Severity, query, title: (r.title as string | undefined) ?? r.id,
      why: (r.why as string).trim(), fix: (r.fix as string).trim(), found: r.found as string | undefined,
      whenEmpty, origin
    }
  })
}

export async function loadRulesFile(file: string): Promise<ReturnType<typeof rulesFromDocument>> {
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (err) {
    throw bad(file, `cannot read rules file: ${(err as Error).message}`, err)
  }
  let doc: unknown
  try {
    doc = parseYaml(text)
  } catch (err) {
    throw bad(file, `not valid YAML: ${(err as Error).message}`, err)
  }
  return rulesFromDocument(doc, file)
}

export const BUILTIN_RULES_FILE = new URL('./builtin-rules.yaml', import.meta.url).pathname

/** Built-in rules, then each user file in order: a rule with an existing id replaces it, `disabled: true` removes it. */
export async function loadRules(userFiles: string[]): Promise<Rule[]> {
  const rules = new Map<string, Rule>()
  for (const file of [BUILTIN_RULES_FILE, ...userFiles]) {
    for (const r of await loadRulesFile(file)) {
      if ('disabled' in r) rules.delete(r.id)
      else rules.set(r.id, r)
    }
  }
  return [...rules.values()]
}

function selected(rule: Rule, root: Value): Value[] {
  if (rule.query.select === undefined) return [root]
  const v = evaluate(rule.query.select, { root })
  const items = v === null ? [] : Array.isArray(v) ? v : [v]
  return rule.query.where === undefined ? items : items.filter((item) => truthy(evaluate(rule.query.where!, { root, item })))
}

const STATUS_OF: Record<Severity, Status> = { error: 'fail', warning: 'warn', info: 'info' }

export function evaluateRule(rule: Rule, root: Value): RuleResult {
  const items = selected(rule, root)
  const findings: Finding[] = []
  for (const item of items) {
    const scope: Scope = rule.query.select === undefined ? { root } : { root, item }
    if (truthy(evaluate(rule.query.expect, scope))) continue
    const facts = explain(rule.query.expect, scope)
    const found = rule.found !== undefined
      ? interpolate(rule.found, scope)
      : Object.entries(facts).map(([k, v]) => `${k} = ${formatValue(v)}`).join(', ')
    findings.push({
      rule: rule.id, severity: rule.severity, found,
      facts: rule.query.select === undefined ? facts : { ...facts, selected: item },
      why: interpolate(rule.why, scope), fix: interpolate(rule.fix, scope)
    })
  }
  if (items.length === 0 && rule.whenEmpty === 'fail') {
    findings.push({
      rule: rule.id, severity: rule.severity, found: `nothing matched "${rule.query.source.split('|')[0].trim()}"`,
      facts: {}, why: interpolate(rule.why, { root }), fix: interpolate(rule.fix, { root })
    })
  }
  return {
    rule: rule.id, severity: rule.severity, status: findings.length === 0 ? 'ok' : STATUS_OF[rule.severity],
    title: interpolate(rule.title, { root }), checked: items.length, findings
  }
}

export function evaluateRules(rules: Rule[], facts: Value, node: DoctorReport['node']): DoctorReport {
  const results = rules.map((r) => evaluateRule(r, facts))
  const count = (s: Status): number => results.filter((r) => r.status === s).length
  return {
    version: 1,
    generatedAt: new Date().toISOString(),
    node,
    summary: { ok: count('ok'), warn: count('warn'), fail: count('fail'), info: count('info') },
    results
  }
}

/** Human output: one line per rule; failing rules add what was found, why and the fix. */
export function formatReport(report: DoctorReport): string {
  const lines: string[] = []
  const width = Math.max(...report.results.map((r) => r.rule.length), 4)
  for (const r of report.results) {
    const tag = { ok: 'ok  ', warn: 'WARN', fail: 'FAIL', info: 'info' }[r.status]
    if (r.findings.length === 0) {
      lines.push(`${tag}  ${r.rule.padEnd(width)}  ${r.title}${r.checked === 0 ? ' (nothing to check)' : ''}`)
      continue
    }
    for (const f of r.findings) {
      lines.push(`${tag}  ${r.rule.padEnd(width)}  ${r.title}: found ${f.found}`)
      lines.push(`      ${' '.repeat(width)}  why: ${f.why}`)
      lines.push(`      ${' '.repeat(width)}  fix: ${f.fix}`)
    }
  }
  const s = report.summary
  lines.push(`${s.ok} ok, ${s.warn} warn, ${s.fail} fail${s.info > 0 ? `, ${s.info} info` : ''}`)
  return `${lines.join('\n')}\n`
}
