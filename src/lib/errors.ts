/**
 * An error meant for the person at the terminal or the API client: one line that names
 * what was wrong and how to fix it. Anything else reaching the top level is a bug.
 */
export class UserError extends Error {
  constructor(
    message: string,
    /** Process exit code for the CLI (125 like podman: "the error is Boxcar's, not the job's"). */
    readonly exitCode = 125,
  ) {
    super(message);
    this.name = 'UserError';
  }
}

/** Wraps a lower-level failure with what we were doing, keeping the cause. */
export function withContext(what: string, err: unknown): Error {
  const detail = err instanceof Error ? err.message : String(err);
  return new Error(`${what}: ${detail}`, { cause: err });
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
