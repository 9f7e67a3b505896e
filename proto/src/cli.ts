// The shared shape of every binary's main: parse options, print help, and turn errors
// into one clear line and a documented exit code.

import { NaiadError } from './errors.ts'
import { helpText, loadOptions, type CommandSpec, type Loaded, type OptionSpec, type OptionValues } from './config/options.ts'

export async function runCli<O extends readonly OptionSpec[]>(cmd: CommandSpec<O>, argv: string[], main: (loaded: Loaded<OptionValues<O>>) => Promise<number | void>): Promise<void> {
  let loaded: Loaded<OptionValues<O>>
  try {
    loaded = loadOptions(cmd, argv)
  } catch (err) {
    const e = err instanceof NaiadError ? err : new NaiadError('PROTO_ERR_USAGE', String(err))
    process.stderr.write(`${cmd.name}: ${e.message} (see ${cmd.name} --help) [${e.code}]\n`)
    process.exitCode = 2
    return
  }
  if (loaded.help) {
    process.stdout.write(`${helpText(cmd)}\n`)
    return
  }
  try {
    const code = await main(loaded)
    if (typeof code === 'number') process.exitCode = code
  } catch (err) {
    const e = err instanceof NaiadError ? err : null
    process.stderr.write(`${cmd.name}: ${e !== null ? `${e.message} [${e.code}]` : (err as Error).stack ?? String(err)}\n`)
    // A server that failed to start may hold sockets and timers open: exit rather than linger.
    process.exit(e?.code === 'PROTO_ERR_USAGE' || e?.code === 'PROTO_ERR_BAD_CONFIG' ? 2 : 1)
  }
}

/**
 * Keeps a server running until SIGINT or SIGTERM, then runs its shutdown once. A promise
 * rejected with no handler is a bug, but one request's bug must not end a server that
 * serves a whole node: it is logged as an error (with its stack) and the server goes on.
 */
export function untilSignal(logger: { info(msg: string): void; error(obj: object, msg: string): void }, shutdown: () => Promise<void>): Promise<void> {
  process.on('unhandledRejection', (reason: unknown) => {
    logger.error({ err: reason }, 'unhandled promise rejection (a bug; the server keeps running)')
  })
  return new Promise<void>((resolve) => {
    const stop = (): void => {
      logger.info('shutting down')
      shutdown().catch((err: unknown) => logger.error({ err }, 'shutdown failed')).finally(resolve)
    }
    process.once('SIGINT', stop)
    process.once('SIGTERM', stop)
  })
}
