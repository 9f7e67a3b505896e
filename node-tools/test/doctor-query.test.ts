// The doctor's query language: parsing (with errors that name the column), evaluation over
// facts, explanations, and rule files.

import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { describe, expect, it } from 'vitest'

import { evaluate, explain, interpolate, parseQuery, QueryError, type Value } from '../src/doctor/query.ts'
import { evaluateRule, loadRules, rulesFromDocument, type Rule } from '../src/doctor/rules.ts'
import { parseToml } from '../src/doctor/toml.ts'

const facts: Value = {
  daemon: { proxyUrl: 'http://127.0.0.1:65001', proxyUrls: ['http://127.0.0.1:65001', 'http://localhost:65001'] },
  containerd: {
    hosts: [
      { registry: 'docker.io', present: true, pullMirrors: ['http://127.0.0.1:65001'] },
      { registry: 'quay.io', present: true, pullMirrors: ['http://10.0.0.9:5000'] },
      { registry: 'ghcr.io', present: false, pullMirrors: [] }
    ]
  },
  disk: { free: 300 * 2 ** 20, total: 2 ** 30, freeRatio: 0.29 },
  clock: { skewMs: -7000 },
  tags: ['a', 'b']
}

const check = (q: string, item?: Value): Value => {
  const query = parseQuery(q)
  return evaluate(query.expect, { root: facts, item })
}

function parseError(q: string): QueryError {
  try {
    parseQuery(q)
  } catch (err) {
    expect(err).toBeInstanceOf(QueryError)
    expect((err as QueryError).code).toBe('DFD_ERR_DOCTOR_RULE')
    return err as QueryError
  }
  throw new Error(`"${q}" parsed`)
}

describe('doctor query language: parsing', () => {
  it('parses the select | expect form and the bare expression form', () => {
    const q = parseQuery('select containerd.hosts where registry = "docker.io" | expect daemon.proxyUrl in pullMirrors')
    expect(q.select?.text).toBe('containerd.hosts')
    expect(q.where?.kind).toBe('binary')
    expect(q.expect.kind).toBe('binary')
    expect(parseQuery('disk.free >= 1GiB').select).toBeUndefined()
    expect(parseQuery('expect disk.free >= 1GiB').select).toBeUndefined()
  })

  it('reports errors with the 1-based column and a caret', () => {
    const e = parseError('disk.free >= ')
    expect(e.pos).toBe(14)
    expect(e.message).toContain('expected a value, a fact path or "(" but found the end of the query at column 14')
    expect(e.message).toContain('\n  disk.free >= \n               ^')

    expect(parseError('select containerd.hosts expect present').message).toContain('expected "where" or "| expect" but found "expect" at column 25')
    expect(parseError('select containerd.hosts where present expect x').message).toContain('expected "| expect" but found "expect" at column 39')
    expect(parseError('select | expect x').message).toContain('expected a fact path after "select" but found "|" at column 8')
    expect(parseError('select a | present').message).toContain('expected "expect" after "|" but found "present" at column 12')
    expect(parseError('(a == 1').message).toContain('expected ")" but found the end of the query at column 8')
    expect(parseError('a == "x').message).toContain('unterminated string at column 6')
    expect(parseError('a == 1 b').message).toContain('expected an operator or the end of the query but found "b" at column 8')
    expect(parseError('a ~ 1').message).toContain('unexpected character "~" at column 3')
    expect(parseError('disk.free > 10 parsecs').message).toContain('expected an operator or the end of the query but found "parsecs"')
    expect(parseError('disk.free > 10XB').message).toMatch(/unknown unit "XB" \(sizes: .*\) at column 15/)
    expect(parseError('1 < a < 3').message).toContain('comparisons do not chain: put "and" between "<" and "<" at column 7')
    expect(parseError('eval(a)').message).toMatch(/unknown function "eval" \(known: len, .*\) at column 1/)
    expect(parseError('abs(1, 2)').message).toContain('abs() takes 1 argument(s), got 2 at column 1')
    expect(parseError('a matches "("').message).toContain('bad regular expression')
    expect(parseError('a.').message).toContain('expected a field name after "." but found the end of the query at column 3')
    expect(parseError('a[x]').message).toContain('expected a whole number index but found "x" at column 3')
  })

  it('never runs JavaScript: property names of Object.prototype are just absent facts', () => {
    expect(check('constructor == null')).toBe(true)
    expect(check('daemon.__proto__ == null')).toBe(true)
    expect(check('tags.length == null')).toBe(true)
    expect(check('len(tags) == 2')).toBe(true)
  })
})

describe('doctor query language: evaluation', () => {
  it('compares numbers with size and duration units, strings, lists and null', () => {
    expect(check('disk.free >= 256MiB and disk.free < 1GiB')).toBe(true)
    expect(check('disk.freeRatio > 0.5')).toBe(false)
    expect(check('abs(clock.skewMs) <= 5s')).toBe(false)
    expect(check('abs(clock.skewMs) <= 10s')).toBe(true)
    expect(check('"b" in tags and tags contains "a" and not ("c" in tags)')).toBe(true)
    expect(check('daemon.proxyUrl matches "^http://127\\\\.0\\\\.0\\\\.1:\\\\d+$"')).toBe(true)
    expect(check('missing.fact == null and not exists(missing.fact)')).toBe(true)
    expect(check('missing.fact > 3 or missing.fact < 3')).toBe(false) // an unknown never satisfies an ordering
    expect(check('disk.total - disk.free == 724MiB')).toBe(true)
    expect(check('(1 + 2) * 3 == 9 and -2 < 0 and 7 / 0 == null')).toBe(true)
    expect(check('"http://" + "x" == "http://x"')).toBe(true)
    expect(check('containerd.hosts[1].registry == "quay.io"')).toBe(true)
    expect(check('[1, 2] == [1, 2] and min(3, 1, 2) == 1 and max(tags) == null')).toBe(true)
    expect(check('lower("AbC") == "abc" and startsWith(daemon.proxyUrl, "http:") and first(tags) == "a"')).toBe(true)
  })

  it('resolves names in the selected item first, then in the root facts; `it` is the item', () => {
    const q = parseQuery('select containerd.hosts where present | expect overlaps(pullMirrors, daemon.proxyUrls)')
    const hosts = (facts as { containerd: { hosts: Value[] } }).containerd.hosts
    expect(hosts.map((h) => evaluate(q.where!, { root: facts, item: h }))).toEqual([true, true, false])
    expect(hosts.map((h) => evaluate(q.expect, { root: facts, item: h }))).toEqual([true, false, false])
    expect(evaluate(parseQuery('it == "b"').expect, { root: facts, item: 'b' })).toBe(true)
  })

  it('explains a failed expectation with the facts it read', () => {
    const q = parseQuery('select containerd.hosts | expect daemon.proxyUrl in pullMirrors')
    const quay = (facts as { containerd: { hosts: Value[] } }).containerd.hosts[1]
    expect(explain(q.expect, { root: facts, item: quay })).toEqual({ 'daemon.proxyUrl': 'http://127.0.0.1:65001', pullMirrors: ['http://10.0.0.9:5000'] })
    expect(interpolate('{registry} -> {pullMirrors}; {nope}', { root: facts, item: quay })).toBe('quay.io -> ["http://10.0.0.9:5000"]; -')
  })
})

describe('doctor rules', () => {
  const rule = (r: Record<string, unknown>): Rule => rulesFromDocument({ rules: [r] }, 'test.yaml')[0] as Rule

  it('gives one finding per failing item, with the facts, why and fix filled in', () => {
    const r = evaluateRule(rule({
      id: 'mirror', severity: 'error', query: 'select containerd.hosts where present | expect overlaps(pullMirrors, daemon.proxyUrls)',
      why: '{registry} bypasses the swarm', fix: 'init-config --registry {registry} --mirror {daemon.proxyUrl}'
    }), facts)
    expect(r.status).toBe('fail')
    expect(r.checked).toBe(2)
    expect(r.findings).toHaveLength(1)
    expect(r.findings[0].found).toBe('pullMirrors = ["http://10.0.0.9:5000"], daemon.proxyUrls = ["http://127.0.0.1:65001","http://localhost:65001"]')
    expect(r.findings[0].why).toBe('quay.io bypasses the swarm')
    expect(r.findings[0].fix).toBe('init-config --registry quay.io --mirror http://127.0.0.1:65001')
    expect((r.findings[0].facts.selected as { registry: string }).registry).toBe('quay.io')
  })

  it('maps severities to statuses and honours when-empty', () => {
    expect(evaluateRule(rule({ id: 'w', severity: 'warning', query: 'clock.skewMs == 0', why: 'x', fix: 'y' }), facts).status).toBe('warn')
    expect(evaluateRule(rule({ id: 'i', severity: 'info', query: 'false', why: 'x', fix: 'y' }), facts).status).toBe('info')
    expect(evaluateRule(rule({ id: 'e', query: 'select containerd.hosts where registry == "x" | expect false', why: 'x', fix: 'y' }), facts).status).toBe('ok')
    const empty = evaluateRule(rule({ id: 'e', 'when-empty': 'fail', query: 'select containerd.hosts where registry == "x" | expect false', why: 'x', fix: 'y' }), facts)
    expect(empty.status).toBe('fail')
    expect(empty.findings[0].found).toContain('nothing matched')
  })

  it('rejects malformed rule documents with the file, the rule and the reason', () => {
    const err = (doc: unknown): string => { try { rulesFromDocument(doc, 'r.yaml'); return '' } catch (e) { return (e as Error).message } }
    expect(err({ nope: 1 })).toBe('r.yaml: expected a list of rules under "rules:"')
    expect(err({ rules: [{ id: 'Bad Id' }] })).toContain('r.yaml: rule 1: id must be')
    expect(err({ rules: [{ id: 'a', query: 'x', why: 'w' }] })).toBe('r.yaml: rule a: "fix" is required (a string)')
    expect(err({ rules: [{ id: 'a', query: 'x', why: 'w', fix: 'f', severity: 'fatal' }] })).toContain('severity must be one of error, warning, info')
    expect(err({ rules: [{ id: 'a', query: 'x', why: 'w', fix: 'f', colour: 'red' }] })).toContain('unknown key "colour"')
    expect(err({ rules: [{ id: 'a', query: 'x >', why: 'w', fix: 'f' }] })).toContain('r.yaml: rule a: query: expected a value, a fact path or "(" but found the end of the query at column 4')
  })

  it('loads the built-in rules, and a user file replaces or disables them by id', async () => {
    const builtin = await loadRules([])
    expect(builtin.map((r) => r.id)).toEqual(expect.arrayContaining(['containerd-hosts-present', 'containerd-mirror', 'docker-registry-mirror', 'podman-registry-mirror',
      'disk-free', 'ports-listening', 'fuse-available', 'clock-skew', 'supernode-reachable']))
    const dir = await mkdtemp(join(tmpdir(), 'naiad-rules-'))
    try {
      const file = join(dir, 'mine.yaml')
      await writeFile(file, 'rules:\n  - id: fuse-available\n    disabled: true\n  - id: clock-skew\n    severity: error\n    query: select clock where known | expect abs(skewMs) <= 1s\n    why: w\n    fix: f\n  - id: my-rule\n    query: disk.free > 1TiB\n    why: w\n    fix: f\n')
      const rules = await loadRules([file])
      expect(rules.find((r) => r.id === 'fuse-available')).toBeUndefined()
      expect(rules.find((r) => r.id === 'clock-skew')?.severity).toBe('error')
      expect(rules.at(-1)?.id).toBe('my-rule')
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })
})

describe('doctor TOML subset', () => {
  it('reads hosts.toml and registries.conf shapes', () => {
    const hosts = parseToml('server = "https://registry-1.docker.io" # fallback\n\n[host."http://127.0.0.1:65001"]\n  capabilities = ["pull",\n "resolve"]\n  skip_verify = true\n')
    expect(hosts).toEqual({ server: 'https://registry-1.docker.io', host: { 'http://127.0.0.1:65001': { capabilities: ['pull', 'resolve'], skip_verify: true } } })
    const conf = parseToml('unqualified-search-registries = ["docker.io"]\n[[registry]]\nprefix = "docker.io"\nlocation = "docker.io"\n[[registry.mirror]]\nlocation = "127.0.0.1:65001/naiad-ns/docker.io"\ninsecure = true\n[[registry]]\nlocation = "quay.io"\n')
    expect(conf.registry).toEqual([
      { prefix: 'docker.io', location: 'docker.io', mirror: [{ location: '127.0.0.1:65001/naiad-ns/docker.io', insecure: true }] },
      { location: 'quay.io' }
    ])
    expect(() => parseToml('[host."http://x]\n')).toThrow(/line 1: unterminated quoted key/)
    expect(() => parseToml('server\n')).toThrow(/line 1: expected key = value/)
  })
})
