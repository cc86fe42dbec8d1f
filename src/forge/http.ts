import type { z } from 'zod';
import { errorMessage } from '../lib/errors.js';

/** A forge answered no more slowly than this, or the call is abandoned (and retried). */
const CALL_TIMEOUT_MS = 15_000;
/** The longest a forge's rate limit may hold a status back; past it, it waits this long. */
export const MAX_RETRY_AFTER_MS = 3600_000;

/** A call to a forge's API that did not succeed: whether to try again, and when at the earliest. */
export class ForgeCallError extends Error {
  constructor(
    message: string,
    readonly retryable: boolean,
    readonly status?: number,
    /** What the forge asked for (Retry-After, or the rate limit's reset), in ms from now. */
    readonly retryAfterMs?: number,
  ) {
    super(message);
    this.name = 'ForgeCallError';
  }
}

/**
 * How long the forge asks to be left alone: `Retry-After` (seconds or an HTTP date), else the
 * reset of an exhausted rate limit (GitHub: `x-ratelimit-reset`, epoch seconds; GitLab:
 * `RateLimit-Reset`, epoch seconds).
 */
export function retryAfterMs(headers: Headers, now = Date.now()): number | undefined {
  const clamp = (ms: number) => Math.min(MAX_RETRY_AFTER_MS, Math.max(0, ms));
  const after = headers.get('retry-after');
  if (after !== null) {
    if (/^\d+$/.test(after.trim())) return clamp(Number(after) * 1000);
    const at = Date.parse(after);
    if (!Number.isNaN(at)) return clamp(at - now);
  }
  const remaining = headers.get('x-ratelimit-remaining') ?? headers.get('ratelimit-remaining');
  const reset = headers.get('x-ratelimit-reset') ?? headers.get('ratelimit-reset');
  if (remaining === '0' && reset !== null && /^\d+$/.test(reset)) return clamp(Number(reset) * 1000 - now);
  return undefined;
}

export interface ForgeRequest {
  method: string;
  headers: Record<string, string>;
  body?: unknown;
  signal?: AbortSignal;
}

/** A call whose answer must have a shape: the parsed answer, or a ForgeCallError naming the call. */
export async function forgeQuery<S extends z.ZodType>(
  what: string,
  url: string,
  init: ForgeRequest,
  schema: S,
): Promise<z.output<S>> {
  const r = schema.safeParse(await forgeCall(what, url, init));
  if (r.success) return r.data;
  const first = r.error.issues[0];
  throw new ForgeCallError(
    `${what}: unexpected answer (${first ? `${first.path.join('.')}: ${first.message}` : 'bad shape'})`,
    false,
  );
}

/**
 * One JSON call to a forge. A 2xx gives the parsed body; anything else is a ForgeCallError
 * that says whether trying again may help: network failures, timeouts, 5xx, 408, 429, and a 403
 * that is a rate limit (GitHub answers its secondary limits so) may; other 4xx will not.
 */
export async function forgeCall(what: string, url: string, init: ForgeRequest): Promise<unknown> {
  const signals = [AbortSignal.timeout(CALL_TIMEOUT_MS), ...(init.signal ? [init.signal] : [])];
  let res: Response;
  try {
    res = await fetch(url, {
      method: init.method,
      headers: {
        ...init.headers,
        ...(init.body === undefined ? {} : { 'content-type': 'application/json' }),
      },
      body: init.body === undefined ? undefined : JSON.stringify(init.body),
      signal: AbortSignal.any(signals),
      redirect: 'error', // a token never follows a redirect elsewhere
    });
  } catch (err) {
    throw new ForgeCallError(`${what}: ${init.method} ${url} failed: ${errorMessage(err)}`, true);
  }
  const text = await res.text().catch((err: unknown) => {
    throw new ForgeCallError(`${what}: reading the answer failed: ${errorMessage(err)}`, true, res.status);
  });
  if (res.ok) {
    if (!text) return undefined;
    try {
      return JSON.parse(text) as unknown;
    } catch (err) {
      throw new ForgeCallError(`${what}: the answer is not JSON: ${errorMessage(err)}`, false, res.status);
    }
  }
  const after = retryAfterMs(res.headers);
  const rateLimited = res.status === 429 || (res.status === 403 && after !== undefined);
  const retryable = rateLimited || res.status >= 500 || res.status === 408;
  throw new ForgeCallError(
    `${what}: ${init.method} ${url} answered ${res.status}: ${text.slice(0, 300)}`,
    retryable,
    res.status,
    after,
  );
}
