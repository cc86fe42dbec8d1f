import { z } from 'zod';
import { formatBytes, parseBytes, parseCpuMillis, type Parsed } from '../lib/quantity.js';
import type { JobSpec } from '../jobs/spec.js';
import type { Usage } from '../store/store.js';

const Count: (v: string | number) => Parsed<number> = (v) =>
  /^[0-9]+$/.test(String(v).trim())
    ? { ok: true, value: Number(v) }
    : { ok: false, message: `"${v}" is not a count; use a whole number, e.g. "10000"` };

const HARD = {
  pods: Count,
  'requests.memory': parseBytes,
  memory: parseBytes,
  'limits.memory': parseBytes,
  'requests.cpu': parseCpuMillis,
  cpu: parseCpuMillis,
  'limits.cpu': parseCpuMillis,
} as const;
type HardKey = keyof typeof HARD;

const MATCHING_SCOPES = ['NotTerminating', 'NotBestEffort'] as const;
const NEVER_MATCHING: Record<string, string> = {
  Terminating:
    'matches no Boxcar job (timeouts are enforced by the node, not activeDeadlineSeconds); use NotTerminating or no scope',
  BestEffort: 'matches no Boxcar job (every job has requests and limits); use NotBestEffort or no scope',
};

/**
 * Per-tenant quotas with Kubernetes ResourceQuota semantics (seed 4.3), written as the
 * manifests themselves; `metadata.namespace` is the tenant. A job is admitted only when every
 * quota of its tenant still has room for its requests and limits; admitted jobs (starting,
 * running) hold their share until they end. Boxcar enforces job timeouts itself rather than
 * through `activeDeadlineSeconds`, so every job falls in the `NotTerminating` scope, and as
 * every job has requests and limits, in `NotBestEffort`.
 */
export const ResourceQuota = z.strictObject({
  apiVersion: z.literal('v1'),
  kind: z.literal('ResourceQuota'),
  metadata: z.looseObject({
    name: z.string().min(1),
    namespace: z.string().min(1, 'the tenant this quota applies to'),
  }),
  spec: z.strictObject({
    hard: z.record(z.string(), z.union([z.string(), z.number()])).superRefine((hard, ctx) => {
      for (const [key, value] of Object.entries(hard)) {
        const parse = HARD[key as HardKey] as ((v: string | number) => Parsed<number>) | undefined;
        if (!parse) {
          ctx.addIssue({
            code: 'custom',
            path: [key],
            message: `is not a resource Boxcar accounts; use one of ${Object.keys(HARD).join(', ')}`,
          });
          continue;
        }
        const r = parse(value);
        if (!r.ok) ctx.addIssue({ code: 'custom', path: [key], message: r.message });
      }
    }),
    scopes: z
      .array(z.string())
      .default([])
      .superRefine((scopes, ctx) => {
        scopes.forEach((s, i) => {
          if ((MATCHING_SCOPES as readonly string[]).includes(s)) return;
          ctx.addIssue({
            code: 'custom',
            path: [i],
            message: NEVER_MATCHING[s] ?? `is not a supported scope; use ${MATCHING_SCOPES.join(' or ')}`,
          });
        });
      }),
  }),
});
export type ResourceQuota = z.output<typeof ResourceQuota>;

/** A quota's hard limits in Boxcar's units (bytes, millicores); absent = not limited. */
export interface Hard {
  name: string;
  tenant: string;
  pods?: number;
  requestsMemoryBytes?: number;
  limitsMemoryBytes?: number;
  requestsCpuMillis?: number;
  limitsCpuMillis?: number;
}

const parsedOrThrow = (r: Parsed<number>) => {
  if (!r.ok) throw new Error(r.message); // validated by the schema already
  return r.value;
};

export function hardLimits(q: ResourceQuota): Hard {
  const v = (key: HardKey) => {
    const raw = q.spec.hard[key];
    return raw === undefined ? undefined : parsedOrThrow(HARD[key](raw));
  };
  return {
    name: q.metadata.name,
    tenant: q.metadata.namespace,
    pods: v('pods'),
    requestsMemoryBytes: v('requests.memory') ?? v('memory'),
    limitsMemoryBytes: v('limits.memory'),
    requestsCpuMillis: v('requests.cpu') ?? v('cpu'),
    limitsCpuMillis: v('limits.cpu'),
  };
}

export function jobUsage(spec: JobSpec): Usage {
  return {
    pods: 1,
    requestsMemoryBytes: spec.requests.memoryBytes,
    limitsMemoryBytes: spec.limits.memoryBytes,
    requestsCpuMillis: spec.requests.cpuMillis,
    limitsCpuMillis: spec.limits.cpuMillis,
  };
}

export function addUsage(a: Usage, b: Usage): Usage {
  return {
    pods: a.pods + b.pods,
    requestsMemoryBytes: a.requestsMemoryBytes + b.requestsMemoryBytes,
    limitsMemoryBytes: a.limitsMemoryBytes + b.limitsMemoryBytes,
    requestsCpuMillis: a.requestsCpuMillis + b.requestsCpuMillis,
    limitsCpuMillis: a.limitsCpuMillis + b.limitsCpuMillis,
  };
}

const RESOURCES: Array<[keyof Usage, string, (n: number) => string]> = [
  ['pods', 'pods', String],
  ['requestsMemoryBytes', 'requests.memory', formatBytes],
  ['limitsMemoryBytes', 'limits.memory', formatBytes],
  ['requestsCpuMillis', 'requests.cpu', (m) => `${m}m`],
  ['limitsCpuMillis', 'limits.cpu', (m) => `${m}m`],
];

export type Admission = { admit: true } | { admit: false; never: boolean; reason: string };

/**
 * Whether a job fits its tenant's quotas given what the tenant's admitted jobs hold. `never`
 * when the job alone exceeds a hard limit: it could not run even with nothing else running.
 */
export function admit(quotas: readonly Hard[], tenant: string, used: Usage, spec: JobSpec): Admission {
  const want = jobUsage(spec);
  for (const q of quotas) {
    if (q.tenant !== tenant) continue;
    for (const [key, name, show] of RESOURCES) {
      const hard = q[key as keyof Hard] as number | undefined;
      if (hard === undefined) continue;
      if (want[key] > hard)
        return {
          admit: false,
          never: true,
          reason: `exceeds quota ${q.name}: ${name} ${show(want[key])} is more than the hard limit ${show(hard)}`,
        };
      if (used[key] + want[key] > hard)
        return {
          admit: false,
          never: false,
          reason: `waiting for quota ${q.name}: ${name} used ${show(used[key])} + requested ${show(want[key])} > hard ${show(hard)}`,
        };
    }
  }
  return { admit: true };
}
