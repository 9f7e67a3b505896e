import { pino, type Logger } from 'pino'

/**
 * Fields that may hold credentials, wherever a log call puts request headers: their values
 * never reach a log line.
 */
const REDACT = ['authorization', 'cookie', 'proxy-authorization', 'password', 'x-api-key', 'token'].flatMap((k) => [
  `headers.${k}`, `headers["${k}"]`, `*.headers.${k}`, `*.headers["${k}"]`, `req.headers.${k}`, `req.headers["${k}"]`
]).concat(['password', '*.password', 'joinToken', 'apiToken'])

/** Structured logs to stderr, so that stdout stays free for command output. */
export function createLogger(name: string, level = 'info'): Logger {
  return pino({ name, level, redact: { paths: REDACT, censor: '<redacted>' } }, pino.destination({ fd: 2, sync: false }))
}
export type { Logger }
