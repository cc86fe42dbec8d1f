/**
 * The jobs table as both SQL stores lay it out: column names, and a row (its JSON and booleans
 * already decoded) to a record.
 */

import { isWasmModule, JobSpec, type RuntimeName } from '../jobs/spec.js';
import type { JobState } from '../jobs/states.js';
import type { Decision } from '../jobs/decision.js';
import { readHandle } from '../jobs/handle.js';
import type {
  ApiToken,
  AuditEntry,
  AuditRecord,
  Delivery,
  JobEvent,
  JobOrigin,
  JobPatch,
  JobRecord,
  NewJob,
  SealedSecret,
  SecretInfo,
  Usage,
} from './store.js';

export interface JobRow {
  id: string;
  tenant: string;
  name: string;
  state: string;
  runtime: string;
  spec: JobSpec;
  decision: Decision;
  origin: JobOrigin;
  /** As stored, whichever version of Boxcar wrote it. */
  handle: unknown;
  owner: string | null;
  created_at: number;
  started_at: number | null;
  finished_at: number | null;
  exit_code: number | null;
  oom_killed: boolean;
  timed_out: boolean;
  startup_ms: number | null;
  duration_ms: number | null;
  peak_memory_bytes: number | null;
  cpu_usage_ns: number | null;
  cost_dollars: number | null;
  error: string | null;
  priority: number;
  attempts: number;
  lease_until: number | null;
  not_before: number;
  cancel_requested: boolean;
  wait_reason: string | null;
  infra_failure: boolean;
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
  leaseUntil: 'lease_until',
  infraFailure: 'infra_failure',
};

export const LIVE = `state IN ('queued', 'starting', 'running')`;

/** A job stored before a field existed (a limit such as `rootfs`, its image's kind) gets its default. */
const DEFAULT_LIMITS = JobSpec.parse({ command: ['true'] }).limits;

export function toRecord(r: JobRow): JobRecord {
  return {
    id: r.id,
    tenant: r.tenant,
    name: r.name,
    state: r.state as JobState,
    runtime: r.runtime as RuntimeName,
    spec: {
      ...r.spec,
      imageKind: r.spec.imageKind ?? (isWasmModule(r.spec.image) ? 'wasm' : 'oci'),
      limits: { ...DEFAULT_LIMITS, ...r.spec.limits },
    },
    decision: r.decision,
    origin: r.origin,
    handle: r.handle ? readHandle(r.handle) : null,
    owner: r.owner,
    createdAt: r.created_at,
    startedAt: r.started_at,
    finishedAt: r.finished_at,
    exitCode: r.exit_code,
    oomKilled: r.oom_killed,
    timedOut: r.timed_out,
    startupMs: r.startup_ms,
    durationMs: r.duration_ms,
    peakMemoryBytes: r.peak_memory_bytes,
    cpuUsageNs: r.cpu_usage_ns,
    costDollars: r.cost_dollars,
    error: r.error,
    priority: r.priority,
    attempts: r.attempts,
    leaseUntil: r.lease_until,
    notBefore: r.not_before,
    cancelRequested: r.cancel_requested,
    waitReason: r.wait_reason,
    infraFailure: r.infra_failure,
  };
}

/** A new job's row values in `INSERT_JOB`'s order (JSON columns as text). */
export const INSERT_JOB_COLUMNS =
  'id, tenant, name, state, runtime, spec, decision, origin, group_key, owner, created_at, priority';

export function newJobValues(input: NewJob, now: number): unknown[] {
  return [
    input.id,
    input.tenant,
    input.spec.name,
    'queued',
    input.decision.runtime,
    JSON.stringify(input.spec),
    JSON.stringify(input.decision),
    JSON.stringify(input.origin),
    input.origin.group ?? null,
    input.owner,
    now,
    input.spec.priority,
  ];
}

/** The audit record of a job's submission: who sent it, where it runs and why. */
export function submittedAudit(input: NewJob): AuditEntry {
  const { via, repository, group, commit } = input.origin;
  return {
    tenant: input.tenant,
    actor: input.origin.actor,
    action: 'job.submitted',
    subject: input.id,
    detail: {
      name: input.spec.name,
      via,
      ...(repository ? { repository } : {}),
      ...(group ? { group, commit } : {}),
      trust: input.decision.trust,
      runtime: input.decision.runtime,
      fallback: input.decision.fallback,
      reasons: input.decision.reasons,
      secrets: input.spec.secrets,
    },
  };
}

export interface TokenRow {
  hash: string;
  id: string;
  tenant: string | null;
  role: string;
}

export const toToken = (r: TokenRow): ApiToken => ({
  hash: r.hash,
  id: r.id,
  tenant: r.tenant,
  role: r.role === 'operator' ? 'operator' : 'tenant',
});

export interface SecretRow {
  tenant: string;
  repository: string;
  name: string;
  key_id: string;
  nonce: string;
  ciphertext: string;
  updated_at: number;
}

export const toSealed = (r: SecretRow): SealedSecret => ({
  tenant: r.tenant,
  repository: r.repository,
  name: r.name,
  keyId: r.key_id,
  nonce: r.nonce,
  ciphertext: r.ciphertext,
});

export const toSecretInfo = (r: SecretRow): SecretInfo => ({
  tenant: r.tenant,
  repository: r.repository,
  name: r.name,
  updatedAt: r.updated_at,
});

/** What secret changes say in the audit trail: names and scope, never values. */
export function secretAudit(
  scope: { tenant: string; repository: string; name: string },
  action: 'secret.set' | 'secret.removed',
  actor: string,
): AuditEntry {
  return {
    tenant: scope.tenant,
    actor,
    action,
    subject: `${scope.repository ? `${scope.repository}:` : ''}${scope.name}`,
    detail: scope.repository ? { repository: scope.repository } : {},
  };
}

export interface AuditRow {
  seq: number;
  at: number;
  tenant: string | null;
  actor: string;
  action: string;
  subject: string;
  detail: string;
  prev_hash: string;
  hash: string;
}

export const toAuditRecord = (r: AuditRow): AuditRecord => ({
  seq: r.seq,
  at: r.at,
  tenant: r.tenant,
  actor: r.actor,
  action: r.action,
  subject: r.subject,
  detail: r.detail,
  prevHash: r.prev_hash,
  hash: r.hash,
});

export interface DeliveryRow {
  id: string;
  forge: string;
  tenant: string;
  event: Record<string, unknown>;
  received_at: number;
  state: string;
  attempts: number;
  jobs: string[];
  error: string | null;
}

export const toDelivery = (r: DeliveryRow): Delivery => ({
  id: r.id,
  forge: r.forge,
  tenant: r.tenant,
  event: r.event,
  receivedAt: r.received_at,
  state: r.state as Delivery['state'],
  attempts: r.attempts,
  jobs: r.jobs,
  error: r.error,
});

/** Per-tenant sums of admitted jobs' requests and limits, as both stores' queries name them. */
export interface UsageRow {
  tenant: string;
  pods: number;
  rm: number;
  lm: number;
  rc: number;
  lc: number;
}

export function usageByTenant(rows: UsageRow[]): Map<string, Usage> {
  return new Map(
    rows.map((r) => [
      r.tenant,
      {
        pods: r.pods,
        requestsMemoryBytes: r.rm,
        limitsMemoryBytes: r.lm,
        requestsCpuMillis: r.rc,
        limitsCpuMillis: r.lc,
      },
    ]),
  );
}

/**
 * The `SET` list of a transition to `to` with `patch`, and its values in order (the job's id is
 * the caller's to add). `param(n)` writes the n-th placeholder; `encode` adapts a value to the
 * database (SQLite has no booleans).
 */
export function transitionSet(
  to: JobState,
  patch: JobPatch,
  param: (n: number) => string,
  encode: (v: unknown) => unknown = (v) => v,
): { set: string; values: unknown[] } {
  const values: unknown[] = [to];
  const sets = [`state = ${param(1)}`];
  for (const [key, value] of Object.entries(patch)) {
    const column = PATCH_COLUMNS[key as keyof JobPatch];
    if (!column) throw new Error(`unknown job field ${key}`);
    values.push(encode(value));
    sets.push(`${column} = ${param(values.length)}`);
  }
  if (to !== 'queued') sets.push('wait_reason = NULL');
  return { set: sets.join(', '), values };
}

/** A job_events row as both stores select it. */
export interface EventRow {
  job_id: string;
  at: number;
  from_state: string | null;
  to_state: string;
  reason: string | null;
}

export function toEvent(r: EventRow): JobEvent {
  return {
    jobId: r.job_id,
    at: r.at,
    from: r.from_state as JobState | null,
    to: r.to_state as JobState,
    reason: r.reason,
  };
}
