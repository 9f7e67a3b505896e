// dfget's exit codes: the one place error codes turn into process exit statuses.
// Documented in docs/dfget.md and in `dfget --help`; scripts may rely on them.

import type { ErrorCode } from '@naiad/proto/contracts'

export const EXIT = {
  OK: 0,
  /** The download failed: origin error status, origin unreachable, truncated body, cache full, … */
  FAILED: 1,
  /** Unknown flag, bad value, or a request the daemon rejects as malformed. */
  USAGE: 2,
  /** The daemon could not be reached, broke off, or answered something that is not its API. */
  DAEMON: 3,
  /** The content does not match the digest given with --digest or the one the daemon announced. */
  VERIFY: 4,
  /** --timeout passed before FILE was complete. */
  TIMEOUT: 5,
  /** FILE could not be written (directory missing or read-only, disk full, FILE is a directory). */
  OUTPUT: 6,
  /** Interrupted by SIGINT / SIGTERM: 128 + the signal number, as shells report it. */
  SIGINT: 130,
  SIGTERM: 143
} as const

export const EXIT_CODE_HELP: ReadonlyArray<[number, string]> = [
  [EXIT.OK, 'FILE is complete and verified'],
  [EXIT.FAILED, 'download failed (origin error or unreachable, truncated body, cache full, ...)'],
  [EXIT.USAGE, 'unknown flag or bad value, or the daemon rejected the request as malformed'],
  [EXIT.DAEMON, 'the daemon could not be reached, broke off or stopped'],
  [EXIT.VERIFY, 'verification failed: the content does not match --digest or the announced SHA-256'],
  [EXIT.TIMEOUT, '--timeout passed'],
  [EXIT.OUTPUT, 'FILE could not be written'],
  [EXIT.SIGINT, 'interrupted (SIGINT; 143 for SIGTERM)']
]

export function exitCodeFor(code: ErrorCode): number {
  switch (code) {
    case 'PROTO_ERR_USAGE':
    case 'PROTO_ERR_BAD_CONFIG':
    case 'DFD_ERR_BAD_REQUEST':
      return EXIT.USAGE
    case 'DFGET_ERR_DAEMON_UNREACHABLE':
    case 'PROTO_ERR_DECODE':
    // Not the user's interrupt (that exits 130 at the boundary): the daemon stopped the download.
    case 'PROTO_ERR_ABORTED':
      return EXIT.DAEMON
    case 'DFGET_ERR_VERIFY':
    case 'DFD_ERR_DIGEST_MISMATCH':
      return EXIT.VERIFY
    case 'DFD_ERR_TIMEOUT':
    case 'PROTO_ERR_TIMEOUT':
      return EXIT.TIMEOUT
    case 'DFGET_ERR_OUTPUT':
      return EXIT.OUTPUT
    default:
      return EXIT.FAILED
  }
}
