import { randomUUID } from 'node:crypto';
import type { Boxcar } from '../boxcar.js';
import { UserError } from '../lib/errors.js';
import type { JobSpec } from '../jobs/spec.js';
import { pinSpec } from '../images/resolve.js';
import { decide, requireRunnable } from '../runner/decide.js';
import { trustFromSpec, webhookClaims } from '../policy/route.js';
import type { TrustInputs } from '../policy/trust.js';
import { IllegalTransition, ZERO_USAGE, type JobOrigin, type JobRecord } from '../store/store.js';
import { checkLimits } from '../tenants/limits.js';
import { ceilingOf, tenantSettings } from '../tenants/tenant-config.js';
import { admit } from '../tenants/quota.js';
import type { Placement } from './capacity.js';
import { observeAdmission, observeDecision, type AdmissionReason } from '../observability/metrics.js';

export class JobRefused extends UserError {
  constructor(
    message: string,
    readonly job: JobRecord,
  ) {
    super(message);
    this.name = 'JobRefused';
  }
}

/** Runs a check of the job's own input; its refusal is counted under `reason`. */
async function refusedFor<T>(reason: AdmissionReason, check: () => T | Promise<T>): Promise<T> {
  try {
    return await check();
  } catch (err) {
    if (err instanceof UserError) observeAdmission('refused', reason);
    throw err;
  }
}

/** The tenant has as many jobs waiting as it may (HTTP 429: try again later). */
export class QueueFull extends UserError {
  constructor(message: string) {
    super(message);
    this.name = 'QueueFull';
  }
}

export interface Submission {
  /** Chosen by the caller (a pipeline reserves its jobs' ids); default: a new one. */
  id?: string;
  tenant: string;
  spec: JobSpec;
  origin: JobOrigin;
  /** For webhook jobs: what the payload says of the code. */
  classifier?: TrustInputs;
}

/**
 * Accepting a job into the queue of a serving node (API, webhooks). Trust is granted, never
 * claimed: the lowest of the tenant's ceiling, the job's own fields (no default: a job that
 * does not say is untrusted) and, for webhook jobs, the payload's classifier. Then the checks
 * that can fail at once rather than leave a job waiting forever: the tenant's limits and queue
 * cap, a runtime this node can run, the secrets a trusted job names, quotas and capacity. A job
 * that can never fit its quota or a node is recorded with the reason, in `error`, and refused.
 */
export async function acceptJob(box: Boxcar, placement: Placement, input: Submission): Promise<JobRecord> {
  const tenant = tenantSettings(box.config.tenants, input.tenant);
  await refusedFor('limits', () => checkLimits(input.spec, tenant));
  const queued = await box.store.countJobs(tenant.name, ['queued']);
  if (queued >= tenant.maxQueued) {
    observeAdmission('refused', 'queue_full');
    throw new QueueFull(
      `tenant ${tenant.name} has ${queued} jobs waiting, its most (max_queued ${tenant.maxQueued}); submit again once some have started`,
    );
  }
  // A tag means what it means now: every attempt of the job runs this digest, and the
  // tenant's own credentials must reach it (a cached private image is no one else's).
  const identity = box.registryLogins.identity(tenant.name);
  const spec = await pinSpec(input.spec, box.puller, identity);
  const id = input.id ?? randomUUID();
  const ceiling = ceilingOf(tenant);
  const trust = input.classifier
    ? webhookClaims(spec, input.classifier, ceiling)
    : { ceiling, claim: trustFromSpec(spec) };
  const decision = await refusedFor('policy', () => decide(box, id, spec, { trust }));
  await refusedFor('runtime', () => requireRunnable(box, decision));
  if (decision.trust === 'trusted' && spec.secrets.length) {
    const missing = await box.secrets.missing(tenant.name, input.origin.repository, spec.secrets);
    if (missing.length) {
      observeAdmission('refused', 'secrets');
      throw new UserError(
        `secrets: ${missing.join(', ')} ${missing.length === 1 ? 'is' : 'are'} not set for tenant ${tenant.name}${input.origin.repository ? ` or repository ${input.origin.repository}` : ''}; set ${missing.length === 1 ? 'it' : 'them'} with \`boxcar secret set --tenant ${tenant.name} NAME\`, or drop ${missing.length === 1 ? 'it' : 'them'} from the job`,
      );
    }
  }
  const quota = admit(box.config.quotas, tenant.name, ZERO_USAGE, spec);
  const never =
    !quota.admit && quota.never
      ? quota.reason
      : placement.fitsEmpty(spec)
        ? undefined
        : `requests more than this node has (${placement.capacity.memoryBytes} bytes, ${placement.capacity.cpuMillis}m CPU); lower resources.requests`;
  const job = await box.store.createJob({
    id,
    tenant: tenant.name,
    spec,
    decision,
    origin: input.origin,
    owner: null,
  });
  observeDecision(decision);
  if (!never) return job;
  observeAdmission('refused', !quota.admit ? 'quota' : 'capacity');
  // A scheduler may have seen it first and refused it the same way.
  const refused = await box.store
    .transition(id, 'error', { finishedAt: Date.now(), error: never }, never, {
      tenant: tenant.name,
      actor: input.origin.actor,
      action: 'job.refused',
      subject: id,
      detail: { reason: never },
    })
    .catch(async (err: unknown) => {
      if (err instanceof IllegalTransition) return (await box.store.getJob(id)) as JobRecord;
      throw err;
    });
  throw new JobRefused(never, refused);
}
