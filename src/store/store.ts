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
  close(): Promise<void>;
}

export interface NewJob {
  id: string;
  tenant: string;
  spec: JobSpec;
  decision: Decision;
  /** Which process runs the job (`host:pid:starttime`), so a dead owner can be told from a live one. */
  owner: string;
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
}

export type JobPatch = Partial<
  JobResultFields & {
    startedAt: number;
    finishedAt: number;
    error: string;
    runtime: RuntimeName;
    owner: string;
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
