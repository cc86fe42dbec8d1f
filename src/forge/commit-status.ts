import type { JobState } from '../jobs/states.js';
import type { JobOrigin, JobRecord } from '../store/store.js';

export const FORGES = ['github', 'gitlab'] as const;
export type Forge = (typeof FORGES)[number];

/** A status in Boxcar's words; each forge's client says it in its own (GitHub has no running). */
export type StatusState = 'pending' | 'running' | 'success' | 'failure' | 'error' | 'canceled';

/** What the forge shows on one commit under one context: the newest one wins. */
export interface CommitStatus {
  forge: Forge;
  /** GitHub: `owner/name`; GitLab: the project's id or path (where the commit's branch lives). */
  repository: string;
  commit: string;
  /** `boxcar/<pipeline>/<job>` or `boxcar/<pipeline>`. */
  context: string;
  state: StatusState;
  description: string;
  targetUrl?: string;
  /** GitLab: the branch the status refers to. */
  ref?: string;
}

/** Where a job's statuses go, read from how it came in. */
export interface JobForgeOrigin {
  forge: Forge;
  delivery: string;
  repository: string;
  commit: string;
}

const ACTOR = /^webhook:(github|gitlab):(.+)$/;

/** Work queued by a forge's webhook, at a commit: its forge and delivery; anything else, none. */
export function forgeOrigin(origin: JobOrigin): JobForgeOrigin | undefined {
  const { via, actor, repository, commit } = origin;
  const m = ACTOR.exec(actor);
  if (via !== 'webhook' || !m || !repository || !commit) return undefined;
  return { forge: m[1] as Forge, delivery: m[2] as string, repository, commit };
}

export function statusState(state: JobState): StatusState {
  switch (state) {
    case 'queued':
      return 'pending';
    case 'starting':
    case 'running':
      return 'running';
    case 'succeeded':
      return 'success';
    case 'failed':
    case 'oom':
    case 'timeout':
      return 'failure';
    case 'cancelled':
      return 'canceled';
    case 'error':
      return 'error';
  }
}

/** GitHub shows at most 140 characters of a description; GitLab 255. */
const DESCRIPTION_MAX = 140;

/** One line for the forge's UI: what happened to the job, and for how long it ran. */
export function jobDescription(job: JobRecord): string {
  const took = job.durationMs === null ? '' : ` in ${(job.durationMs / 1000).toFixed(1)} s`;
  const text: Record<JobState, string> = {
    queued: job.waitReason ? `queued: ${job.waitReason}` : 'queued',
    starting: 'starting',
    running: `running on ${job.runtime}`,
    succeeded: `succeeded${took}`,
    failed: `failed (exit ${job.exitCode ?? '?'})${took}`,
    oom: `out of memory${took}`,
    timeout: `timed out${took}`,
    cancelled: 'cancelled',
    error: `Boxcar could not run it: ${job.error ?? 'unknown error'}`,
  };
  const line = text[job.state];
  return line.length <= DESCRIPTION_MAX ? line : `${line.slice(0, DESCRIPTION_MAX - 1)}…`;
}
