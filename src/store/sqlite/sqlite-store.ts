import { mkdirSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import type { JobSpec, RuntimeName } from '../../jobs/spec.js';
import { canTransition, type JobState } from '../../jobs/states.js';
import type { Decision } from '../../policy/decision.js';
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
} from '../store.js';
import { MIGRATIONS } from './migrations.js';

/**
 * The embedded store: one SQLite file in the state directory, WAL mode so readers (`boxcar
 * jobs`) never block the writer. synchronous=NORMAL: every commit survives a crash or kill -9 of
 * Boxcar (it is in the WAL before the call returns); only a power loss can drop the last few,
 * and an fsync per transition would cost ~1 ms each on the job's start path.
 */
interface Row {
  id: string;
  tenant: string;
  name: string;
  state: string;
  runtime: string;
  spec: string;
  decision: string;
  handle: string | null;
  owner: string | null;
  created_at: number;
  started_at: number | null;
  finished_at: number | null;
  exit_code: number | null;
  oom_killed: number;
  timed_out: number;
  startup_ms: number | null;
  duration_ms: number | null;
  peak_memory_bytes: number | null;
  cpu_usage_ns: number | null;
  cost_dollars: number | null;
  error: string | null;
}

const PATCH_COLUMNS: Record<keyof JobPatch, string> = {
  exitCode: 'exit_code',
  oomKilled: 'oom_killed',
  timedOut: 'timed_out',
  startupMs: 'startup_ms',
  durationMs: 'duration_ms',
  peakMemoryBytes: 'peak_memory_bytes',
  cpuUsageNs: 'cpu_usage_ns',
  costDollars: 'cost_dollars',
  startedAt: 'started_at',
  finishedAt: 'finished_at',
  error: 'error',
  runtime: 'runtime',
  owner: 'owner',
};

function toRecord(r: Row): JobRecord {
  return {
    id: r.id,
    tenant: r.tenant,
    name: r.name,
    state: r.state as JobState,
    runtime: r.runtime as RuntimeName,
    spec: JSON.parse(r.spec) as JobSpec,
    decision: JSON.parse(r.decision) as Decision,
    handle: r.handle ? (JSON.parse(r.handle) as TaskHandle) : null,
    owner: r.owner,
    createdAt: r.created_at,
    startedAt: r.started_at,
    finishedAt: r.finished_at,
    exitCode: r.exit_code,
    oomKilled: r.oom_killed === 1,
    timedOut: r.timed_out === 1,
    startupMs: r.startup_ms,
    durationMs: r.duration_ms,
    peakMemoryBytes: r.peak_memory_bytes,
    cpuUsageNs: r.cpu_usage_ns,
    costDollars: r.cost_dollars,
    error: r.error,
  };
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
        this.db
          .prepare(
            `INSERT INTO jobs (id, tenant, name, state, runtime, spec, decision, owner, created_at)
           VALUES (?, ?, ?, 'queued', ?, ?, ?, ?, ?)`,
          )
          .run(
            input.id,
            input.tenant,
            input.spec.name,
            input.decision.runtime,
            JSON.stringify(input.spec),
            JSON.stringify(input.decision),
            input.owner,
            now,
          );
        this.db
          .prepare(
            `INSERT INTO job_events (job_id, at, from_state, to_state, reason) VALUES (?, ?, NULL, 'queued', ?)`,
          )
          .run(input.id, now, input.decision.reasons.join('; '));
      })
      .immediate();
    return (await this.getJob(input.id)) as JobRecord;
  }

  async getJob(id: string): Promise<JobRecord | undefined> {
    const row = this.db.prepare('SELECT * FROM jobs WHERE id = ?').get(id) as Row | undefined;
    return row && toRecord(row);
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
    return (this.db.prepare(sql).all(...args, filter.limit ?? 50) as Row[]).map(toRecord);
  }

  async transition(id: string, to: JobState, patch: JobPatch = {}, reason?: string): Promise<JobRecord> {
    const now = Date.now();
    this.db
      .transaction(() => {
        const row = this.db.prepare('SELECT state FROM jobs WHERE id = ?').get(id) as
          { state: JobState } | undefined;
        if (!row) throw new Error(`job ${id} does not exist`);
        if (!canTransition(row.state, to)) throw new IllegalTransition(id, row.state, to);
        const sets = ['state = ?'];
        const values: unknown[] = [to];
        for (const [key, value] of Object.entries(patch)) {
          const column = PATCH_COLUMNS[key as keyof JobPatch];
          if (!column) throw new Error(`unknown job field ${key}`);
          sets.push(`${column} = ?`);
          values.push(typeof value === 'boolean' ? Number(value) : value);
        }
        this.db.prepare(`UPDATE jobs SET ${sets.join(', ')} WHERE id = ?`).run(...values, id);
        this.db
          .prepare('INSERT INTO job_events (job_id, at, from_state, to_state, reason) VALUES (?, ?, ?, ?, ?)')
          .run(id, now, row.state, to, reason ?? null);
      })
      .immediate();
    return (await this.getJob(id)) as JobRecord;
  }

  async saveHandle(id: string, handle: TaskHandle): Promise<void> {
    this.db.prepare('UPDATE jobs SET handle = ? WHERE id = ?').run(JSON.stringify(handle), id);
  }

  async events(id: string): Promise<JobEvent[]> {
    const rows = this.db
      .prepare(
        'SELECT job_id, at, from_state, to_state, reason FROM job_events WHERE job_id = ? ORDER BY seq',
      )
      .all(id) as Array<{
      job_id: string;
      at: number;
      from_state: string | null;
      to_state: string;
      reason: string | null;
    }>;
    return rows.map((r) => ({
      jobId: r.job_id,
      at: r.at,
      from: r.from_state as JobState | null,
      to: r.to_state as JobState,
      reason: r.reason,
    }));
  }

  async recentStarts(runtime: RuntimeName, limit: number): Promise<StartOutcome[]> {
    const rows = this.db
      .prepare(
        `SELECT created_at AS at, started_at IS NOT NULL AS ok FROM jobs
         WHERE runtime = ? AND (started_at IS NOT NULL OR state = 'error')
         ORDER BY created_at DESC LIMIT ?`,
      )
      .all(runtime, limit) as Array<{ at: number; ok: number }>;
    return rows.reverse().map((r) => ({ at: r.at, ok: r.ok === 1 }));
  }

  async close(): Promise<void> {
    this.db.close();
  }
}
