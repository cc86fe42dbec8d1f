import type { RoutingPolicy } from '../policy/policy-schema.js';
import type { RuntimeRegistry } from '../runtimes/registry.js';
import type { Store } from '../store/store.js';
import { UserError } from '../lib/errors.js';
import type { JobSpec, RuntimeName } from '../jobs/spec.js';
import type { Decision } from '../jobs/decision.js';
import { RuntimeHealthBook, type HealthOverride } from '../policy/health.js';
import { route } from '../policy/route.js';
import type { TrustClaims } from '../policy/trust.js';

/** What routing on this node reads: the policy, the runtimes' fingerprints, recorded starts. */
export interface DecideDeps {
  policy: RoutingPolicy;
  runtimes: Pick<RuntimeRegistry, 'fingerprint'>;
  store: Pick<Store, 'recentStarts'>;
}

/**
 * Routes a job on this node with the policy and the runtimes' recorded health (`overrides`
 * replace the measured health, for `policy explain`).
 */
export async function decide(
  deps: DecideDeps,
  jobId: string,
  spec: JobSpec,
  opts: { trust: TrustClaims; overrides?: HealthOverride[] },
): Promise<Decision> {
  const health = await new RuntimeHealthBook(deps.policy, (r) => deps.runtimes.fingerprint(r)).loadHistory(
    deps.store,
  );
  // Only the runtimes the router asks about are fingerprinted (each costs a few processes): it
  // routes with the others assumed usable, and again once what it asked for is known, until it
  // asks for nothing new. Routing is pure, so the last decision is the one all views would give.
  const now = Date.now();
  const known = new Set<RuntimeName>();
  for (;;) {
    const views = await health.views(now, opts.overrides, known);
    const asked = new Set<RuntimeName>();
    const decision = route(deps.policy, { jobId, spec, trust: opts.trust }, (r) => {
      asked.add(r);
      return views(r);
    });
    const unknown = [...asked].filter((r) => !known.has(r));
    if (!unknown.length) return decision;
    for (const r of unknown) known.add(r);
  }
}

/** Refuses, before anything is recorded, a decision for a runtime this node cannot run. */
export async function requireRunnable(deps: Pick<DecideDeps, 'runtimes'>, decision: Decision): Promise<void> {
  const fp = await deps.runtimes.fingerprint(decision.runtime);
  if (!fp.usable)
    throw new UserError(
      `runtime ${decision.runtime} cannot run jobs on this node: ${fp.reason} (${decision.reasons.at(-1)})`,
    );
}
