import pg from 'pg';
import type { RuntimeName } from '../../jobs/spec.js';
import { canTransition, type JobState } from '../../jobs/states.js';
import type { TaskHandle } from '../../jobs/handle.js';
import { nextAuditRecord } from '../audit-chain.js';
import {
  IllegalTransition,
  type ApiToken,
  type BlobHolding,
  type Peer,
  type PieceClaim,
  type AuditEntry,
  type AuditFilter,
  type AuditRecord,
  type Delivery,
  type JobEvent,
  type JobFilter,
  type JobPatch,
  type JobRecord,
  type NewDelivery,
  type NewPipeline,
  type PipelineFilter,
  type PipelinePatch,
  type PipelineRecord,
  type RequeueOptions,
  type Fence,
  checkFence,
  ZERO_USAGE,
  CANCELLED_AT_REQUEUE,
  type NewJob,
  type SealedSecret,
  type SecretInfo,
  type SecretScope,
  type StartOutcome,
  type Store,
  type Usage,
} from '../store.js';
import {
  INSERT_JOB_COLUMNS,
  LIVE,
  newJobValues,
  secretAudit,
  submittedAudit,
  toAuditRecord,
  toDelivery,
  toEvent,
  toRecord,
  toSealed,
  toSecretInfo,
  toToken,
  transitionSet,
  usageByTenant,
  type AuditRow,
  type DeliveryRow,
  type EventRow,
  type JobRow,
  type SecretRow,
  type TokenRow,
  type UsageRow,
} from '../job-row.js';
import { PG_MIGRATIONS } from './migrations.js';
import { pipelinePatchColumns, toPipeline, type PipelineRow } from '../pipeline-row.js';
import {
  PEER_FORGET_MS,
  toHolder,
  toPeer,
  toPieceClaim,
  type HolderRow,
  type PeerRow,
  type PieceRow,
} from '../peer-row.js';

const BIGINT = 20;
const MIGRATION_LOCK = 0x626f78636172; // "boxcar"
/** Held while appending to the audit trail: its hash chain has one head. */
const AUDIT_LOCK = 0x626f78617564; // "boxaud"

type Queryable = pg.Pool | pg.PoolClient;

/** How often the offset between this node's clock and the database's is measured again. */
const CLOCK_REFRESH_MS = 5000;

/** Admitted (claimed, starting, running) jobs' requests and limits per tenant; `and` narrows it. */
const usageSql = (and: string) =>
  `SELECT tenant, COUNT(*)::bigint AS pods,
     SUM((spec->'requests'->>'memoryBytes')::bigint)::bigint AS rm,
     SUM((spec->'limits'->>'memoryBytes')::bigint)::bigint AS lm,
     SUM((spec->'requests'->>'cpuMillis')::bigint)::bigint AS rc,
     SUM((spec->'limits'->>'cpuMillis')::bigint)::bigint AS lc
   FROM jobs WHERE (state IN ('starting', 'running')
     OR (state = 'queued' AND owner IS NOT NULL AND lease_until IS NOT NULL)) ${and}
   GROUP BY tenant`;

/**
 * The store for several nodes: PostgreSQL. Nodes claim queued jobs with a conditional update
 * over `FOR UPDATE SKIP LOCKED` (two nodes never wait on, nor both win, the same job) and hold
 * them by lease; every transition is a transaction that locks the job's row.
 */
export class PostgresStore implements Store {
  private clock = { offset: 0, measuredAt: 0 };

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

  /**
   * A time of this node's clock as the database's: every lease and retry time in the store is
   * the database's (its `clock_timestamp()`), so nodes whose clocks disagree still agree on
   * whose lease ran out. The offset is measured at most every few seconds.
   */
  private async dbTime(local: number): Promise<number> {
    if (Date.now() - this.clock.measuredAt > CLOCK_REFRESH_MS) {
      const before = Date.now();
      const { rows } = await this.pool.query<{ now: string }>(
        'SELECT (extract(epoch from clock_timestamp()) * 1000)::bigint AS now',
      );
      const after = Date.now();
      this.clock = { offset: Number(rows[0]?.now) - (before + after) / 2, measuredAt: after };
    }
    return Math.round(local + this.clock.offset);
  }

  private async one(q: Queryable, id: string): Promise<JobRecord | undefined> {
    const { rows } = await q.query<JobRow>('SELECT * FROM jobs WHERE id = $1', [id]);
    return rows[0] && toRecord(rows[0]);
  }

  async createJob(input: NewJob): Promise<JobRecord> {
    return this.tx(async (c) => {
      const now = Date.now();
      const values = newJobValues(input, now);
      await c.query(
        `INSERT INTO jobs (${INSERT_JOB_COLUMNS}) VALUES (${values.map((_, i) => `$${i + 1}`).join(', ')})`,
        values,
      );
      await c.query(
        `INSERT INTO job_events (job_id, at, from_state, to_state, reason) VALUES ($1, $2, NULL, 'queued', $3)`,
        [input.id, now, input.decision.reasons.join('; ')],
      );
      await this.appendAudit(c, submittedAudit(input), now);
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
    if (filter.group) {
      args.push(filter.group);
      where.push(`group_key = $${args.length}`);
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
    fence?: Fence,
  ): Promise<JobRecord> {
    const { rows } = await c.query<{ state: JobState; owner: string | null; attempts: number }>(
      'SELECT state, owner, attempts FROM jobs WHERE id = $1 FOR UPDATE',
      [id],
    );
    const from = rows[0]?.state;
    if (!from) throw new Error(`job ${id} does not exist`);
    checkFence(id, rows[0] as NonNullable<(typeof rows)[0]>, to, fence);
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

  transition(
    id: string,
    to: JobState,
    patch: JobPatch = {},
    reason?: string,
    audit?: AuditEntry,
    fence?: Fence,
  ): Promise<JobRecord> {
    return this.tx(async (c) => {
      const record = await this.transitionIn(c, id, to, patch, reason, fence);
      if (audit) await this.appendAudit(c, audit, Date.now());
      return record;
    });
  }

  /** Appends one audit record after the last, under the chain's lock, in the caller's transaction. */
  private async appendAudit(c: pg.PoolClient, entry: AuditEntry, at: number): Promise<void> {
    await c.query('SELECT pg_advisory_xact_lock($1)', [AUDIT_LOCK]);
    const { rows } = await c.query<{ seq: number; hash: string }>(
      'SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1',
    );
    const r = nextAuditRecord(rows[0], entry, at);
    await c.query(
      `INSERT INTO audit (seq, at, tenant, actor, action, subject, detail, prev_hash, hash)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
      [r.seq, r.at, r.tenant, r.actor, r.action, r.subject, r.detail, r.prevHash, r.hash],
    );
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
       WHERE runtime = $1 AND (started_at IS NOT NULL OR infra_failure)
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
      [await this.dbTime(now), perTenant],
    );
    return rows.map(toRecord);
  }

  async claim(id: string, owner: string, leaseUntil: number): Promise<JobRecord | undefined> {
    return this.claimIn(this.pool, id, owner, leaseUntil);
  }

  private async claimIn(
    q: Queryable,
    id: string,
    owner: string,
    leaseUntil: number,
  ): Promise<JobRecord | undefined> {
    const { rows } = await q.query<JobRow>(
      `UPDATE jobs SET owner = $2, lease_until = $3
       WHERE id = (SELECT id FROM jobs WHERE id = $1 AND state = 'queued' AND NOT cancel_requested
                     AND (owner IS NULL OR lease_until < $4) FOR UPDATE SKIP LOCKED)
       RETURNING *`,
      [id, owner, await this.dbTime(leaseUntil), await this.dbTime(Date.now())],
    );
    return rows[0] && toRecord(rows[0]);
  }

  claimWithinQuota(
    id: string,
    owner: string,
    leaseUntil: number,
    check: (used: Usage) => string | undefined,
  ): Promise<JobRecord | { refused: string } | undefined> {
    return this.tx(async (c) => {
      const { rows } = await c.query<{ tenant: string }>('SELECT tenant FROM jobs WHERE id = $1', [id]);
      const tenant = rows[0]?.tenant;
      if (tenant === undefined) return undefined;
      // One admission per tenant at a time across nodes; released at the transaction's end.
      await c.query('SELECT pg_advisory_xact_lock(hashtext($1))', [`boxcar-quota:${tenant}`]);
      const usage = usageByTenant((await c.query<UsageRow>(usageSql('AND tenant = $1'), [tenant])).rows);
      const refused = check(usage.get(tenant) ?? ZERO_USAGE);
      if (refused) return { refused };
      return this.claimIn(c, id, owner, leaseUntil);
    });
  }

  async renewLeases(owner: string, leaseUntil: number): Promise<string[]> {
    const { rows } = await this.pool.query<{ id: string }>(
      `UPDATE jobs SET lease_until = $1 WHERE owner = $2 AND ${LIVE} RETURNING id`,
      [await this.dbTime(leaseUntil), owner],
    );
    return rows.map((r) => r.id);
  }

  async release(id: string, owner: string, waitReason: string | null): Promise<void> {
    await this.pool.query(
      `UPDATE jobs SET owner = NULL, lease_until = NULL, wait_reason = $1
       WHERE id = $2 AND owner = $3 AND state = 'queued'`,
      [waitReason, id, owner],
    );
  }

  requeue(id: string, notBefore: number, reason: string, opts: RequeueOptions = {}): Promise<JobRecord> {
    return this.tx(async (c) => {
      const { rows } = await c.query<{
        state: JobState;
        owner: string | null;
        lease_until: string | null;
        cancel_requested: boolean;
        attempts: number;
      }>('SELECT state, owner, lease_until, cancel_requested, attempts FROM jobs WHERE id = $1 FOR UPDATE', [
        id,
      ]);
      const now = rows[0];
      if (!now) throw new Error(`job ${id} does not exist`);
      const lease = now.lease_until === null ? null : Number(now.lease_until);
      if (opts.expect && (now.owner !== opts.expect.owner || lease !== opts.expect.leaseUntil))
        throw new IllegalTransition(id, now.state, 'queued');
      checkFence(id, now, 'queued', opts.fence);
      if (now.cancel_requested)
        return this.transitionIn(
          c,
          id,
          'cancelled',
          { finishedAt: Date.now(), owner: null, leaseUntil: null },
          CANCELLED_AT_REQUEUE,
        );
      const patch: JobPatch = { owner: null, leaseUntil: null };
      if (opts.infraFailure) patch.infraFailure = true;
      await this.transitionIn(c, id, 'queued', patch, reason);
      await c.query(
        `UPDATE jobs SET attempts = attempts + 1, not_before = $1, handle = NULL, started_at = NULL,
           startup_ms = NULL, wait_reason = $2 WHERE id = $3`,
        [await this.dbTime(notBefore), reason, id],
      );
      return (await this.one(c, id)) as JobRecord;
    });
  }

  async expiredLeases(now: number, limit: number): Promise<JobRecord[]> {
    const { rows } = await this.pool.query<JobRow>(
      `SELECT * FROM jobs WHERE state IN ('starting', 'running') AND lease_until < $1
       ORDER BY lease_until LIMIT $2`,
      [await this.dbTime(now), limit],
    );
    return rows.map(toRecord);
  }

  async takeOver(id: string, from: string, owner: string, leaseUntil: number): Promise<boolean> {
    const r = await this.pool.query(
      `UPDATE jobs SET owner = $1, lease_until = $2 WHERE id = $3 AND owner = $4 AND ${LIVE}`,
      [owner, await this.dbTime(leaseUntil), id, from],
    );
    return r.rowCount === 1;
  }

  requestCancel(id: string, actor: string, reason = 'cancel requested'): Promise<JobRecord> {
    return this.tx(async (c) => {
      const { rows } = await c.query<{ state: JobState; tenant: string }>(
        'SELECT state, tenant FROM jobs WHERE id = $1 FOR UPDATE',
        [id],
      );
      const job = rows[0];
      if (!job) throw new Error(`job ${id} does not exist`);
      if (job.state !== 'queued' && job.state !== 'starting' && job.state !== 'running')
        return (await this.one(c, id)) as JobRecord;
      await this.appendAudit(
        c,
        {
          tenant: job.tenant,
          actor,
          action: 'job.cancel',
          subject: id,
          detail: { state: job.state, reason },
        },
        Date.now(),
      );
      if (job.state === 'queued')
        return this.transitionIn(c, id, 'cancelled', { finishedAt: Date.now() }, `${reason} while queued`);
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
    const { rows } = await this.pool.query<UsageRow>(usageSql(''));
    return usageByTenant(rows);
  }

  async queuedByRuntime(): Promise<Map<RuntimeName, number>> {
    const { rows } = await this.pool.query<{ runtime: RuntimeName; n: string }>(
      `SELECT runtime, COUNT(*) AS n FROM jobs WHERE state = 'queued' GROUP BY runtime`,
    );
    return new Map(rows.map((r) => [r.runtime, Number(r.n)]));
  }

  async countJobs(tenant: string, states: JobState[]): Promise<number> {
    const { rows } = await this.pool.query<{ n: number }>(
      'SELECT COUNT(*)::bigint AS n FROM jobs WHERE tenant = $1 AND state = ANY($2)',
      [tenant, states],
    );
    return rows[0]?.n ?? 0;
  }

  addToken(t: ApiToken, actor: string): Promise<void> {
    return this.tx(async (c) => {
      const now = Date.now();
      await c.query('INSERT INTO tokens (hash, id, tenant, role, created_at) VALUES ($1, $2, $3, $4, $5)', [
        t.hash,
        t.id,
        t.tenant,
        t.role,
        now,
      ]);
      await this.appendAudit(
        c,
        { tenant: t.tenant, actor, action: 'token.created', subject: t.id, detail: { role: t.role } },
        now,
      );
    });
  }

  async tokenByHash(hash: string): Promise<ApiToken | undefined> {
    const { rows } = await this.pool.query<TokenRow>(
      'SELECT hash, id, tenant, role FROM tokens WHERE hash = $1',
      [hash],
    );
    return rows[0] && toToken(rows[0]);
  }

  putSecret(s: SealedSecret, actor: string): Promise<void> {
    return this.tx(async (c) => {
      const now = Date.now();
      await c.query(
        `INSERT INTO secrets (tenant, repository, name, key_id, nonce, ciphertext, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7)
         ON CONFLICT (tenant, repository, name) DO UPDATE SET
           key_id = EXCLUDED.key_id, nonce = EXCLUDED.nonce, ciphertext = EXCLUDED.ciphertext,
           updated_at = EXCLUDED.updated_at`,
        [s.tenant, s.repository, s.name, s.keyId, s.nonce, s.ciphertext, now],
      );
      await this.appendAudit(c, secretAudit(s, 'secret.set', actor), now);
    });
  }

  deleteSecret(scope: SecretScope, actor: string): Promise<boolean> {
    return this.tx(async (c) => {
      const r = await c.query('DELETE FROM secrets WHERE tenant = $1 AND repository = $2 AND name = $3', [
        scope.tenant,
        scope.repository,
        scope.name,
      ]);
      if (r.rowCount === 1)
        await this.appendAudit(c, secretAudit(scope, 'secret.removed', actor), Date.now());
      return r.rowCount === 1;
    });
  }

  async listSecrets(tenant: string): Promise<SecretInfo[]> {
    const { rows } = await this.pool.query<SecretRow>(
      'SELECT * FROM secrets WHERE tenant = $1 ORDER BY repository, name',
      [tenant],
    );
    return rows.map(toSecretInfo);
  }

  async secretsFor(tenant: string, repositories: string[], names: string[]): Promise<SealedSecret[]> {
    if (!names.length) return [];
    const { rows } = await this.pool.query<SecretRow>(
      'SELECT * FROM secrets WHERE tenant = $1 AND repository = ANY($2) AND name = ANY($3)',
      [tenant, ['', ...repositories], names],
    );
    return rows.map(toSealed);
  }

  audit(entry: AuditEntry): Promise<void> {
    return this.tx((c) => this.appendAudit(c, entry, Date.now()));
  }

  async auditRecords(filter: AuditFilter): Promise<AuditRecord[]> {
    const args: unknown[] = [filter.afterSeq ?? 0];
    const where = ['seq > $1'];
    if (filter.tenant !== undefined) {
      args.push(filter.tenant);
      where.push(`tenant = $${args.length}`);
    }
    if (filter.since !== undefined) {
      args.push(filter.since);
      where.push(`at >= $${args.length}`);
    }
    args.push(filter.limit);
    const { rows } = await this.pool.query<AuditRow>(
      `SELECT * FROM audit WHERE ${where.join(' AND ')} ORDER BY seq LIMIT $${args.length}`,
      args,
    );
    return rows.map(toAuditRecord);
  }

  async addDelivery(d: NewDelivery): Promise<boolean> {
    const r = await this.pool.query(
      `INSERT INTO deliveries (id, forge, tenant, event, received_at) VALUES ($1, $2, $3, $4, $5)
       ON CONFLICT (id) DO NOTHING`,
      [d.id, d.forge, d.tenant, JSON.stringify(d.event), d.receivedAt],
    );
    return r.rowCount === 1;
  }

  async claimDeliveries(owner: string, leaseUntil: number, limit: number): Promise<Delivery[]> {
    const { rows } = await this.pool.query<DeliveryRow>(
      `UPDATE deliveries SET owner = $1, lease_until = $2, attempts = attempts + 1
       WHERE id IN (SELECT id FROM deliveries WHERE state = 'pending' AND (owner IS NULL OR lease_until < $3)
                    ORDER BY received_at LIMIT $4 FOR UPDATE SKIP LOCKED)
       RETURNING *`,
      [owner, await this.dbTime(leaseUntil), await this.dbTime(Date.now()), limit],
    );
    return rows.map(toDelivery);
  }

  async settleDelivery(
    id: string,
    state: 'done' | 'failed',
    outcome: { jobs?: string[]; error?: string },
  ): Promise<void> {
    await this.pool.query(
      'UPDATE deliveries SET state = $1, jobs = $2, error = $3, owner = NULL, lease_until = NULL WHERE id = $4',
      [state, JSON.stringify(outcome.jobs ?? []), outcome.error ?? null, id],
    );
  }

  async getDelivery(id: string): Promise<Delivery | undefined> {
    const { rows } = await this.pool.query<DeliveryRow>('SELECT * FROM deliveries WHERE id = $1', [id]);
    return rows[0] && toDelivery(rows[0]);
  }

  async pruneDeliveries(before: number): Promise<number> {
    const r = await this.pool.query('DELETE FROM deliveries WHERE received_at < $1', [before]);
    return r.rowCount ?? 0;
  }

  async createPipeline(p: NewPipeline): Promise<PipelineRecord> {
    const { rows } = await this.pool.query<PipelineRow>(
      `INSERT INTO pipelines (id, tenant, name, state, plan, origin, classifier, jobs, created_at)
       VALUES ($1, $2, $3, 'running', $4, $5, $6, '{}', $7) RETURNING *`,
      [
        p.id,
        p.tenant,
        p.name,
        JSON.stringify(p.plan),
        JSON.stringify(p.origin),
        p.classifier ? JSON.stringify(p.classifier) : null,
        p.createdAt,
      ],
    );
    return toPipeline(rows[0] as PipelineRow);
  }

  async getPipeline(id: string): Promise<PipelineRecord | undefined> {
    const { rows } = await this.pool.query<PipelineRow>('SELECT * FROM pipelines WHERE id = $1', [id]);
    return rows[0] && toPipeline(rows[0]);
  }

  async listPipelines(filter: PipelineFilter = {}): Promise<PipelineRecord[]> {
    const where: string[] = [];
    const args: unknown[] = [];
    if (filter.tenant) where.push(`tenant = $${args.push(filter.tenant)}`);
    if (filter.states?.length) where.push(`state = ANY($${args.push(filter.states)})`);
    const { rows } = await this.pool.query<PipelineRow>(
      `SELECT * FROM pipelines ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY created_at DESC, id LIMIT $${args.push(filter.limit ?? 50)}`,
      args,
    );
    return rows.map(toPipeline);
  }

  async updatePipeline(
    id: string,
    version: number,
    patch: PipelinePatch,
  ): Promise<PipelineRecord | undefined> {
    const cols = pipelinePatchColumns(patch);
    const sets = cols.map(([c], i) => `${c} = $${i + 1}`);
    const { rows } = await this.pool.query<PipelineRow>(
      `UPDATE pipelines SET ${[...sets, 'version = version + 1'].join(', ')}
       WHERE id = $${cols.length + 1} AND version = $${cols.length + 2} RETURNING *`,
      [...cols.map(([, v]) => v), id, version],
    );
    return rows[0] && toPipeline(rows[0]);
  }

  async popularImages(since: number, limit: number): Promise<string[]> {
    const { rows } = await this.pool.query<{ image: string }>(
      `SELECT spec->>'image' AS image FROM jobs
       WHERE (created_at >= $1 OR state = 'queued') AND spec->>'image' LIKE '%@sha256:%'
       GROUP BY image ORDER BY bool_or(state = 'queued') DESC, COUNT(*) DESC, MAX(created_at) DESC LIMIT $2`,
      [since, limit],
    );
    return rows.map((r) => r.image);
  }

  async announcePeer(p: Peer): Promise<void> {
    await this.pool.query(
      `INSERT INTO peers (node, url, token_hash, alive_until) VALUES ($1, $2, $3, $4)
       ON CONFLICT (node) DO UPDATE SET url = excluded.url, token_hash = excluded.token_hash,
         alive_until = excluded.alive_until`,
      [p.node, p.url, p.tokenHash, p.aliveUntil],
    );
    // Peers gone for a day leave with what they held.
    const gone = Date.now() - PEER_FORGET_MS;
    await this.pool.query(
      `WITH gone AS (DELETE FROM peers WHERE alive_until < $1 RETURNING node)
       DELETE FROM peer_blobs WHERE node IN (SELECT node FROM gone)`,
      [gone],
    );
    await this.pool.query('DELETE FROM peer_pieces WHERE claimed_at < $1', [gone]);
  }

  async livePeer(node: string, now: number): Promise<Peer | undefined> {
    const { rows } = await this.pool.query<PeerRow>(
      'SELECT * FROM peers WHERE node = $1 AND alive_until > $2',
      [node, now],
    );
    return rows[0] && toPeer(rows[0]);
  }

  async withdrawPeer(node: string): Promise<void> {
    await this.tx(async (c) => {
      await c.query('DELETE FROM peer_blobs WHERE node = $1', [node]);
      await c.query('DELETE FROM peer_pieces WHERE node = $1 AND sha256 IS NULL', [node]);
      await c.query('DELETE FROM peers WHERE node = $1', [node]);
    });
  }

  async holdBlob(h: BlobHolding): Promise<void> {
    await this.pool.query(
      `INSERT INTO peer_blobs (digest, node, size, complete, pieces) VALUES ($1, $2, $3, $4, $5)
       ON CONFLICT (digest, node) DO UPDATE SET size = excluded.size, complete = excluded.complete,
         pieces = excluded.pieces`,
      [h.digest, h.node, h.size, h.complete, h.pieces],
    );
  }

  async dropBlob(node: string, digest: string): Promise<void> {
    await this.pool.query('DELETE FROM peer_blobs WHERE node = $1 AND digest = $2', [node, digest]);
  }

  async blobHolders(
    digest: string,
    except: string,
    now: number,
  ): Promise<Array<BlobHolding & { url: string }>> {
    const { rows } = await this.pool.query<HolderRow>(
      `SELECT b.*, p.url FROM peer_blobs b JOIN peers p ON p.node = b.node
       WHERE b.digest = $1 AND b.node <> $2 AND p.alive_until > $3 AND p.url IS NOT NULL`,
      [digest, except, now],
    );
    return rows.map(toHolder);
  }

  async claimPiece(
    digest: string,
    index: number,
    node: string,
    now: number,
    staleMs: number,
  ): Promise<boolean> {
    const r = await this.pool.query(
      `INSERT INTO peer_pieces (digest, idx, node, claimed_at) VALUES ($1, $2, $3, $4)
       ON CONFLICT (digest, idx) DO UPDATE SET node = excluded.node, claimed_at = excluded.claimed_at
       WHERE peer_pieces.node = excluded.node
          OR NOT EXISTS (SELECT 1 FROM peers WHERE peers.node = peer_pieces.node AND peers.alive_until > $4)
          OR (peer_pieces.sha256 IS NULL AND peer_pieces.claimed_at < $5)`,
      [digest, index, node, now, now - staleMs],
    );
    return r.rowCount === 1;
  }

  async pieceFetched(digest: string, index: number, node: string, sha256: string): Promise<void> {
    await this.pool.query('UPDATE peer_pieces SET sha256 = $1 WHERE digest = $2 AND idx = $3 AND node = $4', [
      sha256,
      digest,
      index,
      node,
    ]);
  }

  async pieceClaims(digest: string): Promise<PieceClaim[]> {
    const { rows } = await this.pool.query<PieceRow>(
      'SELECT * FROM peer_pieces WHERE digest = $1 ORDER BY idx',
      [digest],
    );
    return rows.map(toPieceClaim);
  }

  async close(): Promise<void> {
    await this.pool.end();
  }
}
