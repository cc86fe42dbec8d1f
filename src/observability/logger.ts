import { pino, type Logger } from 'pino';

export type { Logger };

/**
 * Structured JSON logs on stderr (stdout belongs to job output and `--json` results), one
 * object a line as Fluentd and Fluent Bit read them: `time` (RFC 3339), `level` by name, and
 * `job_id`, `tenant`, `runtime` where a line is about a job. BOXCAR_LOG_LEVEL picks the level;
 * the CLI defaults to warnings only.
 */
export function createLogger(defaultLevel = 'warn'): Logger {
  return pino(
    {
      level: process.env.BOXCAR_LOG_LEVEL ?? defaultLevel,
      base: { pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    pino.destination(2),
  );
}

/** For tests and tools that must not write logs. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
