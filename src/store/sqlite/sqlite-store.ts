import { chmodSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import type { RuntimeName } from '../../jobs/spec.js';
import { canTransition, type JobState } from '../../jobs/states.js';
import type { TaskHandle } from '../../jobs/handle.js';
import { nextAuditRecord } from '../audit-chain.js';
import { GroupCommit } from './group-commit.js';
import {
  type ApiToken,
  type BlobHolding,
  type Peer,
  type PieceClaim,
  type AuditEntry,
  type AuditFilter,
  type AuditRecord,
  type Delivery,
  type StartOutcome,
  IllegalTransition,
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
  type Store,
  type Usage,
} from '../store.js';
import {
  PEER_FORGET_MS,
  toHolder,
  toPeer,
  toPieceClaim,
  type HolderRow,
  type PeerRow,
  type PieceRow,
} from '../peer-row.js';
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
import { MIGRATIONS } from './migrations.js';
import { pipelinePatchColumns, toPipeline, type PipelineRow } from '../pipeline-row.js';

/** A row as SQLite returns it: JSON as text, booleans as 0/1. */
type Row = Omit<
  JobRow,
  | 'spec'
  | 'decision'
  | 'origin'
  | 'handle'
  | 'oom_killed'
  | 'timed_out'
  | 'cancel_requested'
  | 'infra_failure'
> & {
  spec: string;
  decision: string;
  origin: string;
  handle: string | null;
  oom_killed: number;
  timed_out: number;
  cancel_requested: number;
  infra_failure: number;
};

function decode(r: Row): JobRecord {
  return toRecord({
    ...r,
    spec: JSON.parse(r.spec) as JobRow['spec'],
    decision: JSON.parse(r.decision) as JobRow['decision'],
    origin: JSON.parse(r.origin) as JobRow['origin'],
    handle: r.handle ? (JSON.parse(r.handle) as JobRow['handle']) : null,
    oom_killed: r.oom_killed === 1,
    timed_out: r.timed_out === 1,
    cancel_requested: r.cancel_requested === 1,
    infra_failure: r.infra_failure === 1,
  });
}

type DeliveryDbRow = Omit<DeliveryRow, 'event' | 'jobs'> & { event: string; jobs: string };
const decodeDelivery = (r: DeliveryDbRow): Delivery =>
  toDelivery({
    ...r,
    event: JSON.parse(r.event) as Record<string, unknown>,
    jobs: JSON.parse(r.jobs) as string[],
  });

/**
 * The embedded store: one SQLite file in the state directory, WAL mode so readers (`boxcar
 * jobs`) never block the writer. synchronous=NORMAL: every commit survives a crash or kill -9 of
 * Boxcar (it is in the WAL before the call returns); only a power loss can drop the last few,
 * and an fsync per transition would cost ~1 ms each on the job's start path.
 */
/** Admitted (claimed, starting, running) jobs' requests and limits per tenant; `and` narrows it. */
const usageSql = (and: string) =>
  `SELECT tenant, COUNT(*) AS pods,
     SUM(json_extract(spec, '$.requests.memoryBytes')) AS rm,
     SUM(json_extract(spec, '$.limits.memoryBytes')) AS lm,
     SUM(json_extract(spec, '$.requests.cpuMillis')) AS rc,
     SUM(json_extract(spec, '$.limits.cpuMillis')) AS lc
   FROM jobs WHERE (state IN ('starting', 'running')
     OR (state = 'queued' AND owner IS NOT NULL AND lease_until IS NOT NULL)) ${and}
   GROUP BY tenant`;

/** The WHERE of a list by tenant, states and (`columns.group`) a pull request's group. */
function filterClause(
  filter: { tenant?: string; states?: readonly string[]; group?: string },
  columns: { group?: string },
): { where: string; args: unknown[] } {
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
  if (filter.group && columns.group) {
    where.push(`${columns.group} = ?`);
    args.push(filter.group);
  }
  return { where: where.length ? `WHERE ${where.join(' AND ')}` : '', args };
}

export class SqliteStore implements Store {
  private readonly db: Database.Database;

  constructor(file: string) {
    mkdirSync(path.dirname(file), { recursive: true });
    this.db = new Database(file);
    // Tenants' jobs, tokens' hashes and sealed secrets: nobody else's business on this host.
    chmodSync(file, 0o600);
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = NORMAL');
    this.db.pragma('foreign_keys = ON');
    this.db.pragma('busy_timeout = 10000');
    this.migrate();
    this.writes = new GroupCommit(this.db);
  }

  private readonly statements = new Map<string, Database.Statement>();
  /** A job's life cycle writes (creation, transitions, handles), committed together per turn. */
  private readonly writes: GroupCommit;

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
    const values = newJobValues(input, now);
    return this.writes.run(() => {
      this.sql(
        `INSERT INTO jobs (${INSERT_JOB_COLUMNS}) VALUES (${INSERT_JOB_COLUMNS.split(',').map(() => '?')})`,
      ).run(...values);
      this.sql(
        `INSERT INTO job_events (job_id, at, from_state, to_state, reason) VALUES (?, ?, NULL, 'queued', ?)`,
      ).run(input.id, now, input.decision.reasons.join('; '));
      this.appendAudit(submittedAudit(input), now);
      return this.getRow(input.id);
    });
  }

  async getJob(id: string): Promise<JobRecord | undefined> {
    const row = this.sql('SELECT * FROM jobs WHERE id = ?').get(id) as Row | undefined;
    return row && decode(row);
  }

  async listJobs(filter: JobFilter = {}): Promise<JobRecord[]> {
    const { where, args } = filterClause(filter, { group: 'group_key' });
    const sql = `SELECT * FROM jobs ${where} ORDER BY created_at DESC, rowid DESC LIMIT ?`;
    return (this.sql(sql).all(...args, filter.limit ?? 50) as Row[]).map(decode);
  }

  async transition(
    id: string,
    to: JobState,
    patch: JobPatch = {},
    reason?: string,
    audit?: AuditEntry,
    fence?: Fence,
  ): Promise<JobRecord> {
    return this.writes.run(() => {
      const record = this.transitionNow(id, to, patch, reason, fence);
      if (audit) this.appendAudit(audit, Date.now());
      return record;
    });
  }

  /** Appends one audit record after the last; the caller holds a write transaction. */
  private appendAudit(entry: AuditEntry, at: number): void {
    const head = this.sql('SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1').get() as
      { seq: number; hash: string } | undefined;
    const r = nextAuditRecord(head, entry, at);
    this.sql(
      `INSERT INTO audit (seq, at, tenant, actor, action, subject, detail, prev_hash, hash)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    ).run(r.seq, r.at, r.tenant, r.actor, r.action, r.subject, r.detail, r.prevHash, r.hash);
  }

  private getRow(id: string): JobRecord {
    const row = this.sql('SELECT * FROM jobs WHERE id = ?').get(id) as Row | undefined;
    if (!row) throw new Error(`job ${id} does not exist`);
    return decode(row);
  }

  /** One checked transition with its event; the caller holds the transaction. */
  private transitionNow(
    id: string,
    to: JobState,
    patch: JobPatch,
    reason?: string,
    fence?: Fence,
  ): JobRecord {
    const row = this.sql('SELECT state, owner, attempts FROM jobs WHERE id = ?').get(id) as
      { state: JobState; owner: string | null; attempts: number } | undefined;
    if (!row) throw new Error(`job ${id} does not exist`);
    checkFence(id, row, to, fence);
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
    const json = JSON.stringify(handle); // as it is now: the caller may change it before the commit
    await this.writes.run(() => this.sql('UPDATE jobs SET handle = ? WHERE id = ?').run(json, id));
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
         WHERE runtime = ? AND (started_at IS NOT NULL OR infra_failure = 1)
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
    return this.claimNow(id, owner, leaseUntil);
  }

  private claimNow(id: string, owner: string, leaseUntil: number): JobRecord | undefined {
    const taken = this.sql(
      `UPDATE jobs SET owner = ?, lease_until = ? WHERE id = ? AND state = 'queued'
           AND cancel_requested = 0 AND (owner IS NULL OR lease_until < ?)`,
    ).run(owner, leaseUntil, id, Date.now());
    return taken.changes === 1 ? this.getRow(id) : undefined;
  }

  async claimWithinQuota(
    id: string,
    owner: string,
    leaseUntil: number,
    check: (used: Usage) => string | undefined,
  ): Promise<JobRecord | { refused: string } | undefined> {
    // One write transaction at a time in SQLite: the check and the claim cannot interleave.
    return this.db
      .transaction(() => {
        const row = this.sql('SELECT tenant FROM jobs WHERE id = ?').get(id) as
          { tenant: string } | undefined;
        if (!row) return undefined;
        const usage = usageByTenant(this.sql(usageSql('AND tenant = ?')).all(row.tenant) as UsageRow[]);
        const refused = check(usage.get(row.tenant) ?? ZERO_USAGE);
        if (refused) return { refused };
        return this.claimNow(id, owner, leaseUntil);
      })
      .immediate();
  }

  async renewLeases(owner: string, leaseUntil: number): Promise<string[]> {
    const rows = this.sql(`UPDATE jobs SET lease_until = ? WHERE owner = ? AND ${LIVE} RETURNING id`).all(
      leaseUntil,
      owner,
    ) as Array<{ id: string }>;
    return rows.map((r) => r.id);
  }

  async release(id: string, owner: string, waitReason: string | null): Promise<void> {
    this.sql(
      `UPDATE jobs SET owner = NULL, lease_until = NULL, wait_reason = ?
         WHERE id = ? AND owner = ? AND state = 'queued'`,
    ).run(waitReason, id, owner);
  }

  async requeue(
    id: string,
    notBefore: number,
    reason: string,
    opts: RequeueOptions = {},
  ): Promise<JobRecord> {
    return this.db
      .transaction(() => {
        const now = this.getRow(id);
        if (opts.expect && (now.owner !== opts.expect.owner || now.leaseUntil !== opts.expect.leaseUntil))
          throw new IllegalTransition(id, now.state, 'queued');
        checkFence(id, now, 'queued', opts.fence);
        if (now.cancelRequested)
          return this.transitionNow(
            id,
            'cancelled',
            { finishedAt: Date.now(), owner: null, leaseUntil: null },
            CANCELLED_AT_REQUEUE,
          );
        const patch: JobPatch = { owner: null, leaseUntil: null };
        if (opts.infraFailure) patch.infraFailure = true;
        this.transitionNow(id, 'queued', patch, reason);
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

  async requestCancel(id: string, actor: string, reason = 'cancel requested'): Promise<JobRecord> {
    return this.db
      .transaction(() => {
        const job = this.getRow(id);
        if (job.state !== 'queued' && job.state !== 'starting' && job.state !== 'running') return job;
        this.appendAudit(
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
          return this.transitionNow(id, 'cancelled', { finishedAt: Date.now() }, `${reason} while queued`);
        this.sql('UPDATE jobs SET cancel_requested = 1 WHERE id = ?').run(id);
        return this.getRow(id);
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
    return usageByTenant(this.sql(usageSql('')).all() as UsageRow[]);
  }

  async queuedByRuntime(): Promise<Map<RuntimeName, number>> {
    const rows = this.sql(
      `SELECT runtime, COUNT(*) AS n FROM jobs WHERE state = 'queued' GROUP BY runtime`,
    ).all() as Array<{
      runtime: RuntimeName;
      n: number;
    }>;
    return new Map(rows.map((r) => [r.runtime, r.n]));
  }

  async countJobs(tenant: string, states: JobState[]): Promise<number> {
    const row = this.sql(
      `SELECT COUNT(*) AS n FROM jobs WHERE tenant = ? AND state IN (${states.map(() => '?').join(', ')})`,
    ).get(tenant, ...states) as { n: number };
    return row.n;
  }

  async addToken(t: ApiToken, actor: string): Promise<void> {
    this.db
      .transaction(() => {
        const now = Date.now();
        this.sql('INSERT INTO tokens (hash, id, tenant, role, created_at) VALUES (?, ?, ?, ?, ?)').run(
          t.hash,
          t.id,
          t.tenant,
          t.role,
          now,
        );
        this.appendAudit(
          { tenant: t.tenant, actor, action: 'token.created', subject: t.id, detail: { role: t.role } },
          now,
        );
      })
      .immediate();
  }

  async tokenByHash(hash: string): Promise<ApiToken | undefined> {
    const row = this.sql('SELECT hash, id, tenant, role FROM tokens WHERE hash = ?').get(hash) as
      TokenRow | undefined;
    return row && toToken(row);
  }

  async putSecret(s: SealedSecret, actor: string): Promise<void> {
    this.db
      .transaction(() => {
        const now = Date.now();
        this.sql(
          `INSERT INTO secrets (tenant, repository, name, key_id, nonce, ciphertext, created_at, updated_at)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT (tenant, repository, name) DO UPDATE SET
             key_id = excluded.key_id, nonce = excluded.nonce, ciphertext = excluded.ciphertext,
             updated_at = excluded.updated_at`,
        ).run(s.tenant, s.repository, s.name, s.keyId, s.nonce, s.ciphertext, now, now);
        this.appendAudit(secretAudit(s, 'secret.set', actor), now);
      })
      .immediate();
  }

  async deleteSecret(scope: SecretScope, actor: string): Promise<boolean> {
    return this.db
      .transaction(() => {
        const r = this.sql('DELETE FROM secrets WHERE tenant = ? AND repository = ? AND name = ?').run(
          scope.tenant,
          scope.repository,
          scope.name,
        );
        if (r.changes === 1) this.appendAudit(secretAudit(scope, 'secret.removed', actor), Date.now());
        return r.changes === 1;
      })
      .immediate();
  }

  async listSecrets(tenant: string): Promise<SecretInfo[]> {
    const rows = this.sql('SELECT * FROM secrets WHERE tenant = ? ORDER BY repository, name').all(
      tenant,
    ) as SecretRow[];
    return rows.map(toSecretInfo);
  }

  async secretsFor(tenant: string, repositories: string[], names: string[]): Promise<SealedSecret[]> {
    if (!names.length) return [];
    const repos = ['', ...repositories];
    const rows = this.sql(
      `SELECT * FROM secrets WHERE tenant = ? AND repository IN (${repos.map(() => '?').join(', ')})
         AND name IN (${names.map(() => '?').join(', ')})`,
    ).all(tenant, ...repos, ...names) as SecretRow[];
    return rows.map(toSealed);
  }

  async audit(entry: AuditEntry): Promise<void> {
    this.db.transaction(() => this.appendAudit(entry, Date.now())).immediate();
  }

  async auditRecords(filter: AuditFilter): Promise<AuditRecord[]> {
    const where = ['seq > ?'];
    const args: unknown[] = [filter.afterSeq ?? 0];
    if (filter.tenant !== undefined) {
      where.push('tenant = ?');
      args.push(filter.tenant);
    }
    if (filter.since !== undefined) {
      where.push('at >= ?');
      args.push(filter.since);
    }
    const rows = this.sql(`SELECT * FROM audit WHERE ${where.join(' AND ')} ORDER BY seq LIMIT ?`).all(
      ...args,
      filter.limit,
    ) as AuditRow[];
    return rows.map(toAuditRecord);
  }

  async addDelivery(d: NewDelivery): Promise<boolean> {
    const r = this.sql(
      `INSERT INTO deliveries (id, forge, tenant, event, received_at) VALUES (?, ?, ?, ?, ?)
       ON CONFLICT (id) DO NOTHING`,
    ).run(d.id, d.forge, d.tenant, JSON.stringify(d.event), d.receivedAt);
    return r.changes === 1;
  }

  async claimDeliveries(owner: string, leaseUntil: number, limit: number): Promise<Delivery[]> {
    return this.db
      .transaction(() => {
        const now = Date.now();
        const rows = this.sql(
          `SELECT * FROM deliveries WHERE state = 'pending' AND (owner IS NULL OR lease_until < ?)
             ORDER BY received_at LIMIT ?`,
        ).all(now, limit) as DeliveryDbRow[];
        for (const r of rows)
          this.sql(
            'UPDATE deliveries SET owner = ?, lease_until = ?, attempts = attempts + 1 WHERE id = ?',
          ).run(owner, leaseUntil, r.id);
        return rows.map((r) => decodeDelivery({ ...r, attempts: r.attempts + 1 }));
      })
      .immediate();
  }

  async settleDelivery(
    id: string,
    state: 'done' | 'failed',
    outcome: { jobs?: string[]; error?: string },
  ): Promise<void> {
    this.sql(
      `UPDATE deliveries SET state = ?, jobs = ?, error = ?, owner = NULL, lease_until = NULL WHERE id = ?`,
    ).run(state, JSON.stringify(outcome.jobs ?? []), outcome.error ?? null, id);
  }

  async getDelivery(id: string): Promise<Delivery | undefined> {
    const row = this.sql('SELECT * FROM deliveries WHERE id = ?').get(id) as DeliveryDbRow | undefined;
    return row && decodeDelivery(row);
  }

  async pruneDeliveries(before: number): Promise<number> {
    return this.sql('DELETE FROM deliveries WHERE received_at < ?').run(before).changes;
  }

  async createPipeline(p: NewPipeline): Promise<PipelineRecord> {
    this.sql(
      `INSERT INTO pipelines (id, tenant, name, state, plan, origin, classifier, jobs, created_at)
       VALUES (?, ?, ?, 'running', ?, ?, ?, '{}', ?)`,
    ).run(
      p.id,
      p.tenant,
      p.name,
      JSON.stringify(p.plan),
      JSON.stringify(p.origin),
      p.classifier ? JSON.stringify(p.classifier) : null,
      p.createdAt,
    );
    return (await this.getPipeline(p.id)) as PipelineRecord;
  }

  async getPipeline(id: string): Promise<PipelineRecord | undefined> {
    const row = this.sql('SELECT * FROM pipelines WHERE id = ?').get(id) as PipelineRow | undefined;
    return row && toPipeline(row);
  }

  async listPipelines(filter: PipelineFilter = {}): Promise<PipelineRecord[]> {
    const { where, args } = filterClause(filter, {});
    const sql = `SELECT * FROM pipelines ${where} ORDER BY created_at DESC, id LIMIT ?`;
    return (this.sql(sql).all(...args, filter.limit ?? 50) as PipelineRow[]).map(toPipeline);
  }

  async updatePipeline(
    id: string,
    version: number,
    patch: PipelinePatch,
  ): Promise<PipelineRecord | undefined> {
    const cols = pipelinePatchColumns(patch).map(([c, v]): [string, unknown] => [
      c,
      typeof v === 'boolean' ? Number(v) : v,
    ]);
    const r = this.sql(
      `UPDATE pipelines SET ${[...cols.map(([c]) => `${c} = ?`), 'version = version + 1'].join(', ')} WHERE id = ? AND version = ?`,
    ).run(...cols.map(([, v]) => v), id, version);
    return r.changes === 1 ? this.getPipeline(id) : undefined;
  }

  async popularImages(since: number, limit: number): Promise<string[]> {
    const rows = this.sql(
      `SELECT json_extract(spec, '$.image') AS image FROM jobs
       WHERE (created_at >= ? OR state = 'queued') AND json_extract(spec, '$.image') LIKE '%@sha256:%'
       GROUP BY image ORDER BY SUM(state = 'queued') > 0 DESC, COUNT(*) DESC, MAX(created_at) DESC LIMIT ?`,
    ).all(since, limit) as Array<{ image: string }>;
    return rows.map((r) => r.image);
  }

  async announcePeer(p: Peer): Promise<void> {
    this.db
      .transaction(() => {
        this.sql(
          `INSERT INTO peers (node, url, token_hash, alive_until) VALUES (?, ?, ?, ?)
           ON CONFLICT (node) DO UPDATE SET url = excluded.url, token_hash = excluded.token_hash,
             alive_until = excluded.alive_until`,
        ).run(p.node, p.url, p.tokenHash, p.aliveUntil);
        // Peers gone for a day leave with what they held.
        const gone = Date.now() - PEER_FORGET_MS;
        this.sql('DELETE FROM peer_blobs WHERE node IN (SELECT node FROM peers WHERE alive_until < ?)').run(
          gone,
        );
        this.sql('DELETE FROM peers WHERE alive_until < ?').run(gone);
        this.sql('DELETE FROM peer_pieces WHERE claimed_at < ?').run(gone);
      })
      .immediate();
  }

  async livePeer(node: string, now: number): Promise<Peer | undefined> {
    const r = this.sql('SELECT * FROM peers WHERE node = ? AND alive_until > ?').get(node, now) as
      PeerRow | undefined;
    return r && toPeer(r);
  }

  async withdrawPeer(node: string): Promise<void> {
    this.db
      .transaction(() => {
        this.sql('DELETE FROM peer_blobs WHERE node = ?').run(node);
        this.sql('DELETE FROM peer_pieces WHERE node = ? AND sha256 IS NULL').run(node);
        this.sql('DELETE FROM peers WHERE node = ?').run(node);
      })
      .immediate();
  }

  async holdBlob(h: BlobHolding): Promise<void> {
    this.sql(
      `INSERT INTO peer_blobs (digest, node, size, complete, pieces) VALUES (?, ?, ?, ?, ?)
       ON CONFLICT (digest, node) DO UPDATE SET size = excluded.size, complete = excluded.complete,
         pieces = excluded.pieces`,
    ).run(h.digest, h.node, h.size, h.complete ? 1 : 0, h.pieces);
  }

  async dropBlob(node: string, digest: string): Promise<void> {
    this.sql('DELETE FROM peer_blobs WHERE node = ? AND digest = ?').run(node, digest);
  }

  async blobHolders(
    digest: string,
    except: string,
    now: number,
  ): Promise<Array<BlobHolding & { url: string }>> {
    const rows = this.sql(
      `SELECT b.*, p.url FROM peer_blobs b JOIN peers p ON p.node = b.node
       WHERE b.digest = ? AND b.node <> ? AND p.alive_until > ? AND p.url IS NOT NULL`,
    ).all(digest, except, now) as HolderRow[];
    return rows.map(toHolder);
  }

  async claimPiece(
    digest: string,
    index: number,
    node: string,
    now: number,
    staleMs: number,
  ): Promise<boolean> {
    const r = this.sql(
      `INSERT INTO peer_pieces (digest, idx, node, claimed_at) VALUES (?, ?, ?, ?)
       ON CONFLICT (digest, idx) DO UPDATE SET node = excluded.node, claimed_at = excluded.claimed_at
       WHERE peer_pieces.node = excluded.node
          OR NOT EXISTS (SELECT 1 FROM peers WHERE peers.node = peer_pieces.node AND peers.alive_until > ?)
          OR (peer_pieces.sha256 IS NULL AND peer_pieces.claimed_at < ?)`,
    ).run(digest, index, node, now, now, now - staleMs);
    return r.changes === 1;
  }

  async pieceFetched(digest: string, index: number, node: string, sha256: string): Promise<void> {
    this.sql('UPDATE peer_pieces SET sha256 = ? WHERE digest = ? AND idx = ? AND node = ?').run(
      sha256,
      digest,
      index,
      node,
    );
  }

  async pieceClaims(digest: string): Promise<PieceClaim[]> {
    const rows = this.sql('SELECT * FROM peer_pieces WHERE digest = ? ORDER BY idx').all(
      digest,
    ) as PieceRow[];
    return rows.map(toPieceClaim);
  }

  async close(): Promise<void> {
    this.writes.flush();
    this.db.close();
  }
}
