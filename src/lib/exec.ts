import { execFile } from 'node:child_process';

export interface ExecResult {
  stdout: string;
  stderr: string;
}

/**
 * The environment host tools, monitors and VMMs run with: the search path and nothing else of
 * boxcar's (which may hold the operator's BOXCAR_SECRET_* values or a webhook secret), plus
 * what the caller adds.
 */
export function scrubbedEnv(extra: Record<string, string> = {}): Record<string, string> {
  return {
    PATH: process.env.PATH ?? '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
    ...extra,
  };
}

/**
 * Runs a host tool with a scrubbed environment; a failure carries the command line and the
 * tool's own stderr.
 */
export function run(
  file: string,
  args: readonly string[],
  opts: { timeoutMs?: number; input?: string; env?: Record<string, string>; cwd?: string } = {},
): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    const child = execFile(
      file,
      args,
      {
        timeout: opts.timeoutMs ?? 30_000,
        maxBuffer: 16 * 1024 * 1024,
        encoding: 'utf8',
        env: opts.env ?? scrubbedEnv(),
        cwd: opts.cwd,
      },
      (err, stdout, stderr) => {
        if (err) {
          const why = (stderr || err.message).trim().split('\n').slice(-3).join(' | ');
          reject(new ExecError(`${file} ${args.join(' ')} failed: ${why}`, stderr, err));
          return;
        }
        resolve({ stdout, stderr });
      },
    );
    if (opts.input !== undefined) child.stdin?.end(opts.input);
  });
}

export class ExecError extends Error {
  constructor(
    message: string,
    readonly stderr: string,
    cause: unknown,
  ) {
    super(message, { cause });
    this.name = 'ExecError';
  }
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
