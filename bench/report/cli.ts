// The command-line shell every benchmark shares: a usage error exits 2 with one line and
// the usage text, --help prints the usage and exits 0.

/** A function that reports a bad command line for `name` and exits 2. */
export function usageFailer(name: string, usage: string): (message: string) => never {
  return (message: string): never => {
    process.stderr.write(`${name}: ${message}\n${usage}\n`)
    process.exit(2)
  }
}

/**
 * Runs `parse` (a `parseArgs(...).values`), turning its errors into usage errors, and
 * answers `--help`.
 */
export function parseCommandLine<T extends { help?: boolean }>(usage: string, fail: (message: string) => never, parse: () => T): T {
  let values: T
  try {
    values = parse()
  } catch (err) {
    return fail((err as Error).message)
  }
  if (values.help === true) {
    process.stdout.write(`${usage}\n`)
    process.exit(0)
  }
  return values
}
