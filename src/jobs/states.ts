/**
 * The job lifecycle. Each transition is written to the store before the side effect it
 * announces, so a crash leaves a record that says how far the job got.
 */
export const JOB_STATES = [
  'queued',
  'starting',
  'running',
  'succeeded',
  'failed',
  'oom',
  'timeout',
  'cancelled',
  'error',
] as const;
export type JobState = (typeof JOB_STATES)[number];

export const TERMINAL_STATES: ReadonlySet<JobState> = new Set([
  'succeeded',
  'failed',
  'oom',
  'timeout',
  'cancelled',
  'error',
]);

/** Back to `queued` only through `Store.requeue`: an infrastructure failure or a lost node. */
const NEXT: Record<JobState, readonly JobState[]> = {
  queued: ['starting', 'cancelled', 'error'],
  starting: ['running', 'cancelled', 'error', 'timeout', 'queued'],
  running: ['succeeded', 'failed', 'oom', 'timeout', 'cancelled', 'error', 'queued'],
  succeeded: [],
  failed: [],
  oom: [],
  timeout: [],
  cancelled: [],
  error: [],
};

export function isTerminal(state: JobState): boolean {
  return TERMINAL_STATES.has(state);
}

export function canTransition(from: JobState, to: JobState): boolean {
  return NEXT[from].includes(to);
}

/**
 * The terminal state for a job whose process ended, by what ended it. An OOM kill of some
 * child that the job survived (exit 0) is reported in `oomKilled` but the job succeeded.
 */
export function finalState(outcome: {
  exitCode: number;
  oomKilled: boolean;
  timedOut: boolean;
  cancelled: boolean;
}): JobState {
  if (outcome.cancelled) return 'cancelled';
  if (outcome.timedOut) return 'timeout';
  if (outcome.oomKilled && outcome.exitCode !== 0) return 'oom';
  return outcome.exitCode === 0 ? 'succeeded' : 'failed';
}
