import { z } from 'zod';
import { parseBytes, parseCpuMillis, parseDurationMs } from '../lib/quantity.js';
import { parsedField } from '../lib/validation.js';
import { matches, type Ceiling } from '../policy/trust.js';

export const TENANT_NAME = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
export const TenantName = z
  .string()
  .regex(TENANT_NAME, 'a tenant is a Kubernetes namespace name: 1-63 of a-z, 0-9 and "-", e.g. team-a');

export const TRUST_LEVELS = ['trusted', 'untrusted'] as const;

const Ratio = z.union([z.number(), z.string()]).transform((v, ctx) => {
  const n = Number(v);
  if (Number.isFinite(n) && n >= 1) return n;
  ctx.addIssue({ code: 'custom', message: `"${v}" is not a ratio; use a number of at least 1, e.g. 4` });
  return z.NEVER;
});

/** One LimitRange section: every key optional. */
const Amounts = z.strictObject({
  memory: parsedField(parseBytes).optional(),
  cpu: parsedField(parseCpuMillis).optional(),
  pids: z.number().int().min(8).max(65536).optional(),
  timeout: parsedField(parseDurationMs).optional(),
});
const Requests = z.strictObject({
  memory: parsedField(parseBytes).optional(),
  cpu: parsedField(parseCpuMillis).optional(),
});

export const TenantLimits = z.strictObject({
  /** A job's limits where it gives none (LimitRange `default`). */
  default: Amounts.default({}),
  /** A job's requests where it gives none (LimitRange `defaultRequest`). */
  defaultRequest: Requests.default({}),
  /** The most a job may ask for (LimitRange `max`). */
  max: Amounts.default({}),
  /** How many times its request a limit may be (LimitRange `maxLimitRequestRatio`). */
  maxLimitRequestRatio: z.strictObject({ memory: Ratio.optional(), cpu: Ratio.optional() }).default({}),
});
export type TenantLimits = z.output<typeof TenantLimits>;

/**
 * Tenants as the operator configures them (`tenants:` in the config file): a trust ceiling, a
 * share of the node when tenants compete (`weight`), and limits with Kubernetes LimitRange
 * semantics (defaults filled in where a job says nothing, maxima it may not pass, and how far
 * a request may sit below its limit), plus queue limits. A tenant not listed gets the built-in
 * settings below, whose ceiling is `untrusted`.
 */
export const TenantConfig = z.strictObject({
  /** The most trust any job of this tenant can get, whatever the job says about itself. */
  trust: z.enum(TRUST_LEVELS).default('untrusted'),
  /** Its share when tenants compete for a node (2: twice the jobs of a tenant of weight 1). */
  weight: z.number().positive().max(1000).default(1),
  limits: TenantLimits.prefault({}),
  /** Jobs it may have waiting in the queue at once; more are refused (HTTP 429). */
  max_queued: z.number().int().positive().optional(),
  /** The highest `priority` its jobs may ask for (priority orders a tenant's own jobs only). */
  max_priority: z.number().int().min(-1000).max(1000).optional(),
});
export type TenantConfig = z.output<typeof TenantConfig>;

export const TenantsConfig = z.record(TenantName, TenantConfig).default({});
export type TenantsConfig = z.output<typeof TenantsConfig>;

/**
 * What every tenant gets where its own entry says nothing. A memory limit may be at most four
 * times its request, so no tenant can pack a node with `requests.memory: 1`; CPU is left free
 * (a low CPU request slows jobs, it cannot exhaust the node). The queue cap keeps one tenant
 * from filling the store.
 */
export const BUILT_IN_LIMITS = { memoryLimitRequestRatio: 4, maxQueued: 10_000 } as const;

/** A tenant's settings with every default applied. */
export interface Tenant {
  name: string;
  /** Whether the config file lists it (the reasons say where a ceiling comes from). */
  listed: boolean;
  trust: (typeof TRUST_LEVELS)[number];
  weight: number;
  limits: TenantLimits;
  maxQueued: number;
  maxPriority: number | undefined;
}

export function tenantSettings(tenants: TenantsConfig, name: string): Tenant {
  const own = tenants[name];
  const c = own ?? TenantConfig.parse({});
  return {
    name,
    listed: own !== undefined,
    trust: c.trust,
    weight: c.weight,
    limits: {
      ...c.limits,
      maxLimitRequestRatio: {
        memory: c.limits.maxLimitRequestRatio.memory ?? BUILT_IN_LIMITS.memoryLimitRequestRatio,
        cpu: c.limits.maxLimitRequestRatio.cpu,
      },
    },
    maxQueued: c.max_queued ?? BUILT_IN_LIMITS.maxQueued,
    maxPriority: c.max_priority,
  };
}

/** The tenant's trust ceiling, saying where it comes from. */
export function ceilingOf(t: Tenant): Ceiling {
  if (!t.listed)
    return {
      trust: t.trust,
      why: `tenant ${t.name} is not listed under tenants in the config, so it is ${t.trust}`,
    };
  return { trust: t.trust, why: `tenant ${t.name} is ${t.trust} (tenants.${t.name}.trust)` };
}

/** The tenant a repository's jobs belong to: an exact mapping, then an `owner/*` one, then the default. */
export function tenantForRepository(
  github: { tenant: string; repositories: Record<string, string> },
  repository: string,
): string {
  const exact = github.repositories[repository];
  if (exact) return exact;
  for (const [pattern, tenant] of Object.entries(github.repositories))
    if (matches(pattern, repository)) return tenant;
  return github.tenant;
}
