import type { JobSpec, RuntimeName } from '../jobs/spec.js';
import type { JobState } from '../jobs/states.js';
import type { Decision } from '../policy/decision.js';
import type { TaskHandle } from '../runtimes/runtime.js';

/**
 * The one persistence seam: `sqlite` (embedded, the default) and later `postgres` (several
 * nodes) implement it. Async throughout so a networked store fits the same shape.
 */
export interface Store {
  createJob(input: NewJob): Promise<JobRecord>;
  getJob(id: string): Promise<JobRecord | undefined>;
  listJobs(filter?: JobFilter): Promise<JobRecord[]>;
  /** Moves a job to `to` if that is a legal next state, with the fields that go with it; throws otherwise. */
  transition(id: string, to: JobState, patch?: JobPatch, reason?: string): Promise<JobRecord>;
  /** Records the sandbox behind a job, before it is created and again once it exists. */
  saveHandle(id: string, handle: TaskHandle): Promise<void>;
  events(id: string): Promise<JobEvent[]>;
  /**
   * The most recent job starts on a runtime, oldest first, for the fallback breaker: `ok` when
   * the job's process started, not ok when the job ended in `error` before it could.
   */
  recentStarts(runtime: RuntimeName, limit: number): Promise<StartOutcome[]>;

  /**
   * Queued jobs a node may claim now (unowned or with an expired lease, past their retry
   * backoff): each tenant's first `perTenant` by priority then age, so one tenant's backlog
   * cannot hide another's jobs.
   */
  claimable(now: number, perTenant: number): Promise<JobRecord[]>;
  /** Takes a queued job for `owner` until `leaseUntil` if nobody holds it; undefined if lost. */
  claim(id: string, owner: string, leaseUntil: number): Promise<JobRecord | undefined>;
  /** Heartbeat: extends the lease of every unfinished job `owner` holds. */
  renewLeases(owner: string, leaseUntil: number): Promise<void>;
  /** Gives a claimed job back to the queue (not admitted yet: no state change, no event). */
  release(id: string, owner: string, waitReason: string | null): Promise<void>;
  /**
   * Puts a job that could not run (infrastructure failure, lost node) back in the queue for
   * another attempt, unowned, not before `notBefore`.
   */
  requeue(id: string, notBefore: number, reason: string): Promise<JobRecord>;
  /** Started jobs whose owner's lease ran out (a lost node), for a live node to settle. */
  expiredLeases(now: number, limit: number): Promise<JobRecord[]>;
  /** Moves a job from a dead owner to `owner` (re-attaching to its sandbox); false if lost. */
  takeOver(id: string, from: string, owner: string, leaseUntil: number): Promise<boolean>;
  /** Marks a job for cancelling; a queued one is cancelled at once. */
  requestCancel(id: string): Promise<JobRecord>;
  /** Unfinished jobs of `owner` that someone asked to cancel. */
  cancelRequests(owner: string): Promise<string[]>;
  /** Requests and limits of admitted (claimed, starting, running) jobs, per tenant, across every node. */
  admittedUsage(): Promise<Map<string, Usage>>;

  addToken(hash: string, tenant: string): Promise<void>;
  tenantOfToken(hash: string): Promise<string | undefined>;

  close(): Promise<void>;
}

/** What admitted jobs hold, in the units of a ResourceQuota. */
export interface Usage {
  pods: number;
  requestsMemoryBytes: number;
  limitsMemoryBytes: number;
  requestsCpuMillis: number;
  limitsCpuMillis: number;
}

export interface NewJob {
  id: string;
  tenant: string;
  spec: JobSpec;
  decision: Decision;
  /**
   * Which process runs the job (`host:pid:starttime`), so a dead owner can be told from a live
   * one; null for a job queued for any node to claim.
   */
  owner: string | null;
}

export interface JobResultFields {
  exitCode: number | null;
  oomKilled: boolean;
  timedOut: boolean;
  startupMs: number | null;
  durationMs: number | null;
  peakMemoryBytes: number | null;
  cpuUsageNs: number | null;
  costDollars: number | null;
}

export interface JobRecord extends JobResultFields {
  id: string;
  tenant: string;
  name: string;
  state: JobState;
  runtime: RuntimeName;
  spec: JobSpec;
  decision: Decision;
  handle: TaskHandle | null;
  owner: string | null;
  createdAt: number;
  startedAt: number | null;
  finishedAt: number | null;
  error: string | null;
  priority: number;
  /** How many times the job was given back to the queue after an infrastructure failure. */
  attempts: number;
  /** Until when `owner` holds the job (serving nodes); null for a foreground `boxcar run`. */
  leaseUntil: number | null;
  notBefore: number;
  cancelRequested: boolean;
  /** Why a queued job is still waiting (quota, capacity), as last seen by a scheduler. */
  waitReason: string | null;
}

export type JobPatch = Partial<
  JobResultFields & {
    startedAt: number;
    finishedAt: number;
    error: string;
    runtime: RuntimeName;
    owner: string | null;
    leaseUntil: number | null;
  }
>;

export interface JobFilter {
  limit?: number;
  tenant?: string;
  states?: JobState[];
}

export interface JobEvent {
  jobId: string;
  at: number;
  from: JobState | null;
  to: JobState;
  reason: string | null;
}

export interface StartOutcome {
  at: number;
  ok: boolean;
}

export class IllegalTransition extends Error {
  constructor(id: string, from: JobState, to: JobState) {
    super(`job ${id} cannot go from ${from} to ${to}`);
    this.name = 'IllegalTransition';
  }
}
