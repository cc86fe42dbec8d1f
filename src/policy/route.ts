import { UserError } from '../lib/errors.js';
import type { JobSpec, RuntimeName } from '../jobs/spec.js';
import type { BreakerState, Health } from './breaker.js';
import { conditionsHolding } from './breaker.js';
import { canaryBucket } from './canary.js';
import type { Decision, FallbackReason } from '../jobs/decision.js';
import type { RoutingPolicy } from './policy-schema.js';
import {
  conditionHolds,
  describeCondition,
  grantTrust,
  type Ceiling,
  type TrustClaims,
  type TrustInputs,
} from './trust.js';

export interface RuntimeView {
  /** The driver's fingerprint on this node. */
  usable: boolean;
  reason: string;
  health: Health;
  breaker: BreakerState;
  breakerReason: string;
  /** Whether it may run untrusted code here, and the caveat to record when that is an opt-in. */
  untrustedCode: { allowed: boolean; why?: string };
}

export type RuntimeViews = (runtime: RuntimeName) => RuntimeView;

export interface RouteRequest {
  jobId: string;
  spec: JobSpec;
  trust: TrustClaims;
}

/** A job the policy will not run as asked (an untrusted job asking for runc). */
export class PolicyRefusal extends UserError {}

/** Trust inputs of a job from its own fields (CLI flags or job file). */
export function trustFromSpec(spec: JobSpec): TrustInputs {
  return {
    source: spec.source,
    userGroup: spec.userGroup,
    repository: spec.repository,
    imageKind: spec.imageKind,
    evidence: [],
  };
}

/**
 * A webhook job's claims: its own fields where its file gives them (else what the payload
 * says), the payload's own classification, and its tenant's ceiling.
 */
export function webhookClaims(spec: JobSpec, classifier: TrustInputs, ceiling: Ceiling): TrustClaims {
  const own = trustFromSpec(spec);
  return {
    ceiling,
    classifier,
    claim: {
      source: own.source ?? classifier.source,
      userGroup: own.userGroup ?? classifier.userGroup,
      repository: own.repository ?? classifier.repository,
      imageKind: own.imageKind,
      evidence: [],
    },
  };
}

/**
 * The routing decision: trust first, then the runtime that trust allows, then the canary
 * split and the health of the primary. Pure: everything it knows about runtimes comes in
 * through `views`, so `policy explain` and the scheduler decide exactly alike.
 */
export function route(policy: RoutingPolicy, req: RouteRequest, views: RuntimeViews): Decision {
  const cls = grantTrust(policy, req.trust);
  const reasons = [...cls.reasons];
  const decide = (
    runtime: RuntimeName,
    fallback: RuntimeName | null,
    why: string,
    fellBack?: Decision['fellBack'],
  ): Decision => ({
    trust: cls.trust,
    runtime,
    fallback,
    reasons: [...reasons, why],
    ...(fellBack ? { fellBack } : {}),
  });
  if (cls.trust === 'untrusted' && req.spec.secrets.length) {
    reasons.push(`secrets withheld from an untrusted job: ${req.spec.secrets.join(', ')}`);
  }
  const requested = req.spec.runtime;

  const light = policy.lightweight;
  const lightHolds = (r: RuntimeName) => cls.trust === 'trusted' || views(r).untrustedCode.allowed;
  if (
    !requested &&
    light &&
    light.conditions.every((c) => conditionHolds(c, req.trust.claim)) &&
    lightHolds(light.runtime)
  ) {
    return decide(
      light.runtime,
      null,
      `lightweight job (${light.conditions.map(describeCondition).join(', ')}): runs on ${light.runtime}`,
    );
  }

  if (cls.trust === 'trusted' && policy.trusted_code) {
    const runtime = requested ?? policy.trusted_code.runtime;
    return decide(
      runtime,
      null,
      requested ? `runtime ${runtime} requested` : `trusted code runs on ${runtime}`,
    );
  }

  if (req.spec.network.enabled && !policy.untrusted_code.network) {
    throw new PolicyRefusal(
      `this job is untrusted (${cls.unmet.join('; ')}) and the policy gives untrusted code no network (untrusted_code.network: false); run it without network`,
    );
  }
  if (requested === 'runc') {
    throw new PolicyRefusal(
      `this job is untrusted (${cls.unmet.join('; ')}), so it may not run on runc, a shared kernel; drop --runtime or choose gvisor, firecracker or wasm`,
    );
  }
  if (requested) {
    const boundary = views(requested).untrustedCode;
    if (!boundary.allowed)
      throw new PolicyRefusal(
        `this job is untrusted (${cls.unmet.join('; ')}) and ${requested} is no boundary for untrusted code on this node: ${boundary.why}; drop --runtime or choose another sandbox`,
      );
    if (boundary.why) reasons.push(boundary.why);
    return decide(requested, null, `runtime ${requested} requested (a sandbox, allowed for untrusted code)`);
  }

  const u = policy.untrusted_code;
  const primary = u.runtime;
  // A fallback that is no boundary here (a microVM on TCG) is no fallback for untrusted code.
  const fallback = u.fallback && views(u.fallback).untrustedCode.allowed ? u.fallback : null;
  if (fallback && u.canary_percent < 100) {
    const bucket = canaryBucket(req.jobId);
    if (bucket >= u.canary_percent) {
      return decide(
        fallback,
        null,
        `outside the ${u.canary_percent}% canary for ${primary} (bucket ${bucket.toFixed(1)}): runs on ${fallback}`,
        { from: primary, reason: 'canary' },
      );
    }
    reasons.push(`inside the ${u.canary_percent}% canary for ${primary} (bucket ${bucket.toFixed(1)})`);
  }

  const view = views(primary);
  const problem = primaryProblem(
    primary,
    view,
    u.fallback_conditions.filter((c) => c.runtime === primary && c.metric === 'available'),
  );
  if (problem) {
    if (!fallback && !view.untrustedCode.allowed)
      throw new PolicyRefusal(
        `this job is untrusted and no runtime here can hold it: ${problem.why}${u.fallback ? `, and ${u.fallback}: ${views(u.fallback).untrustedCode.why}` : ''}`,
      );
    if (!fallback)
      return decide(primary, null, `${problem.why}; no fallback configured, so it stays on ${primary}`);
    const fb = views(fallback);
    if (fb.untrustedCode.why) reasons.push(fb.untrustedCode.why);
    const also = fb.usable ? '' : ` (${fallback} is not usable here either: ${fb.reason})`;
    return decide(fallback, null, `falling back to ${fallback}: ${problem.why}${also}`, {
      from: primary,
      reason: problem.reason,
    });
  }
  if (view.untrustedCode.why) reasons.push(view.untrustedCode.why);
  if (view.breaker === 'half-open') reasons.push(`${primary} breaker is half-open: this job is a probe`);
  return decide(
    primary,
    fallback,
    `untrusted code runs on ${primary}${fallback ? `, fallback ${fallback}` : ''}`,
  );
}

/** Why the primary cannot take untrusted code now, if it cannot. */
function primaryProblem(
  primary: RuntimeName,
  view: RuntimeView,
  availability: Parameters<typeof conditionsHolding>[0],
): { why: string; reason: FallbackReason } | undefined {
  if (!view.usable)
    return { why: `${primary} is not usable on this node (${view.reason})`, reason: 'unusable' };
  if (!view.untrustedCode.allowed)
    return {
      why: `${primary} is no boundary for untrusted code on this node: ${view.untrustedCode.why}`,
      reason: 'no_boundary',
    };
  const unavailable = conditionsHolding(availability, view.health);
  if (unavailable.length) return { why: unavailable.join(', '), reason: 'unavailable' };
  if (view.breaker === 'open')
    return { why: `${primary} breaker is open: ${view.breakerReason}`, reason: 'breaker_open' };
  return undefined;
}
