/**
 * A tenant's limits on its jobs, with Kubernetes LimitRange semantics: `default` and
 * `defaultRequest` fill in what a job does not say (before validation, so a job that says
 * nothing gets the tenant's defaults, not Boxcar's), `max` refuses what is too large, and
 * `maxLimitRequestRatio` refuses requests far below their limits (a tenant asking for
 * `requests.memory: 1` would otherwise pack a node with jobs that each may use gigabytes).
 * Priorities order a tenant's own jobs only, and are capped by `max_priority`.
 */

import { z } from 'zod';
import { UserError } from '../lib/errors.js';
import { PipelineSpec } from '../pipelines/plan.js';
import { formatBytes, parseBytes } from '../lib/quantity.js';
import { DEFAULTS, JobSpec } from '../jobs/spec.js';
import type { Tenant, TenantLimits } from './tenant-config.js';

type Raw = Record<string, unknown>;
const isMap = (v: unknown): v is Raw => typeof v === 'object' && v !== null && !Array.isArray(v);

/** The job as written (the file's vocabulary) with the tenant's defaults where it says nothing. */
export function withLimitDefaults(raw: unknown, limits: TenantLimits): unknown {
  if (!isMap(raw)) return raw;
  const job: Raw = { ...raw };
  const d = limits.default;
  const dr = limits.defaultRequest;
  if (job.timeout === undefined && d.timeout !== undefined) job.timeout = `${d.timeout}ms`;
  if (job.resources !== undefined && !isMap(job.resources)) return job; // the schema says why
  const resources: Raw = { ...((job.resources as Raw | undefined) ?? {}) };
  if (resources.memory === undefined && d.memory !== undefined) resources.memory = d.memory;
  if (resources.cpus === undefined && d.cpu !== undefined) resources.cpus = `${d.cpu}m`;
  if (resources.pids === undefined && d.pids !== undefined) resources.pids = d.pids;
  if (resources.requests !== undefined && !isMap(resources.requests)) return { ...job, resources };
  const requests: Raw = { ...((resources.requests as Raw | undefined) ?? {}) };
  if (requests.memory === undefined && dr.memory !== undefined)
    requests.memory = Math.min(dr.memory, toBytes(resources.memory));
  if (requests.cpus === undefined && dr.cpu !== undefined) requests.cpus = `${dr.cpu}m`;
  if (Object.keys(requests).length) resources.requests = requests;
  if (Object.keys(resources).length) job.resources = resources;
  return job;
}

/** A default request never exceeds the job's own limit (that would refuse a job that said nothing). */
function toBytes(memory: unknown): number {
  const parsed = parseBytes(
    typeof memory === 'number' || typeof memory === 'string' ? memory : DEFAULTS.memory,
  );
  return parsed.ok ? parsed.value : Number.MAX_SAFE_INTEGER; // the schema reports a bad size
}

/** The job schema for one tenant: its defaults applied, then the usual validation. */
export const jobSpecFor = (t: Tenant) => z.preprocess((raw) => withLimitDefaults(raw, t.limits), JobSpec);

/** A pipeline file (a webhook's `.boxcar.yml`) for one tenant: each job with its defaults. */
export const pipelineSpecFor = (t: Tenant) =>
  z.preprocess(
    (raw) =>
      isMap(raw) && Array.isArray(raw.jobs)
        ? { ...raw, jobs: raw.jobs.map((j: unknown) => withLimitDefaults(j, t.limits)) }
        : raw,
    PipelineSpec,
  );

/** Refuses a job over its tenant's maxima, ratios or priority cap, naming the field and the fix. */
export function checkLimits(spec: JobSpec, t: Tenant, where = 'job'): void {
  const problems: string[] = [];
  const { max, maxLimitRequestRatio: ratio } = t.limits;
  const over = (field: string, value: number, limit: number | undefined, show: (n: number) => string) => {
    if (limit !== undefined && value > limit)
      problems.push(
        `${field}: ${show(value)} is more than tenant ${t.name} allows (${show(limit)}); ask for at most ${show(limit)}`,
      );
  };
  over('resources.memory', spec.limits.memoryBytes, max.memory, formatBytes);
  over('resources.cpus', spec.limits.cpuMillis, max.cpu, (m) => `${m}m`);
  over('resources.pids', spec.limits.pids, max.pids, String);
  over('timeout', spec.timeoutMs, max.timeout, (ms) => `${ms / 1000}s`);
  const tooLow = (
    field: string,
    limit: number,
    request: number,
    most: number | undefined,
    show: (n: number) => string,
  ) => {
    if (most !== undefined && limit > request * most)
      problems.push(
        `${field}: ${show(request)} is too far below its limit ${show(limit)} (tenant ${t.name} allows limits up to ${most}× the request); request at least ${show(Math.ceil(limit / most))}`,
      );
  };
  tooLow(
    'resources.requests.memory',
    spec.limits.memoryBytes,
    spec.requests.memoryBytes,
    ratio.memory,
    formatBytes,
  );
  tooLow(
    'resources.requests.cpus',
    spec.limits.cpuMillis,
    spec.requests.cpuMillis,
    ratio.cpu,
    (m) => `${m}m`,
  );
  if (t.maxPriority !== undefined && spec.priority > t.maxPriority)
    problems.push(
      `priority: ${spec.priority} is above tenant ${t.name}'s max_priority ${t.maxPriority}; use at most ${t.maxPriority}`,
    );
  if (problems.length) throw new UserError(`${where}: ${problems.join('; ')}`);
}
