import { z } from 'zod';
import { parseDurationMs } from '../lib/quantity.js';
import { RUNTIME_NAMES, RuntimeName, SOURCES } from '../jobs/spec.js';
import { parsedField } from '../lib/validation.js';

export const CONDITION_KEYS = ['source', 'user_group', 'repository', 'image_kind'] as const;
export type ConditionKey = (typeof CONDITION_KEYS)[number];
export interface Condition {
  key: ConditionKey;
  value: string;
}

const IMAGE_KINDS = ['wasm', 'oci'];

const ConditionSchema = z
  .record(z.string(), z.union([z.string(), z.number(), z.boolean()]))
  .transform((m, ctx): Condition => {
    const entries = Object.entries(m);
    if (entries.length !== 1) {
      ctx.addIssue({
        code: 'custom',
        message: `a condition is one "key: value" pair, e.g. {source: internal_repo}; got ${entries.length} keys`,
      });
      return z.NEVER;
    }
    const [key, raw] = entries[0] as [string, unknown];
    const value = String(raw);
    if (!(CONDITION_KEYS as readonly string[]).includes(key)) {
      ctx.addIssue({
        code: 'custom',
        message: `unknown condition "${key}"; use one of ${CONDITION_KEYS.join(', ')}`,
      });
      return z.NEVER;
    }
    if (key === 'source' && !(SOURCES as readonly string[]).includes(value)) {
      ctx.addIssue({ code: 'custom', message: `source "${value}" is not one of ${SOURCES.join(', ')}` });
      return z.NEVER;
    }
    if (key === 'image_kind' && !IMAGE_KINDS.includes(value)) {
      ctx.addIssue({
        code: 'custom',
        message: `image_kind "${value}" is not one of ${IMAGE_KINDS.join(', ')}`,
      });
      return z.NEVER;
    }
    return { key: key as ConditionKey, value };
  });

export const METRICS = ['failure_rate', 'available'] as const;
export type Metric = (typeof METRICS)[number];
export const OPERATORS = ['>', '>=', '<', '<=', '==', '!='] as const;
export type Operator = (typeof OPERATORS)[number];

export interface FallbackCondition {
  runtime: RuntimeName;
  metric: Metric;
  op: Operator;
  value: number;
  text: string;
}

const FALLBACK_SHAPE = /^\s*([a-z0-9]+)_([a-z_]+)\s*([^\sa-z0-9.]+)\s*(\S+)\s*$/i;

export function parseFallbackCondition(
  text: string,
): { ok: true; value: FallbackCondition } | { ok: false; message: string } {
  const m = FALLBACK_SHAPE.exec(text);
  if (!m)
    return {
      ok: false,
      message: `"${text}" is not "<runtime>_<metric> <op> <number>", e.g. "firecracker_failure_rate > 0.01"`,
    };
  const [, runtime, metric, op, num] = m as unknown as [string, string, string, string, string];
  if (!(RUNTIME_NAMES as readonly string[]).includes(runtime)) {
    return {
      ok: false,
      message: `unknown runtime "${runtime}" in "${text}"; use one of ${RUNTIME_NAMES.join(', ')}`,
    };
  }
  if (!(METRICS as readonly string[]).includes(metric)) {
    return {
      ok: false,
      message: `unknown metric "${metric}" in "${text}"; use one of ${METRICS.join(', ')}`,
    };
  }
  if (!(OPERATORS as readonly string[]).includes(op)) {
    return { ok: false, message: `unknown operator "${op}" in "${text}"; use one of ${OPERATORS.join(' ')}` };
  }
  const value = Number(num);
  if (!Number.isFinite(value) || value < 0 || value > 1) {
    return { ok: false, message: `"${num}" in "${text}" is not a number between 0 and 1` };
  }
  return {
    ok: true,
    value: {
      runtime: runtime as RuntimeName,
      metric: metric as Metric,
      op: op as Operator,
      value,
      text: text.trim(),
    },
  };
}

const FallbackConditionSchema = z.string().transform((s, ctx) => {
  const r = parseFallbackCondition(s);
  if (r.ok) return r.value;
  ctx.addIssue({ code: 'custom', message: r.message });
  return z.NEVER;
});

const SandboxRuntime = RuntimeName.refine(
  (r) => r !== 'runc',
  'untrusted code never runs on runc (a shared kernel); use firecracker, gvisor or wasm',
);

/**
 * The routing policy file: the seed's `routing_policy` verbatim (sections 2.2 and 9.2), plus
 * `canary_percent`, a `lightweight` section and the breaker's tuning. Conditions are one-key
 * mappings; fallback conditions are `<runtime>_<metric> <op> <number>` strings.
 */
export const PolicyFile = z.strictObject({
  routing_policy: z.strictObject({
    /** Absent (as in the seed's section 9.2 excerpt): nothing is trusted. */
    trusted_code: z
      .strictObject({
        runtime: RuntimeName,
        conditions: z
          .array(ConditionSchema)
          .min(1, 'trusted code needs at least one condition (with none, everything would be trusted)'),
      })
      .optional(),
    untrusted_code: z.strictObject({
      runtime: SandboxRuntime,
      fallback: SandboxRuntime.optional(),
      canary_percent: z.number().min(0).max(100).default(100),
      /** Whether untrusted jobs may have network at all (public destinations only, rate-limited). */
      network: z.boolean().default(false),
      fallback_conditions: z.array(FallbackConditionSchema).default([]),
      conditions: z.array(ConditionSchema).default([]),
    }),
    lightweight: z
      .strictObject({
        runtime: RuntimeName,
        conditions: z.array(ConditionSchema).default([{ key: 'image_kind', value: 'wasm' }] as never),
      })
      .optional(),
    breaker: z
      .strictObject({
        window: z.number().int().min(1).max(100_000).default(100),
        min_samples: z.number().int().min(1).default(20),
        cooldown: parsedField(parseDurationMs).prefault('30s'),
        probes: z.number().int().min(1).max(1000).default(3),
      })
      .prefault({}),
  }),
});

export type PolicyFile = z.output<typeof PolicyFile>;
export type RoutingPolicy = PolicyFile['routing_policy'];
