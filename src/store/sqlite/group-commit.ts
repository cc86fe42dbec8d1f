import type Database from 'better-sqlite3';

interface Pending {
  write: () => unknown;
  resolve: (value: unknown) => void;
  reject: (err: unknown) => void;
}

/**
 * Group commit: the writes asked for in one turn of the event loop run in call order in one
 * transaction, each in a savepoint of its own (one that throws is undone alone and rejects
 * alone), and each promise settles only once that transaction has committed: a write is as
 * durable when its promise resolves as it was with a transaction of its own. What it saves is
 * the commit's fixed cost per write (locks, WAL frames of shared pages): with a thousand jobs
 * moving at once, most of a job's writes share a commit with other jobs'.
 *
 * A write waits for the turn to end before it runs, so a read issued meanwhile sees the state
 * before it, as with a store whose writes travel to a server (PostgreSQL's): callers that need
 * their write's effect await it.
 */
export class GroupCommit {
  private pending: Pending[] = [];

  constructor(private readonly db: Database.Database) {}

  run<T>(write: () => T): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      if (this.pending.length === 0) setImmediate(() => this.flush());
      this.pending.push({ write, resolve: resolve as (v: unknown) => void, reject });
    });
  }

  /** Commits what is pending now (the store closing does not wait for the turn's end). */
  flush(): void {
    const batch = this.pending;
    if (batch.length === 0) return;
    this.pending = [];
    const outcomes: Array<{ ok: true; value: unknown } | { ok: false; err: unknown }> = [];
    try {
      this.db
        .transaction(() => {
          for (const p of batch) {
            try {
              outcomes.push({ ok: true, value: this.db.transaction(p.write)() }); // a savepoint
            } catch (err) {
              outcomes.push({ ok: false, err });
            }
          }
        })
        .immediate();
    } catch (err) {
      // Nothing committed (busy past the timeout, disk full): every write fails as it would have alone.
      for (const p of batch) p.reject(err);
      return;
    }
    batch.forEach((p, i) => {
      const o = outcomes[i] as (typeof outcomes)[number];
      if (o.ok) p.resolve(o.value);
      else p.reject(o.err);
    });
  }
}
