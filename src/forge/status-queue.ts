import type { Logger } from '../observability/logger.js';
import { counter } from '../observability/metrics.js';
import type { CommitStatus, Forge, StatusState } from './commit-status.js';
import { ForgeCallError } from './http.js';

export interface RetryOptions {
  /** Tries per status before it is given up (a newer state of the same context starts afresh). */
  attempts: number;
  /** The first backoff; it doubles per attempt (with jitter) up to `maxMs`. */
  baseMs: number;
  maxMs: number;
}

export interface StatusQueueOptions {
  retry: RetryOptions;
  /** Statuses waiting at once (distinct commit and context); past it the oldest waiting is dropped. */
  maxPending: number;
  /** Calls in flight at once, across forges. */
  concurrency: number;
}

export const DEFAULT_QUEUE: StatusQueueOptions = {
  retry: { attempts: 8, baseMs: 1000, maxMs: 60_000 },
  maxPending: 10_000,
  concurrency: 4,
};

/** Sends one status to its forge; throws ForgeCallError (or anything: then it is not retried). */
export type SendStatus = (status: CommitStatus, signal: AbortSignal) => Promise<void>;

const calls = counter(
  'boxcar_forge_status_updates_total',
  'Commit status updates for forges, by outcome: sent, retried (after a failed call), failed (given up), dropped (the queue was full)',
  ['forge', 'outcome'],
);

/** Pending before running before a final state: an older, lower state never replaces a newer one. */
const RANK: Record<StatusState, number> = {
  pending: 0,
  running: 1,
  success: 2,
  failure: 2,
  error: 2,
  canceled: 2,
};

/** What a status shows on the forge's page. */
const look = (s: CommitStatus) => JSON.stringify([s.state, s.description, s.targetUrl]);

interface Entry {
  key: string;
  /** The newest state asked for, not yet sent. */
  next: CommitStatus | undefined;
  /** The state of the call in flight or waiting to be retried. */
  current: CommitStatus | undefined;
  attempts: number;
  timer: NodeJS.Timeout | undefined;
}

/**
 * Statuses on their way to the forges, off the jobs' path: `push` never waits and never
 * throws. Per commit and context only the newest state is kept (a job that ends before its
 * pending status went out sends only its end); failed calls are retried with exponential
 * backoff, or after what the forge asks (Retry-After, an exhausted rate limit), which also
 * holds back the other calls to that forge. Memory is bounded by `maxPending`.
 */
export class StatusQueue {
  private readonly entries = new Map<string, Entry>();
  /**
   * What each context last showed, newest last and as many as `maxPending`: a repeat of it is
   * not sent again (a pipeline reports `running` at every job; GitLab refuses a transition to
   * the state a status is in, and GitHub keeps at most 1000 statuses per commit and context).
   */
  private readonly shown = new Map<string, string>();
  private readonly ready: Entry[] = [];
  private readonly pausedUntil = new Map<Forge, number>();
  private readonly abort = new AbortController();
  private inFlight = 0;
  private idle: (() => void) | undefined;
  private stopped = false;

  constructor(
    private readonly send: SendStatus,
    private readonly logger: Logger,
    private readonly opts: StatusQueueOptions = DEFAULT_QUEUE,
  ) {}

  push(status: CommitStatus): void {
    if (this.stopped) return;
    const key = JSON.stringify([status.forge, status.repository, status.commit, status.context]);
    let entry = this.entries.get(key);
    if (!entry && this.shown.get(key) === look(status)) return;
    if (!entry) {
      if (!this.makeRoom())
        return this.dropped(status, 'the incoming status (every queued one is in flight)');
      entry = { key, next: undefined, current: undefined, attempts: 0, timer: undefined };
      this.entries.set(key, entry);
    }
    const newest = entry.next ?? entry.current;
    if (newest && RANK[status.state] < RANK[newest.state]) return; // a late echo of an earlier change
    entry.next = status;
    if (entry.current === undefined) this.enqueue(entry);
  }

  /** Statuses not yet delivered (waiting, in flight or backing off). */
  get pending(): number {
    return this.entries.size;
  }

  /** Waits up to `graceMs` for what is queued to go out, then abandons the rest. */
  async stop(graceMs: number): Promise<void> {
    this.stopped = true;
    if (this.entries.size) {
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, graceMs);
        this.idle = () => {
          clearTimeout(t);
          resolve();
        };
      });
    }
    this.abort.abort();
    for (const e of this.entries.values()) {
      clearTimeout(e.timer);
      if (e.next ?? e.current)
        this.logger.warn(
          { status: e.next ?? e.current },
          'forge status not delivered before shutdown; abandoned',
        );
    }
    this.entries.clear();
    this.ready.length = 0;
  }

  /**
   * Room for one more entry: when full, the oldest not in flight goes (its commit will show a
   * later state, or none). False when every entry is in flight.
   */
  private makeRoom(): boolean {
    if (this.entries.size < this.opts.maxPending) return true;
    for (const e of this.entries.values()) {
      if (e.current && !e.timer) continue; // in flight
      clearTimeout(e.timer);
      this.entries.delete(e.key);
      const i = this.ready.indexOf(e);
      if (i >= 0) this.ready.splice(i, 1);
      this.dropped((e.next ?? e.current) as CommitStatus, 'the oldest waiting status');
      return true;
    }
    return false;
  }

  private dropped(status: CommitStatus, which: string): void {
    calls.inc({ forge: status.forge, outcome: 'dropped' });
    this.logger.warn({ status }, `forge status queue full; dropped ${which}`);
  }

  private enqueue(entry: Entry): void {
    this.ready.push(entry);
    this.pump();
  }

  private pump(): void {
    while (this.inFlight < this.opts.concurrency && this.ready.length && !this.abort.signal.aborted) {
      const entry = this.ready.shift() as Entry;
      this.inFlight++;
      void this.attempt(entry).finally(() => {
        this.inFlight--;
        this.pump();
        if (this.entries.size === 0) this.idle?.();
      });
    }
  }

  private async attempt(entry: Entry): Promise<void> {
    if (entry.next) {
      entry.current = entry.next;
      entry.next = undefined;
      entry.attempts = 0;
    }
    const status = entry.current as CommitStatus;
    const wait = (this.pausedUntil.get(status.forge) ?? 0) - Date.now();
    if (wait > 0) return this.later(entry, wait);
    entry.attempts++;
    try {
      await this.send(status, this.abort.signal);
      calls.inc({ forge: status.forge, outcome: 'sent' });
      this.shown.delete(entry.key);
      this.shown.set(entry.key, look(status));
      if (this.shown.size > this.opts.maxPending) this.shown.delete(this.shown.keys().next().value as string);
      this.settled(entry);
    } catch (err) {
      const call = err instanceof ForgeCallError ? err : undefined;
      if (call?.retryAfterMs !== undefined)
        this.pausedUntil.set(status.forge, Date.now() + call.retryAfterMs);
      const { retry } = this.opts;
      if (call?.retryable && entry.attempts < retry.attempts && !this.abort.signal.aborted) {
        calls.inc({ forge: status.forge, outcome: 'retried' });
        const backoff = Math.min(retry.maxMs, retry.baseMs * 2 ** (entry.attempts - 1));
        const delay = call.retryAfterMs ?? backoff / 2 + Math.random() * (backoff / 2);
        this.logger.warn(
          { err, status, attempt: entry.attempts, retryInMs: Math.round(delay) },
          'forge status call failed; retrying',
        );
        return this.later(entry, delay);
      }
      calls.inc({ forge: status.forge, outcome: 'failed' });
      this.logger.error({ err, status, attempts: entry.attempts }, 'forge status call failed; giving up');
      this.settled(entry);
    }
  }

  /** The entry's call is over: send what came in meanwhile, or forget the entry. */
  private settled(entry: Entry): void {
    entry.current = undefined;
    if (entry.next && !this.abort.signal.aborted) this.ready.push(entry);
    else this.entries.delete(entry.key);
  }

  private later(entry: Entry, ms: number): void {
    entry.timer = setTimeout(() => {
      entry.timer = undefined;
      this.enqueue(entry);
    }, ms);
  }
}
