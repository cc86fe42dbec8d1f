import type { JobRecord } from '../store/store.js';

/** The fields of a job record its `--json` result is made of. */
type ResultSource = Pick<
  JobRecord,
  | 'id'
  | 'name'
  | 'state'
  | 'runtime'
  | 'decision'
  | 'exitCode'
  | 'oomKilled'
  | 'timedOut'
  | 'startupMs'
  | 'durationMs'
  | 'peakMemoryBytes'
  | 'costDollars'
  | 'error'
> &
  Partial<Pick<JobRecord, 'handle'>>;

/** The `--json` result of a job: the CLI contract other tools rely on. */
export type JobResultJson = Omit<ResultSource, 'handle'> & {
  output: string;
  vm?: unknown;
  image?: unknown;
  workspace?: unknown;
};

export function jobResultJson(r: ResultSource, output: string): JobResultJson {
  return {
    id: r.id,
    name: r.name,
    state: r.state,
    runtime: r.runtime,
    decision: r.decision,
    exitCode: r.exitCode,
    oomKilled: r.oomKilled,
    timedOut: r.timedOut,
    startupMs: r.startupMs,
    durationMs: r.durationMs,
    peakMemoryBytes: r.peakMemoryBytes,
    costDollars: r.costDollars,
    output,
    error: r.error,
    // MicroVM jobs: which VMM and accelerator, restored or booted, and how long that took.
    ...(r.handle?.attributes.vm ? { vm: r.handle.attributes.vm } : {}),
    // Registry images: which digest ran, and how long its pull took from where.
    ...(r.handle?.attributes.image ? { image: r.handle.attributes.image } : {}),
    // Jobs with a checkout, artifacts or a cache: what their workspace started with and kept.
    ...(r.handle?.attributes.workspace ? { workspace: r.handle.attributes.workspace } : {}),
  };
}

/** The CLI's exit code for a finished job: the job's own, or a conventional one when it was stopped. */
export function cliExitCode(r: Pick<JobRecord, 'state' | 'exitCode'>): number {
  switch (r.state) {
    case 'succeeded':
    case 'failed':
    case 'oom':
      return r.exitCode ?? 1;
    case 'timeout':
      return 124; // as GNU timeout
    case 'cancelled':
      return 130; // as a shell after Ctrl-C
    default:
      return 125; // Boxcar could not run it
  }
}
