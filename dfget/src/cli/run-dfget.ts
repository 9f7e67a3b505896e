// The command-line boundary: parse flags, print help, run one download, and turn the
// outcome into one stderr line, an optional JSON object on stdout and an exit code.
// Errors become exit codes here and nowhere else.

import { helpText, loadOptions, NaiadError } from '@naiad/proto/contracts'

import { cliOptionsFromLoaded, DFGET_COMMAND, DFGET_DEFAULTS, type CliOptions } from '../config/options.ts'
import { createDfget, type DfgetComponents, type DfgetResult } from '../dfget.ts'
import { createProgressReporter, progressModeFor, type ProgressStream } from '../progress/progress-reporter.ts'
import { EXIT, EXIT_CODE_HELP, exitCodeFor } from './exit-codes.ts'

export interface CliIo {
  stdout: { write(text: string): unknown }
  stderr: ProgressStream
  env: NodeJS.ProcessEnv
  /** Aborts the run, e.g. on SIGINT; its reason may be a NaiadError to report. */
  signal?: AbortSignal
}

/** The JSON object `--json` prints, on success and on failure. */
export type JsonResult =
  | ({ ok: true; exitCode: 0; url: string } & DfgetResult)
  | { ok: false; exitCode: number; url?: string; output?: string; error: { code: string; message: string } }

export function dfgetHelp(): string {
  const width = Math.max(...EXIT_CODE_HELP.map(([c]) => String(c).length))
  return [
    helpText(DFGET_COMMAND),
    '',
    'Exit codes:',
    ...EXIT_CODE_HELP.map(([c, text]) => `  ${String(c).padStart(width)}  ${text}`),
    '',
    'Example:',
    '  dfget https://example.com/big.tar -O big.tar --digest sha256:<64 hex digits>'
  ].join('\n')
}

/** URLs in output lose their query, which often carries a signature or token. */
function redactUrl(url: string): string {
  try {
    const u = new URL(url)
    return `${u.origin}${u.pathname}${u.search === '' ? '' : '?…'}`
  } catch {
    return url
  }
}

/**
 * Runs dfget with `argv` (without the node and script paths) and returns the exit code.
 * Never throws for anything a user or the network can cause.
 */
export async function runDfget(argv: string[], io: CliIo = { stdout: process.stdout, stderr: process.stderr, env: process.env }, components: Partial<DfgetComponents> = {}): Promise<number> {
  // Known before parsing, so that even a usage error can be reported as JSON.
  const wantsJson = argv.includes('--json')
  let options: CliOptions | undefined

  const fail = (err: unknown): number => {
    const e = err instanceof NaiadError ? err : undefined
    // An abort is the user's only when their signal fired; any other is the daemon stopping (exitCodeFor).
    const exitCode = e === undefined ? EXIT.FAILED : e.code === 'PROTO_ERR_ABORTED' && io.signal?.aborted === true ? abortExit(io.signal) : exitCodeFor(e.code)
    const message = e?.message ?? `internal error: ${(err as Error)?.message ?? String(err)}`
    // One line, always: a message with line breaks (from a peer or origin) is folded.
    io.stderr.write(`dfget: ${message.replace(/\s*[\r\n]+\s*/g, ' ')}${e === undefined ? '' : ` [${e.code}]`}\n`)
    if (options?.json ?? wantsJson) {
      const result: JsonResult = {
        ok: false,
        exitCode,
        ...(options !== undefined ? { url: redactUrl(options.url), output: options.output } : {}),
        error: { code: e?.code ?? 'INTERNAL', message }
      }
      io.stdout.write(`${JSON.stringify(result)}\n`)
    }
    return exitCode
  }

  let loaded: ReturnType<typeof loadOptions<typeof DFGET_COMMAND.options>>
  try {
    loaded = loadOptions(DFGET_COMMAND, argv, io.env)
    if (loaded.help) {
      io.stdout.write(`${dfgetHelp()}\n`)
      return EXIT.OK
    }
    options = cliOptionsFromLoaded(loaded)
  } catch (err) {
    if (err instanceof NaiadError) {
      return fail(new NaiadError(err.code, `${err.message} (see dfget --help)`, { cause: err }))
    }
    return fail(err)
  }

  const mode = progressModeFor(io.stderr, options.progress)
  const dfget = createDfget(options, {
    progress: createProgressReporter(io.stderr, {
      mode,
      intervalMs: mode === 'bar' ? DFGET_DEFAULTS.progressBarIntervalMs : DFGET_DEFAULTS.progressLineIntervalMs
    }),
    ...components
  })
  try {
    const result = await dfget.download({ signal: io.signal })
    if (options.json) {
      const out: JsonResult = { ok: true, exitCode: 0, url: redactUrl(options.url), ...result }
      io.stdout.write(`${JSON.stringify(out)}\n`)
    }
    return EXIT.OK
  } catch (err) {
    return fail(err)
  } finally {
    await dfget.close()
  }
}

function abortExit(signal: AbortSignal | undefined): number {
  const reason: unknown = signal?.reason
  return reason instanceof InterruptedError && reason.signal === 'SIGTERM' ? EXIT.SIGTERM : EXIT.SIGINT
}

/** The abort reason the bin uses for SIGINT / SIGTERM, so the exit code names the signal. */
export class InterruptedError extends NaiadError {
  readonly signal: 'SIGINT' | 'SIGTERM'

  constructor(signal: 'SIGINT' | 'SIGTERM') {
    super('PROTO_ERR_ABORTED', `interrupted by ${signal}`)
    this.signal = signal
  }
}

/**
 * Runs dfget as the process's main: SIGINT / SIGTERM abort the download (removing the
 * temporary file) instead of killing the process mid-write.
 */
export async function main(argv: string[]): Promise<number> {
  const ac = new AbortController()
  const onSignal = (sig: 'SIGINT' | 'SIGTERM') => (): void => { ac.abort(new InterruptedError(sig)) }
  const onInt = onSignal('SIGINT')
  const onTerm = onSignal('SIGTERM')
  process.once('SIGINT', onInt)
  process.once('SIGTERM', onTerm)
  try {
    return await runDfget(argv, { stdout: process.stdout, stderr: process.stderr, env: process.env, signal: ac.signal })
  } finally {
    process.off('SIGINT', onInt)
    process.off('SIGTERM', onTerm)
  }
}
