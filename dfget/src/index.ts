/**
 * @naiad/dfget — fetch one file through the local dfdaemon, verified and written atomically.
 *
 * @example
 * import { createDfget } from '@naiad/dfget'
 * const dfget = createDfget({
 *   url: 'https://example.com/big.tar', output: 'big.tar', daemonUrl: 'http://127.0.0.1:65003',
 *   headers: {}, filter: [], timeoutMs: 30_000, digest: 'sha256:…'
 * })
 * try {
 *   const { sha256, fromPeers } = await dfget.download()
 * } finally {
 *   await dfget.close()
 * }
 *
 * // or the whole command line, returning the exit code:
 * process.exitCode = await runDfget(['https://example.com/big.tar', '-O', 'big.tar', '--json'])
 */

export { createDfget, Dfget, formatElapsed, type DfgetComponents, type DfgetResult } from './dfget.ts'
export { cliOptionsFromLoaded, DFGET_COMMAND, DFGET_DEFAULTS, DFGET_USAGE, parseHeaders, type CliOptions, type DfgetOptions } from './config/options.ts'
export { AtomicFile, tempNameFor, type WriteResult } from './output/atomic-file.ts'
export {
  createProgressReporter, formatPercent, formatRate, progressModeFor,
  type ProgressMode, type ProgressOptions, type ProgressReporter, type ProgressSample, type ProgressStream
} from './progress/progress-reporter.ts'
export { EXIT, EXIT_CODE_HELP, exitCodeFor } from './cli/exit-codes.ts'
export { dfgetHelp, InterruptedError, main, runDfget, type CliIo, type JsonResult } from './cli/run-dfget.ts'
