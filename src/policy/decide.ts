import type { Boxcar } from '../boxcar.js';
import { UserError } from '../errors.js';
import type { JobSpec } from '../jobs/spec.js';
import type { Decision } from './decision.js';
import { RuntimeHealthBook, type HealthOverride } from './health.js';
import { route } from './route.js';
import type { TrustClaims } from './trust.js';

/**
 * Routes a job on this node with the policy and the runtimes' recorded health (`overrides`
 * replace the measured health, for `policy explain`).
 */
export async function decide(
  box: Boxcar,
  jobId: string,
  spec: JobSpec,
  opts: { trust: TrustClaims; overrides?: HealthOverride[] },
): Promise<Decision> {
  const health = await new RuntimeHealthBook(box.policy, (r) => box.runtimes.fingerprint(r)).loadHistory(
    box.store,
  );
  return route(
    box.policy,
    { jobId, spec, trust: opts.trust },
    await health.views(Date.now(), opts.overrides),
  );
}

/** Refuses, before anything is recorded, a decision for a runtime this node cannot run. */
export async function requireRunnable(box: Boxcar, decision: Decision): Promise<void> {
  const fp = await box.runtimes.fingerprint(decision.runtime);
  if (!fp.usable)
    throw new UserError(
      `runtime ${decision.runtime} cannot run jobs on this node: ${fp.reason} (${decision.reasons.at(-1)})`,
    );
}
