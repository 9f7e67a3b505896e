import { pino, type Logger } from 'pino'

/** Structured logs to stderr, so that stdout stays free for command output. */
export function createLogger(name: string, level = 'info'): Logger {
  return pino({ name, level }, pino.destination({ fd: 2, sync: false }))
}
export type { Logger }
