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

/** The errno code of a failed system call (`ENOENT`, `EEXIST`…), if the error is one. */
export function errnoCode(err: unknown): string | undefined {
  return typeof err === 'object' && err !== null ? (err as NodeJS.ErrnoException).code : undefined;
}

/** What `read` gives, or undefined when the file is not there; any other failure is thrown. */
export async function ifExists<T>(read: Promise<T>): Promise<T | undefined> {
  try {
    return await read;
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return undefined;
    throw err;
  }
}

/** `ifExists` for synchronous reads. */
export function ifExistsSync<T>(read: () => T): T | undefined {
  try {
    return read();
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return undefined;
    throw err;
  }
}
