// Structured logs: one JSON line (pino) per lifecycle event of the runtime, never one per guest
// request. Library users pass their own logger (any pino logger, or anything with these
// methods) to Runtime.start; the default is silent. The CLI makes one with --log-level.
// Events (the `event` field): context_opened, context_closed, device_attached,
// device_detached, worker_started, worker_exited, routes_committed, memory_mapped,
// memory_unmapped, error (with the error's `code`).
import { pino } from 'pino';
import { InvalidSpecError } from './errors.js';

type LogFn = (obj: Record<string, unknown>, msg?: string) => void;

/** What the runtime logs through: a pino logger fits; so does a child or a test's recorder. */
export interface RuntimeLogger {
  error: LogFn;
  warn: LogFn;
  info: LogFn;
  debug: LogFn;
}

const noop: LogFn = () => {};
export const silentLogger: RuntimeLogger = { error: noop, warn: noop, info: noop, debug: noop };

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** A pino logger writing JSON lines to stderr (fd 2) at `level` (default info). */
export function createLogger(level: string = 'info', fd = 2): RuntimeLogger {
  if (!(LOG_LEVELS as readonly string[]).includes(level))
    throw new InvalidSpecError(
      `--log-level ${level}: not a level (use one of ${LOG_LEVELS.join(', ')})`,
    );
  return pino({ level, base: { name: 'vfio-runtime' } }, pino.destination({ fd, sync: true }));
}

/** An error's fields worth a log line: its code (VFR_ERR_*, or an errno name) and message. */
export function errorFields(e: unknown): Record<string, unknown> {
  const err = e as { code?: unknown; message?: unknown; name?: unknown };
  return {
    event: 'error',
    code: typeof err?.code === 'string' ? err.code : undefined,
    err: { name: err?.name, message: err?.message ?? String(e) },
  };
}
