import { randomUUID } from 'node:crypto';
import type { Boxcar } from '../boxcar.js';
import { UserError } from '../errors.js';
import type { JobSpec } from '../jobs/spec.js';
import { decide, requireRunnable } from '../policy/decide.js';
import { trustFromSpec } from '../policy/route.js';
import type { TrustInputs } from '../policy/trust.js';
import { IllegalTransition, type JobRecord } from '../store/store.js';
import { admit, ZERO_USAGE } from './quota.js';
import type { Placement } from './capacity.js';

/**
 * Accepting a job into the queue of a serving node (API, webhooks): trust from where the code
 * comes from, with no default (a job that does not say is untrusted), a routing decision, and
 * the checks that can fail at once rather than leave a job waiting forever. A job that can
 * never fit its quota or a node is recorded with the reason, in `error`, and refused.
 */
export class JobRefused extends UserError {
  constructor(
    message: string,
    readonly job: JobRecord,
  ) {
    super(message);
    this.name = 'JobRefused';
  }
}

export async function acceptJob(
  box: Boxcar,
  placement: Placement,
  input: { tenant: string; spec: JobSpec; trust?: TrustInputs },
): Promise<JobRecord> {
  const id = randomUUID();
  const decision = await decide(box, id, input.spec, { trust: input.trust ?? trustFromSpec(input.spec) });
  await requireRunnable(box, decision);
  const quota = admit(box.config.quotas, input.tenant, ZERO_USAGE, input.spec);
  const never =
    !quota.admit && quota.never
      ? quota.reason
      : placement.fitsEmpty(input.spec)
        ? undefined
        : `requests more than this node has (${placement.capacity.memoryBytes} bytes, ${placement.capacity.cpuMillis}m CPU); lower resources.requests`;
  const job = await box.store.createJob({
    id,
    tenant: input.tenant,
    spec: input.spec,
    decision,
    owner: null,
  });
  if (!never) return job;
  // A scheduler may have seen it first and refused it the same way.
  const refused = await box.store
    .transition(id, 'error', { finishedAt: Date.now(), error: never }, never)
    .catch(async (err: unknown) => {
      if (err instanceof IllegalTransition) return (await box.store.getJob(id)) as JobRecord;
      throw err;
    });
  throw new JobRefused(never, refused);
}
