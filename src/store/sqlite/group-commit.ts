import type Database from 'better-sqlite3';

interface Pending {
  write: () => unknown;
  resolve: (value: unknown) => void;
  reject: (err: unknown) => void;
}

type Outcome = { ok: true; value: unknown } | { ok: false; err: unknown };

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
  /** One write in a savepoint of the batch's transaction: undone alone when it throws. */
  private readonly inSavepoint: (write: () => unknown) => unknown;
  /** The batch's transaction: each write's outcome, in order. */
  private readonly commit: (batch: Pending[]) => Outcome[];

  constructor(db: Database.Database) {
    this.inSavepoint = db.transaction((write: () => unknown) => write());
    const all = db.transaction((batch: Pending[]) =>
      batch.map((p): Outcome => {
        try {
          return { ok: true, value: this.inSavepoint(p.write) };
        } catch (err) {
          return { ok: false, err };
        }
      }),
    );
    this.commit = (batch) => all.immediate(batch);
  }

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
    let outcomes: Outcome[];
    try {
      outcomes = this.commit(batch);
    } catch (err) {
      // Nothing committed (busy past the timeout, disk full): every write fails as it would have alone.
      for (const p of batch) p.reject(err);
      return;
    }
    batch.forEach((p, i) => {
      const o = outcomes[i] as Outcome;
      if (o.ok) p.resolve(o.value);
      else p.reject(o.err);
    });
  }
}
