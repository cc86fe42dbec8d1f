import { z } from 'zod';
import { COMMAND_REQUIRED, JobSpecInput, commandGiven, normalizeJobSpec, type JobSpec } from './spec.js';

/**
 * A CI pipeline file: jobs run in order, like stages of one job each. `allow_failure` marks a
 * job whose failure is reported but does not fail the pipeline (as in GitLab CI).
 */
export const PipelineSpec = z.strictObject({
  name: z.string().min(1),
  jobs: z
    .array(
      JobSpecInput.extend({ allow_failure: z.boolean().default(false) }).refine(
        commandGiven,
        COMMAND_REQUIRED,
      ),
    )
    .min(1, 'a pipeline needs at least one job'),
});

export interface PipelineJob {
  spec: JobSpec;
  allowFailure: boolean;
}

export function pipelineJobs(p: z.output<typeof PipelineSpec>): PipelineJob[] {
  return p.jobs.map(({ allow_failure, ...job }) => ({
    spec: normalizeJobSpec(job),
    allowFailure: allow_failure,
  }));
}
