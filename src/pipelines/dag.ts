import { isTerminal, type JobState } from '../jobs/states.js';
import type { PipelinePlan, PlannedJob, RetryReason } from './plan.js';

export const PIPELINE_STATES = ['running', 'succeeded', 'failed', 'cancelled'] as const;
export type PipelineState = (typeof PIPELINE_STATES)[number];

/** Where one job of a pipeline is: the ids of its attempts (the last one current), or why it was skipped. */
export interface PipelineJobStatus {
  attempts: string[];
  skipped?: string;
  /** Why its last attempt could not be queued (over a limit, a secret missing): its failure. */
  error?: string;
}

/** What the pipeline needs to know of a job attempt. */
export interface AttemptOutcome {
  state: JobState;
  infraFailure: boolean;
}

/** One pass over the DAG: what to start (with the jobs whose artifacts each takes), skip and retry. */
export interface Step {
  start: Array<{ job: PlannedJob; artifactsFrom: string[] }>;
  retry: Array<{ job: PlannedJob; reason: RetryReason; artifactsFrom: string[] }>;
  skip: Array<{ name: string; why: string }>;
  state: PipelineState;
}

type Result = 'success' | 'failed' | 'skipped' | 'cancelled';

function retryReason(o: AttemptOutcome): RetryReason | undefined {
  if (o.state === 'error' && o.infraFailure) return 'infrastructure_failure';
  if (o.state === 'timeout') return 'timeout';
  if (o.state === 'failed' || o.state === 'oom') return 'script_failure';
  return undefined;
}

/**
 * The next step of a pipeline from its jobs' attempts (pure: the runners, local and serving,
 * act on it and record what they did). A job whose dependencies have all finished starts if
 * its `when` says so given how they ended (an allowed failure counts as a success), or is
 * skipped with the reason; a finished attempt whose failure its `retry` covers is retried; a
 * cancelled pipeline starts nothing more. The pipeline ends when every job has.
 */
export function evaluate(
  plan: PipelinePlan,
  status: Record<string, PipelineJobStatus>,
  outcome: (jobId: string) => AttemptOutcome | undefined,
  cancelRequested: boolean,
): Step {
  const step: Step = { start: [], retry: [], skip: [], state: 'running' };
  const byName = new Map(plan.jobs.map((j) => [j.name, j]));
  const results = new Map<string, Result>();
  const resultOf = (job: PlannedJob): Result | 'pending' => {
    const known = results.get(job.name);
    if (known) return known;
    const s = status[job.name] ?? { attempts: [] };
    if (s.skipped) return 'skipped';
    if (s.error) return 'failed';
    const last = s.attempts.at(-1);
    const o = last === undefined ? undefined : outcome(last);
    if (!o || !isTerminal(o.state)) return 'pending';
    if (o.state === 'succeeded') return 'success';
    if (o.state === 'cancelled') return 'cancelled';
    const reason = retryReason(o);
    if (!cancelRequested && reason && job.retry.when.includes(reason) && s.attempts.length <= job.retry.max)
      return 'pending'; // to be retried below
    return 'failed';
  };
  // Artifacts: those of the jobs it needs, or (without needs) of every job before it, when they kept some.
  const artifactsFrom = (job: PlannedJob) =>
    job.after.filter(
      (n) => byName.get(n)?.spec.artifacts && resultOf(byName.get(n) as PlannedJob) !== 'skipped',
    );

  let open = false;
  for (const job of plan.jobs) {
    const r = resultOf(job);
    if (r !== 'pending') {
      results.set(job.name, r);
      continue;
    }
    open = true;
    const s = status[job.name] ?? { attempts: [] };
    const last = s.attempts.at(-1);
    const o = last === undefined ? undefined : outcome(last);
    if (o && isTerminal(o.state)) {
      step.retry.push({ job, reason: retryReason(o) as RetryReason, artifactsFrom: artifactsFrom(job) });
      continue;
    }
    if (last !== undefined) continue; // running
    if (cancelRequested) {
      step.skip.push({ name: job.name, why: 'the pipeline was cancelled' });
      continue;
    }
    const deps = job.after.map((n) => ({ n, r: resultOf(byName.get(n) as PlannedJob) }));
    if (deps.some((d) => d.r === 'pending')) continue;
    const failed = deps.filter(
      (d) => (d.r === 'failed' && !byName.get(d.n)?.allowFailure) || d.r === 'cancelled',
    );
    const skipped = deps.filter((d) => d.r === 'skipped');
    if (job.when === 'always' || (job.when === 'on_failure' && failed.length))
      step.start.push({ job, artifactsFrom: artifactsFrom(job) });
    else if (job.when === 'on_failure')
      step.skip.push({ name: job.name, why: 'nothing before it failed (when: on_failure)' });
    else if (failed.length)
      step.skip.push({ name: job.name, why: `${failed.map((d) => d.n).join(', ')} failed` });
    else if (skipped.length)
      step.skip.push({ name: job.name, why: `${skipped.map((d) => d.n).join(', ')} did not run` });
    else step.start.push({ job, artifactsFrom: artifactsFrom(job) });
  }
  if (open || step.skip.length) return step;
  const all = plan.jobs.map((j) => ({ j, r: results.get(j.name) as Result }));
  step.state =
    cancelRequested || all.some((x) => x.r === 'cancelled')
      ? 'cancelled'
      : all.some((x) => x.r === 'failed' && !x.j.allowFailure)
        ? 'failed'
        : 'succeeded';
  return step;
}
