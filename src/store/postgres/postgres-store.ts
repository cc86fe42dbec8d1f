import pg from 'pg';
import type { RuntimeName } from '../../jobs/spec.js';
import { canTransition, type JobState } from '../../jobs/states.js';
import type { TaskHandle } from '../../runtimes/runtime.js';
import {
  IllegalTransition,
  type JobEvent,
  type JobFilter,
  type JobPatch,
  type JobRecord,
  type NewJob,
  type StartOutcome,
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
import { PG_MIGRATIONS } from './migrations.js';

/**
 * The store for several nodes: PostgreSQL. Nodes claim queued jobs with a conditional update
 * over `FOR UPDATE SKIP LOCKED` (two nodes never wait on, nor both win, the same job) and hold
 * them by lease; every transition is a transaction that locks the job's row.
 */
const BIGINT = 20;
const MIGRATION_LOCK = 0x626f78636172; // "boxcar"

type Queryable = pg.Pool | pg.PoolClient;

export class PostgresStore implements Store {
  private constructor(private readonly pool: pg.Pool) {}

  /** Connects and brings the schema up to date. */
  static async connect(url: string): Promise<PostgresStore> {
    const pool = new pg.Pool({
      connectionString: url,
      max: 8,
      // Millisecond timestamps and byte counts fit a double exactly.
      types: {
        getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
          oid === BIGINT ? Number : pg.types.getTypeParser(oid, format)) as typeof pg.types.getTypeParser,
      },
    });
    pool.on('error', () => undefined); // an idle client's connection dropped: the next query reconnects
    const store = new PostgresStore(pool);
    await store.migrate();
    return store;
  }

  private async migrate(): Promise<void> {
    await this.tx(async (c) => {
      await c.query('SELECT pg_advisory_xact_lock($1)', [MIGRATION_LOCK]);
      await c.query('CREATE TABLE IF NOT EXISTS boxcar_schema (version INTEGER NOT NULL)');
      const { rows } = await c.query<{ version: number }>('SELECT version FROM boxcar_schema');
      const version = rows[0]?.version ?? 0;
      for (let v = version; v < PG_MIGRATIONS.length; v++) await c.query(PG_MIGRATIONS[v] as string);
      if (rows.length === 0) await c.query('INSERT INTO boxcar_schema VALUES ($1)', [PG_MIGRATIONS.length]);
      else await c.query('UPDATE boxcar_schema SET version = $1', [PG_MIGRATIONS.length]);
    });
  }

  private async tx<T>(fn: (c: pg.PoolClient) => Promise<T>): Promise<T> {
    const c = await this.pool.connect();
    try {
      await c.query('BEGIN');
      const result = await fn(c);
      await c.query('COMMIT');
      return result;
    } catch (err) {
      await c.query('ROLLBACK').catch(() => undefined); // the connection may be the thing that failed
      throw err;
    } finally {
      c.release();
    }
  }

  private async one(q: Queryable, id: string): Promise<JobRecord | undefined> {
    const { rows } = await q.query<JobRow>('SELECT * FROM jobs WHERE id = $1', [id]);
    return rows[0] && toRecord(rows[0]);
  }

  async createJob(input: NewJob): Promise<JobRecord> {
    return this.tx(async (c) => {
      const now = Date.now();
      await c.query(
        `INSERT INTO jobs (id, tenant, name, state, runtime, spec, decision, owner, created_at, priority)
         VALUES ($1, $2, $3, 'queued', $4, $5, $6, $7, $8, $9)`,
        [
          input.id,
          input.tenant,
          input.spec.name,
          input.decision.runtime,
          JSON.stringify(input.spec),
          JSON.stringify(input.decision),
          input.owner,
          now,
          input.spec.priority,
        ],
      );
      await c.query(
        `INSERT INTO job_events (job_id, at, from_state, to_state, reason) VALUES ($1, $2, NULL, 'queued', $3)`,
        [input.id, now, input.decision.reasons.join('; ')],
      );
      return (await this.one(c, input.id)) as JobRecord;
    });
  }

  getJob(id: string): Promise<JobRecord | undefined> {
    return this.one(this.pool, id);
  }

  async listJobs(filter: JobFilter = {}): Promise<JobRecord[]> {
    const where: string[] = [];
    const args: unknown[] = [];
    if (filter.tenant) {
      args.push(filter.tenant);
      where.push(`tenant = $${args.length}`);
    }
    if (filter.states?.length) {
      args.push(filter.states);
      where.push(`state = ANY($${args.length})`);
    }
    args.push(filter.limit ?? 50);
    const { rows } = await this.pool.query<JobRow>(
      `SELECT * FROM jobs ${where.length ? `WHERE ${where.join(' AND ')}` : ''}
       ORDER BY created_at DESC, seq DESC LIMIT $${args.length}`,
      args,
    );
    return rows.map(toRecord);
  }

  /** One checked transition with its event, the job's row locked by the caller's transaction. */
  private async transitionIn(
    c: pg.PoolClient,
    id: string,
    to: JobState,
    patch: JobPatch,
    reason?: string,
  ): Promise<JobRecord> {
    const { rows } = await c.query<{ state: JobState }>('SELECT state FROM jobs WHERE id = $1 FOR UPDATE', [
      id,
    ]);
    const from = rows[0]?.state;
    if (!from) throw new Error(`job ${id} does not exist`);
    if (!canTransition(from, to)) throw new IllegalTransition(id, from, to);
    const { set, values } = transitionSet(to, patch, (n) => `$${n}`);
    values.push(id);
    await c.query(`UPDATE jobs SET ${set} WHERE id = $${values.length}`, values);
    await c.query(
      'INSERT INTO job_events (job_id, at, from_state, to_state, reason) VALUES ($1, $2, $3, $4, $5)',
      [id, Date.now(), from, to, reason ?? null],
    );
    return (await this.one(c, id)) as JobRecord;
  }

  transition(id: string, to: JobState, patch: JobPatch = {}, reason?: string): Promise<JobRecord> {
    return this.tx((c) => this.transitionIn(c, id, to, patch, reason));
  }

  async saveHandle(id: string, handle: TaskHandle): Promise<void> {
    await this.pool.query('UPDATE jobs SET handle = $1 WHERE id = $2', [JSON.stringify(handle), id]);
  }

  async events(id: string): Promise<JobEvent[]> {
    const { rows } = await this.pool.query<EventRow>(
      'SELECT job_id, at, from_state, to_state, reason FROM job_events WHERE job_id = $1 ORDER BY seq',
      [id],
    );
    return rows.map(toEvent);
  }

  async recentStarts(runtime: RuntimeName, limit: number): Promise<StartOutcome[]> {
    const { rows } = await this.pool.query<{ at: number; ok: boolean }>(
      `SELECT created_at AS at, started_at IS NOT NULL AS ok FROM jobs
       WHERE runtime = $1 AND (started_at IS NOT NULL OR state = 'error')
       ORDER BY created_at DESC LIMIT $2`,
      [runtime, limit],
    );
    return rows.reverse().map((r) => ({ at: r.at, ok: r.ok }));
  }

  async claimable(now: number, perTenant: number): Promise<JobRecord[]> {
    const { rows } = await this.pool.query<JobRow>(
      `SELECT * FROM (
         SELECT *, ROW_NUMBER() OVER (PARTITION BY tenant ORDER BY priority DESC, created_at, seq) AS n
         FROM jobs WHERE state = 'queued' AND not_before <= $1 AND (owner IS NULL OR lease_until < $1)) q
       WHERE n <= $2 ORDER BY priority DESC, created_at, seq`,
      [now, perTenant],
    );
    return rows.map(toRecord);
  }

  async claim(id: string, owner: string, leaseUntil: number): Promise<JobRecord | undefined> {
    const { rows } = await this.pool.query<JobRow>(
      `UPDATE jobs SET owner = $2, lease_until = $3
       WHERE id = (SELECT id FROM jobs WHERE id = $1 AND state = 'queued' AND NOT cancel_requested
                     AND (owner IS NULL OR lease_until < $4) FOR UPDATE SKIP LOCKED)
       RETURNING *`,
      [id, owner, leaseUntil, Date.now()],
    );
    return rows[0] && toRecord(rows[0]);
  }

  async renewLeases(owner: string, leaseUntil: number): Promise<void> {
    await this.pool.query(`UPDATE jobs SET lease_until = $1 WHERE owner = $2 AND ${LIVE}`, [
      leaseUntil,
      owner,
    ]);
  }

  async release(id: string, owner: string, waitReason: string | null): Promise<void> {
    await this.pool.query(
      `UPDATE jobs SET owner = NULL, lease_until = NULL, wait_reason = $1
       WHERE id = $2 AND owner = $3 AND state = 'queued'`,
      [waitReason, id, owner],
    );
  }

  requeue(id: string, notBefore: number, reason: string): Promise<JobRecord> {
    return this.tx(async (c) => {
      await this.transitionIn(c, id, 'queued', { owner: null, leaseUntil: null }, reason);
      await c.query(
        `UPDATE jobs SET attempts = attempts + 1, not_before = $1, handle = NULL, started_at = NULL,
           startup_ms = NULL, wait_reason = $2 WHERE id = $3`,
        [notBefore, reason, id],
      );
      return (await this.one(c, id)) as JobRecord;
    });
  }

  async expiredLeases(now: number, limit: number): Promise<JobRecord[]> {
    const { rows } = await this.pool.query<JobRow>(
      `SELECT * FROM jobs WHERE state IN ('starting', 'running') AND lease_until < $1
       ORDER BY lease_until LIMIT $2`,
      [now, limit],
    );
    return rows.map(toRecord);
  }

  async takeOver(id: string, from: string, owner: string, leaseUntil: number): Promise<boolean> {
    const r = await this.pool.query(
      `UPDATE jobs SET owner = $1, lease_until = $2 WHERE id = $3 AND owner = $4 AND ${LIVE}`,
      [owner, leaseUntil, id, from],
    );
    return r.rowCount === 1;
  }

  requestCancel(id: string): Promise<JobRecord> {
    return this.tx(async (c) => {
      const { rows } = await c.query<{ state: JobState }>('SELECT state FROM jobs WHERE id = $1 FOR UPDATE', [
        id,
      ]);
      const state = rows[0]?.state;
      if (!state) throw new Error(`job ${id} does not exist`);
      if (state === 'queued')
        return this.transitionIn(c, id, 'cancelled', { finishedAt: Date.now() }, 'cancelled while queued');
      if (state === 'starting' || state === 'running')
        await c.query('UPDATE jobs SET cancel_requested = TRUE WHERE id = $1', [id]);
      return (await this.one(c, id)) as JobRecord;
    });
  }

  async cancelRequests(owner: string): Promise<string[]> {
    const { rows } = await this.pool.query<{ id: string }>(
      `SELECT id FROM jobs WHERE owner = $1 AND cancel_requested AND ${LIVE}`,
      [owner],
    );
    return rows.map((r) => r.id);
  }

  async admittedUsage(): Promise<Map<string, Usage>> {
    const { rows } = await this.pool.query<UsageRow>(
      `SELECT tenant, COUNT(*)::bigint AS pods,
         SUM((spec->'requests'->>'memoryBytes')::bigint)::bigint AS rm,
         SUM((spec->'limits'->>'memoryBytes')::bigint)::bigint AS lm,
         SUM((spec->'requests'->>'cpuMillis')::bigint)::bigint AS rc,
         SUM((spec->'limits'->>'cpuMillis')::bigint)::bigint AS lc
       FROM jobs WHERE state IN ('starting', 'running')
         OR (state = 'queued' AND owner IS NOT NULL AND lease_until IS NOT NULL)
       GROUP BY tenant`,
    );
    return usageByTenant(rows);
  }

  async addToken(hash: string, tenant: string): Promise<void> {
    await this.pool.query('INSERT INTO tokens (hash, tenant, created_at) VALUES ($1, $2, $3)', [
      hash,
      tenant,
      Date.now(),
    ]);
  }

  async tenantOfToken(hash: string): Promise<string | undefined> {
    const { rows } = await this.pool.query<{ tenant: string }>('SELECT tenant FROM tokens WHERE hash = $1', [
      hash,
    ]);
    return rows[0]?.tenant;
  }

  async close(): Promise<void> {
    await this.pool.end();
  }
}
