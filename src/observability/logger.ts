import { pino, type Logger } from 'pino';

export type { Logger };

/**
 * Structured JSON logs on stderr (stdout belongs to job output and `--json` results).
 * BOXCAR_LOG_LEVEL picks the level; the CLI defaults to warnings only.
 */
export function createLogger(defaultLevel = 'warn'): Logger {
  return pino(
    { level: process.env.BOXCAR_LOG_LEVEL ?? defaultLevel, base: { pid: process.pid } },
    pino.destination(2),
  );
}

/** For tests and tools that must not write logs. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
