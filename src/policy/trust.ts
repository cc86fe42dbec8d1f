import type { Condition, RoutingPolicy } from './policy-schema.js';

/**
 * Trust, read safely: a job is trusted only when every trusted condition holds; a missing or
 * unknown input is a condition that does not hold. Everything else is untrusted.
 */
export type Trust = 'trusted' | 'untrusted';

export interface TrustInputs {
  source?: string;
  userGroup?: string;
  repository?: string;
  imageKind?: 'wasm' | 'oci';
  /** How the inputs were derived (from a webhook payload, from flags…), for the reasons. */
  evidence: string[];
}

export interface Classification {
  trust: Trust;
  reasons: string[];
  /** The trusted conditions that did not hold, e.g. "source is external_pr, not internal_repo". */
  unmet: string[];
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
function matches(pattern: string, value: string): boolean {
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
