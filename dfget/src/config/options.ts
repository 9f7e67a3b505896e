// dfget's one option table and the typed, validated options the rest of the package uses.
// Everything a user can get wrong on the command line is caught here, before the daemon
// is contacted, as PROTO_ERR_USAGE (exit 2).

import {
  defineCommand, NaiadError, parseDigest, parseDownloadUrl, parseRange, type Loaded, type OptionValues
} from '@naiad/proto/contracts'

/** Every default in one place. */
export const DFGET_DEFAULTS = {
  daemon: 'http://127.0.0.1:65003',
  /** Whole-run deadline; `0s` turns it off. */
  timeout: '2h',
  /** Connecting to the local daemon; it is on loopback, so this is generous. */
  connectTimeoutMs: 5_000,
  /** Wait for the daemon's response headers (it answers before it starts downloading). */
  headersTimeoutMs: 30_000,
  /** Longest gap between two chunks of the content stream (read from the daemon's disk). */
  contentIdleTimeoutMs: 60_000,
  /** Progress lines when stderr is not a terminal. */
  progressLineIntervalMs: 5_000,
  /** Progress bar redraws on a terminal. */
  progressBarIntervalMs: 100
} as const

export const DFGET_USAGE = "dfget URL -O FILE [--daemon URL] [--digest ALG:HEX] [-H 'Name: value']... " +
  '[--range START-END] [--filter PARAM,PARAM] [--timeout DURATION] [--no-progress] [--json]'

export const DFGET_COMMAND = defineCommand({
  name: 'dfget',
  usage: DFGET_USAGE,
  summary: 'Download URL through the local dfdaemon (peers first, the origin as fallback) into FILE.\n' +
    'FILE appears only once it is complete and its SHA-256 verified; it is never left half-written.',
  positionals: { min: 0, max: 1 },
  options: [
    { key: 'output', flag: 'output', short: 'O', type: 'string', default: '', meta: 'FILE', help: 'write the content to FILE (required)' },
    { key: 'daemon', flag: 'daemon', type: 'url', default: DFGET_DEFAULTS.daemon, meta: 'URL', help: 'local API of the dfdaemon' },
    { key: 'digest', flag: 'digest', type: 'string', default: '', meta: 'ALG:HEX', help: 'expected digest of the content: sha256:<64 hex digits>' },
    { key: 'header', flag: 'header', short: 'H', type: 'string', multiple: true, default: [], meta: "'Name: value'", help: 'header sent to the origin; repeatable' },
    { key: 'range', flag: 'range', type: 'string', default: '', meta: 'START-END', help: 'download only bytes START to END (inclusive)' },
    { key: 'filter', flag: 'filter', type: 'list', default: [], meta: 'PARAM,PARAM', help: 'query parameters that do not change the content (signatures, expiry), left out of the task ID' },
    { key: 'timeout', flag: 'timeout', type: 'duration', default: DFGET_DEFAULTS.timeout, meta: 'DURATION', help: 'give up after this long, e.g. 30s or 5m; 0s waits forever' },
    { key: 'progress', flag: 'progress', type: 'bool', default: true, help: 'show progress on stderr (a bar on a terminal, a line every 5s otherwise); --no-progress for none' },
    { key: 'json', flag: 'json', type: 'bool', default: false, help: 'print one JSON result object on stdout at the end, on success and on failure' }
  ]
})

export interface DfgetOptions {
  url: string
  /** Path of the output file as given. */
  output: string
  daemonUrl: string
  headers: Record<string, string>
  /** Normalised `sha256:<hex>`, or undefined. */
  digest?: string
  /** `START-END`, or undefined. */
  range?: string
  filter: string[]
  /** Whole-run deadline in milliseconds; 0 for none. */
  timeoutMs: number
}

export interface CliOptions extends DfgetOptions {
  progress: boolean
  json: boolean
}

function usage(message: string, cause?: unknown): NaiadError {
  return new NaiadError('PROTO_ERR_USAGE', message, { cause })
}

/** `Name: value` → [name, value]; repeated names are joined with `, ` as HTTP allows. */
export function parseHeaders(raw: string[]): Record<string, string> {
  const out: Record<string, string> = {}
  const names = new Map<string, string>()
  for (const h of raw) {
    const colon = h.indexOf(':')
    if (colon <= 0) throw usage(`flag -H: expected 'Name: value', got "${h}"`)
    const name = h.slice(0, colon).trim()
    const value = h.slice(colon + 1).trim()
    if (!/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(name)) throw usage(`flag -H: bad header name "${name}"`)
    if (/[\r\n\0]/.test(value)) throw usage(`flag -H: header ${name} has a line break or NUL in its value`)
    if (name.toLowerCase() === 'range') throw usage('flag -H: use --range START-END instead of a Range header')
    const key = names.get(name.toLowerCase()) ?? name
    names.set(name.toLowerCase(), key)
    out[key] = out[key] === undefined ? value : `${out[key]}, ${value}`
  }
  return out
}

/** Turns the loaded option values into DfgetOptions, or throws PROTO_ERR_USAGE naming the problem. */
export function cliOptionsFromLoaded(loaded: Loaded<OptionValues<typeof DFGET_COMMAND.options>>): CliOptions {
  const v = loaded.values
  const url = loaded.positionals[0]
  if (url === undefined) throw usage(`missing URL; usage: ${DFGET_USAGE}`)
  try {
    parseDownloadUrl(url)
  } catch (err) {
    throw usage((err as Error).message, err)
  }
  const output = v.output
  if (output === '') throw usage('missing -O FILE: where to write the content')

  let digest: string | undefined
  if (v.digest !== '') {
    // Digests are compared as lowercase hex; accept what sha256sum or a registry prints.
    digest = v.digest.toLowerCase()
    try { parseDigest(digest) } catch { throw usage(`flag --digest: bad digest "${v.digest}": expected sha256: followed by 64 hex digits`) }
  }
  let range: string | undefined
  if (v.range !== '') {
    range = v.range
    try { parseRange(range) } catch (err) { throw usage(`flag --range: ${(err as Error).message}`, err) }
  }
  return {
    url,
    output,
    daemonUrl: v.daemon,
    headers: parseHeaders(v.header),
    digest,
    range,
    filter: v.filter,
    timeoutMs: v.timeout,
    progress: v.progress,
    json: v.json
  }
}
