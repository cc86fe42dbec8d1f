import { z } from 'zod';
import {
  COMMAND_REQUIRED,
  JobSpecInput,
  commandGiven,
  normalizeJobSpec,
  type JobSpec,
} from '../jobs/spec.js';

/**
 * A CI pipeline as users of GitLab CI write one: jobs in `stages`, each starting when the jobs
 * it `needs` (or, without `needs`, every job of the earlier stages) have finished, `when` they
 * ended as it asks; `allow_failure`, `retry` and `variables` as there.
 */

/** The pipeline file a repository holds, which webhooks and `boxcar pipeline --repo` run. */
export const JOB_FILE = '.boxcar.yml';

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
const VAR = /^[A-Za-z_][A-Za-z0-9_]*$/;
/** GitLab's stages when a file names none; a job without `stage` is in `test`. */
export const DEFAULT_STAGES = ['build', 'test', 'deploy'];
export const DEFAULT_STAGE = 'test';

/** What a job may be retried for: its sandbox failed to start or run (the default), its script failed, it timed out. */
export const RETRY_REASONS = ['infrastructure_failure', 'script_failure', 'timeout'] as const;
export type RetryReason = (typeof RETRY_REASONS)[number];

const Variables = z
  .record(
    z.string().regex(VAR, 'variable names are letters, digits and _'),
    z.union([z.string(), z.number(), z.boolean()]).transform(String),
  )
  .default({});

/** `retry: 2` is `retry: { max: 2 }`: infrastructure failures only, unless `when` says more. */
const Retry = z.preprocess(
  (v) => (typeof v === 'number' ? { max: v } : v),
  z.strictObject({
    max: z.number().int().min(0).max(2, 'at most 2 retries, as in GitLab CI'),
    when: z.array(z.enum(RETRY_REASONS)).min(1).default(['infrastructure_failure']),
  }),
);

export const PipelineJobInput = JobSpecInput.extend({
  stage: z.string().regex(NAME, 'use a stage named in `stages`').optional(),
  /** Names of jobs this one waits for and takes the artifacts of; `[]`: start at once. */
  needs: z.array(z.string().regex(NAME)).optional(),
  when: z.enum(['on_success', 'on_failure', 'always']).default('on_success'),
  allow_failure: z.boolean().default(false),
  retry: Retry.default({ max: 0, when: ['infrastructure_failure'] }),
  /** GitLab's word for the job's environment; merged over the pipeline's. */
  variables: Variables,
}).refine(commandGiven, COMMAND_REQUIRED);

const CheckoutDefault = z.strictObject({
  url: z.string().min(1),
  commit: z.string().regex(/^[0-9a-f]{40}$/, 'must be a full 40-character commit id'),
  submodules: z.boolean().default(false),
});

export const PipelineSpec = z
  .strictObject({
    name: z.string().min(1),
    stages: z.array(z.string().regex(NAME)).min(1).optional(),
    variables: Variables,
    /** Every job's checkout unless it names its own (set by webhooks and `boxcar pipeline --repo`). */
    checkout: CheckoutDefault.optional(),
    jobs: z.array(PipelineJobInput).min(1, 'a pipeline needs at least one job'),
  })
  .superRefine((p, ctx) => {
    const stages = p.stages ?? DEFAULT_STAGES;
    const names = new Map<string, number>();
    p.jobs.forEach((j, i) => {
      if (names.has(j.name))
        ctx.addIssue({
          code: 'custom',
          path: ['jobs', i, 'name'],
          message: `"${j.name}" names two jobs; give each job its own name`,
        });
      names.set(j.name, i);
      if (!stages.includes(j.stage ?? DEFAULT_STAGE))
        ctx.addIssue({
          code: 'custom',
          path: ['jobs', i, 'stage'],
          message: `"${j.stage ?? DEFAULT_STAGE}" is not one of the stages (${stages.join(', ')}); add it to stages`,
        });
    });
    p.jobs.forEach((j, i) =>
      (j.needs ?? []).forEach((n, k) => {
        const other = names.get(n);
        if (other === undefined)
          ctx.addIssue({ code: 'custom', path: ['jobs', i, 'needs', k], message: `no job is named "${n}"` });
        else if (
          stages.indexOf(p.jobs[other]?.stage ?? DEFAULT_STAGE) > stages.indexOf(j.stage ?? DEFAULT_STAGE)
        )
          ctx.addIssue({
            code: 'custom',
            path: ['jobs', i, 'needs', k],
            message: `"${n}" is in a later stage; a job can only need jobs of its own or earlier stages`,
          });
      }),
    );
    const cycle = findCycle(planOf(p).jobs);
    if (cycle)
      ctx.addIssue({
        code: 'custom',
        path: ['jobs'],
        message: `needs go round in a circle: ${cycle.join(' → ')}`,
      });
  });

export type PipelineFile = z.output<typeof PipelineSpec>;

export interface PlannedJob {
  name: string;
  stage: string;
  /** The jobs it waits for (its `needs`, or every job of the earlier stages). */
  after: string[];
  /** Whether it named `needs` (only then are its artifacts limited to those jobs'). */
  explicitNeeds: boolean;
  when: 'on_success' | 'on_failure' | 'always';
  allowFailure: boolean;
  retry: { max: number; when: RetryReason[] };
  spec: JobSpec;
}

/** The pipeline as the store keeps it: every job's spec and where it sits in the DAG. */
export interface PipelinePlan {
  name: string;
  stages: string[];
  jobs: PlannedJob[];
}

/** The pipeline's DAG from its file (validated or not: `PipelineSpec` checks it with this). */
export function planOf(
  p: Omit<PipelineFile, 'jobs'> & { jobs: Array<z.output<typeof PipelineJobInput>> },
): PipelinePlan {
  const stages = p.stages ?? DEFAULT_STAGES;
  const stageOf = (j: { stage?: string }) => j.stage ?? DEFAULT_STAGE;
  const jobs = p.jobs.map(({ stage, needs, when, allow_failure, retry, variables, ...job }): PlannedJob => {
    const spec = normalizeJobSpec({ ...job, checkout: job.checkout ?? p.checkout });
    spec.env = { ...p.variables, ...variables, ...spec.env };
    const at = stages.indexOf(stage ?? DEFAULT_STAGE);
    return {
      name: job.name,
      stage: stage ?? DEFAULT_STAGE,
      after: needs ?? p.jobs.filter((o) => stages.indexOf(stageOf(o)) < at).map((o) => o.name),
      explicitNeeds: needs !== undefined,
      when,
      allowFailure: allow_failure,
      retry,
      spec,
    };
  });
  return { name: p.name, stages, jobs };
}

/** A circle of needs (names, the first again at the end), if there is one. */
export function findCycle(jobs: Array<Pick<PlannedJob, 'name' | 'after'>>): string[] | undefined {
  const after = new Map(jobs.map((j) => [j.name, j.after]));
  const state = new Map<string, 'open' | 'done'>();
  const path: string[] = [];
  const visit = (n: string): string[] | undefined => {
    if (state.get(n) === 'done') return undefined;
    if (state.get(n) === 'open') return [...path.slice(path.indexOf(n)), n];
    state.set(n, 'open');
    path.push(n);
    for (const m of after.get(n) ?? []) {
      const c = visit(m);
      if (c) return c;
    }
    path.pop();
    state.set(n, 'done');
    return undefined;
  };
  for (const j of jobs) {
    const c = visit(j.name);
    if (c) return c;
  }
  return undefined;
}
