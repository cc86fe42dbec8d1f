import { mkdirSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import type { RuntimeName } from '../../jobs/spec.js';
import { canTransition, type JobState } from '../../jobs/states.js';
import type { TaskHandle } from '../../runtimes/runtime.js';
import {
  type StartOutcome,
  IllegalTransition,
  type JobEvent,
  type JobFilter,
  type JobPatch,
  type JobRecord,
  type NewJob,
  type Store,
  type Usage,
} from '../store.js';
import {
  LIVE,
  toEvent,
  toRecord,
  transitionSet,
  usageByTenant,
  type EventRow,
  type JobRow,
  type UsageRow,
} from '../job-row.js';
import { MIGRATIONS } from './migrations.js';

/**
 * The embedded store: one SQLite file in the state directory, WAL mode so readers (`boxcar
 * jobs`) never block the writer. synchronous=NORMAL: every commit survives a crash or kill -9 of
 * Boxcar (it is in the WAL before the call returns); only a power loss can drop the last few,
 * and an fsync per transition would cost ~1 ms each on the job's start path.
 */
/** A row as SQLite returns it: JSON as text, booleans as 0/1. */
type Row = Omit<JobRow, 'spec' | 'decision' | 'handle' | 'oom_killed' | 'timed_out' | 'cancel_requested'> & {
  spec: string;
  decision: string;
  handle: string | null;
  oom_killed: number;
  timed_out: number;
  cancel_requested: number;
};

function decode(r: Row): JobRecord {
  return toRecord({
    ...r,
    spec: JSON.parse(r.spec) as JobRow['spec'],
    decision: JSON.parse(r.decision) as JobRow['decision'],
    handle: r.handle ? (JSON.parse(r.handle) as JobRow['handle']) : null,
    oom_killed: r.oom_killed === 1,
    timed_out: r.timed_out === 1,
    cancel_requested: r.cancel_requested === 1,
  });
}

export class SqliteStore implements Store {
  private readonly db: Database.Database;

  constructor(file: string) {
    mkdirSync(path.dirname(file), { recursive: true });
    this.db = new Database(file);
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = NORMAL');
    this.db.pragma('foreign_keys = ON');
    this.db.pragma('busy_timeout = 10000');
    this.migrate();
  }

  private readonly statements = new Map<string, Database.Statement>();

  /** A prepared statement, compiled once per SQL text (the dynamic ones have few variants). */
  private sql(text: string): Database.Statement {
    let st = this.statements.get(text);
    if (!st) {
      st = this.db.prepare(text);
      this.statements.set(text, st);
    }
    return st;
  }

  private migrate(): void {
    const version = this.db.pragma('user_version', { simple: true }) as number;
    const apply = this.db.transaction(() => {
      for (let v = version; v < MIGRATIONS.length; v++) this.db.exec(MIGRATIONS[v] as string);
      this.db.pragma(`user_version = ${MIGRATIONS.length}`);
    });
    if (version < MIGRATIONS.length) apply.immediate();
  }

  async createJob(input: NewJob): Promise<JobRecord> {
    const now = Date.now();
    this.db
      .transaction(() => {
        this.sql(
          `INSERT INTO jobs (id, tenant, name, state, runtime, spec, decision, owner, created_at, priority)
           VALUES (?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?)`,
        ).run(
          input.id,
          input.tenant,
          input.spec.name,
          input.decision.runtime,
          JSON.stringify(input.spec),
          JSON.stringify(input.decision),
          input.owner,
          now,
          input.spec.priority,
        );
        this.sql(
          `INSERT INTO job_events (job_id, at, from_state, to_state, reason) VALUES (?, ?, NULL, 'queued', ?)`,
        ).run(input.id, now, input.decision.reasons.join('; '));
      })
      .immediate();
    return (await this.getJob(input.id)) as JobRecord;
  }

  async getJob(id: string): Promise<JobRecord | undefined> {
    const row = this.sql('SELECT * FROM jobs WHERE id = ?').get(id) as Row | undefined;
    return row && decode(row);
  }

  async listJobs(filter: JobFilter = {}): Promise<JobRecord[]> {
    const where: string[] = [];
    const args: unknown[] = [];
    if (filter.tenant) {
      where.push('tenant = ?');
      args.push(filter.tenant);
    }
    if (filter.states?.length) {
      where.push(`state IN (${filter.states.map(() => '?').join(', ')})`);
      args.push(...filter.states);
    }
    const sql = `SELECT * FROM jobs ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY created_at DESC, rowid DESC LIMIT ?`;
    return (this.sql(sql).all(...args, filter.limit ?? 50) as Row[]).map(decode);
  }

  async transition(id: string, to: JobState, patch: JobPatch = {}, reason?: string): Promise<JobRecord> {
    return this.db.transaction(() => this.transitionNow(id, to, patch, reason)).immediate();
  }

  private getRow(id: string): JobRecord {
    const row = this.sql('SELECT * FROM jobs WHERE id = ?').get(id) as Row | undefined;
    if (!row) throw new Error(`job ${id} does not exist`);
    return decode(row);
  }

  /** One checked transition with its event; the caller holds the transaction. */
  private transitionNow(id: string, to: JobState, patch: JobPatch, reason?: string): JobRecord {
    const row = this.sql('SELECT state FROM jobs WHERE id = ?').get(id) as { state: JobState } | undefined;
    if (!row) throw new Error(`job ${id} does not exist`);
    if (!canTransition(row.state, to)) throw new IllegalTransition(id, row.state, to);
    const { set, values } = transitionSet(
      to,
      patch,
      () => '?',
      (v) => (typeof v === 'boolean' ? Number(v) : v),
    );
    this.sql(`UPDATE jobs SET ${set} WHERE id = ?`).run(...values, id);
    this.sql('INSERT INTO job_events (job_id, at, from_state, to_state, reason) VALUES (?, ?, ?, ?, ?)').run(
      id,
      Date.now(),
      row.state,
      to,
      reason ?? null,
    );
    return this.getRow(id);
  }

  async saveHandle(id: string, handle: TaskHandle): Promise<void> {
    this.sql('UPDATE jobs SET handle = ? WHERE id = ?').run(JSON.stringify(handle), id);
  }

  async events(id: string): Promise<JobEvent[]> {
    const rows = this.sql(
      'SELECT job_id, at, from_state, to_state, reason FROM job_events WHERE job_id = ? ORDER BY seq',
    ).all(id) as EventRow[];
    return rows.map(toEvent);
  }

  async recentStarts(runtime: RuntimeName, limit: number): Promise<StartOutcome[]> {
    const rows = this.sql(
      `SELECT created_at AS at, started_at IS NOT NULL AS ok FROM jobs
         WHERE runtime = ? AND (started_at IS NOT NULL OR state = 'error')
         ORDER BY created_at DESC LIMIT ?`,
    ).all(runtime, limit) as Array<{ at: number; ok: number }>;
    return rows.reverse().map((r) => ({ at: r.at, ok: r.ok === 1 }));
  }

  async claimable(now: number, perTenant: number): Promise<JobRecord[]> {
    const rows = this.sql(
      `SELECT * FROM (
           SELECT jobs.rowid AS seq, *,
             ROW_NUMBER() OVER (PARTITION BY tenant ORDER BY priority DESC, created_at, jobs.rowid) AS n
           FROM jobs WHERE state = 'queued' AND not_before <= ? AND (owner IS NULL OR lease_until < ?))
         WHERE n <= ? ORDER BY priority DESC, created_at, seq`,
    ).all(now, now, perTenant) as Row[];
    return rows.map(decode);
  }

  async claim(id: string, owner: string, leaseUntil: number): Promise<JobRecord | undefined> {
    const now = Date.now();
    const taken = this.sql(
      `UPDATE jobs SET owner = ?, lease_until = ? WHERE id = ? AND state = 'queued'
           AND cancel_requested = 0 AND (owner IS NULL OR lease_until < ?)`,
    ).run(owner, leaseUntil, id, now);
    return taken.changes === 1 ? this.getJob(id) : undefined;
  }

  async renewLeases(owner: string, leaseUntil: number): Promise<void> {
    this.sql(`UPDATE jobs SET lease_until = ? WHERE owner = ? AND ${LIVE}`).run(leaseUntil, owner);
  }

  async release(id: string, owner: string, waitReason: string | null): Promise<void> {
    this.sql(
      `UPDATE jobs SET owner = NULL, lease_until = NULL, wait_reason = ?
         WHERE id = ? AND owner = ? AND state = 'queued'`,
    ).run(waitReason, id, owner);
  }

  async requeue(id: string, notBefore: number, reason: string): Promise<JobRecord> {
    return this.db
      .transaction(() => {
        this.transitionNow(id, 'queued', { owner: null, leaseUntil: null }, reason);
        this.sql(
          `UPDATE jobs SET attempts = attempts + 1, not_before = ?, handle = NULL, started_at = NULL,
               startup_ms = NULL, wait_reason = ? WHERE id = ?`,
        ).run(notBefore, reason, id);
        return this.getRow(id);
      })
      .immediate();
  }

  async expiredLeases(now: number, limit: number): Promise<JobRecord[]> {
    const rows = this.sql(
      `SELECT * FROM jobs WHERE state IN ('starting', 'running') AND lease_until < ?
         ORDER BY lease_until LIMIT ?`,
    ).all(now, limit) as Row[];
    return rows.map(decode);
  }

  async takeOver(id: string, from: string, owner: string, leaseUntil: number): Promise<boolean> {
    const r = this.sql(
      `UPDATE jobs SET owner = ?, lease_until = ? WHERE id = ? AND owner = ? AND ${LIVE}`,
    ).run(owner, leaseUntil, id, from);
    return r.changes === 1;
  }

  async requestCancel(id: string): Promise<JobRecord> {
    return this.db
      .transaction(() => {
        const job = this.getRow(id);
        if (job.state === 'queued')
          return this.transitionNow(id, 'cancelled', { finishedAt: Date.now() }, 'cancelled while queued');
        if (job.state === 'starting' || job.state === 'running') {
          this.sql('UPDATE jobs SET cancel_requested = 1 WHERE id = ?').run(id);
          return this.getRow(id);
        }
        return job;
      })
      .immediate();
  }

  async cancelRequests(owner: string): Promise<string[]> {
    const rows = this.sql(`SELECT id FROM jobs WHERE owner = ? AND cancel_requested = 1 AND ${LIVE}`).all(
      owner,
    ) as Array<{ id: string }>;
    return rows.map((r) => r.id);
  }

  async admittedUsage(): Promise<Map<string, Usage>> {
    const rows = this.sql(
      `SELECT tenant, COUNT(*) AS pods,
           SUM(json_extract(spec, '$.requests.memoryBytes')) AS rm,
           SUM(json_extract(spec, '$.limits.memoryBytes')) AS lm,
           SUM(json_extract(spec, '$.requests.cpuMillis')) AS rc,
           SUM(json_extract(spec, '$.limits.cpuMillis')) AS lc
         FROM jobs WHERE state IN ('starting', 'running')
           OR (state = 'queued' AND owner IS NOT NULL AND lease_until IS NOT NULL)
         GROUP BY tenant`,
    ).all() as UsageRow[];
    return usageByTenant(rows);
  }

  async addToken(hash: string, tenant: string): Promise<void> {
    this.sql('INSERT INTO tokens (hash, tenant, created_at) VALUES (?, ?, ?)').run(hash, tenant, Date.now());
  }

  async tenantOfToken(hash: string): Promise<string | undefined> {
    const row = this.sql('SELECT tenant FROM tokens WHERE hash = ?').get(hash) as
      { tenant: string } | undefined;
    return row?.tenant;
  }

  async close(): Promise<void> {
    this.db.close();
  }
}
