import type { Trust, TrustInputs } from '../jobs/decision.js';
import type { Condition, RoutingPolicy } from './policy-schema.js';

export type { TrustInputs } from '../jobs/decision.js';

export interface Classification {
  trust: Trust;
  reasons: string[];
  /** Why it is not trusted, e.g. "source is external_pr, not internal_repo". */
  unmet: string[];
}

/** The most trust a job's tenant may have: granted by the operator, never by the job. */
export interface Ceiling {
  trust: Trust;
  /** Where it comes from, e.g. "tenant partners is untrusted (tenants.partners.trust)". */
  why: string;
}

/** The operator's own commands on the node (`boxcar run`, `boxcar pipeline`) have no tenant above them. */
export const OPERATOR_CEILING: Ceiling = { trust: 'trusted', why: "the operator's own command on this node" };

/**
 * The three things a job's trust is the lowest of: its tenant's ceiling, what the job says
 * about itself, and, for webhook jobs, what the payload classifier says.
 */
export interface TrustClaims {
  ceiling: Ceiling;
  /** The job's own fields (`source`, `user_group`, `repository`), as the policy's conditions read them. */
  claim: TrustInputs;
  /** What a webhook payload says of the code (a fork, the author's association). */
  classifier?: TrustInputs;
}

function valueOf(inputs: TrustInputs, key: Condition['key']): string | undefined {
  switch (key) {
    case 'source':
      return inputs.source;
    case 'user_group':
      return inputs.userGroup;
    case 'repository':
      return inputs.repository;
    case 'image_kind':
      return inputs.imageKind;
  }
}

/** `org/*` matches every repository of org; otherwise an exact match. */
export function matches(pattern: string, value: string): boolean {
  if (!pattern.includes('*')) return pattern === value;
  const re = new RegExp(
    `^${pattern
      .split('*')
      .map((p) => p.replace(/[.+?^${}()|[\]\\]/g, '\\$&'))
      .join('[^/]*')}$`,
  );
  return re.test(value);
}

export function conditionHolds(c: Condition, inputs: TrustInputs): boolean {
  const v = valueOf(inputs, c.key);
  return v !== undefined && matches(c.value, v);
}

export function describeCondition(c: Condition): string {
  return `${c.key}=${c.value}`;
}

/**
 * Trust, read safely: a job is trusted only when every trusted condition holds; a missing or
 * unknown input is a condition that does not hold. Everything else is untrusted.
 */
export function classify(policy: RoutingPolicy, inputs: TrustInputs): Classification {
  const evidence = [...inputs.evidence];
  if (!policy.trusted_code) {
    return {
      trust: 'untrusted',
      reasons: [...evidence, 'untrusted: the policy has no trusted_code section, so nothing is trusted'],
      unmet: ['no trusted_code in the policy'],
    };
  }
  const failed = policy.trusted_code.conditions.filter((c) => !conditionHolds(c, inputs));
  if (failed.length === 0) {
    return {
      trust: 'trusted',
      reasons: [
        ...evidence,
        `trusted: every trusted condition holds (${policy.trusted_code.conditions.map(describeCondition).join(', ')})`,
      ],
      unmet: [],
    };
  }
  const unmet = failed.map((c) => {
    const v = valueOf(inputs, c.key);
    return `${c.key} is ${v === undefined ? 'not given' : v}, not ${c.value}`;
  });
  return { trust: 'untrusted', reasons: [...evidence, `untrusted: ${unmet.join('; ')}`], unmet };
}

/**
 * The trust a job gets: trusted only when its tenant's ceiling, its own claim and (for webhook
 * jobs) the payload classifier all say so. The reasons name whichever lowered it.
 */
export function grantTrust(policy: RoutingPolicy, claims: TrustClaims): Classification {
  const own = classify(policy, { ...claims.claim, evidence: [] });
  const payload = claims.classifier && classify(policy, { ...claims.classifier, evidence: [] });
  const lowered: Array<{ by: string; unmet: string[] }> = [];
  if (claims.ceiling.trust === 'untrusted')
    lowered.push({ by: `the tenant's ceiling: ${claims.ceiling.why}`, unmet: [claims.ceiling.why] });
  if (payload?.trust === 'untrusted')
    lowered.push({ by: `the webhook payload: ${payload.unmet.join('; ')}`, unmet: payload.unmet });
  if (own.trust === 'untrusted')
    lowered.push({ by: `the job's own claim: ${own.unmet.join('; ')}`, unmet: own.unmet });
  const evidence = [...(claims.classifier?.evidence ?? []), ...claims.claim.evidence];
  if (lowered.length === 0) {
    const holding = policy.trusted_code?.conditions.map(describeCondition).join(', ') ?? '';
    return {
      trust: 'trusted',
      reasons: [
        ...evidence,
        `trusted: every trusted condition holds (${holding})${payload ? ' for the job and the webhook payload' : ''}; ceiling: ${claims.ceiling.why}`,
      ],
      unmet: [],
    };
  }
  return {
    trust: 'untrusted',
    reasons: [...evidence, `untrusted, lowered by ${lowered.map((l) => l.by).join('; and by ')}`],
    unmet: lowered.flatMap((l) => l.unmet),
  };
}
