import type { JobRecord, Store } from '../store/store.js';
import { TERMINAL_STATES } from '../jobs/states.js';
import type { Prices } from './model.js';
import { dollars, type Micro } from './money.js';

/**
 * A finished job's price, as OpenCost allocates: what it reserved or used, whichever is more,
 * for as long as it ran, at the node's rates; the runtime's own share (a VMM, a guest kernel) on
 * a line of its own. Memory is max(request, usage less the runtime's share), CPU max(request ×
 * time, CPU time used).
 */
export interface JobPrice {
  memory: Micro;
  cpu: Micro;
  /** The runtime's own memory (the part of the job's measure that is not the job's). */
  overhead: Micro;
  total: Micro;
}

export type PricedJob = Pick<
  JobRecord,
  'spec' | 'peakMemoryBytes' | 'cpuUsageNs' | 'durationMs' | 'runtime' | 'tenant' | 'origin' | 'decision'
>;

/** The price in (fractional) dollars: sums round once, so many short jobs lose nothing to rounding. */
function dollarsOf(job: PricedJob, overheadBytes: number, prices: Prices) {
  const hours = (job.durationMs ?? 0) / 3_600_000;
  const peak = job.peakMemoryBytes ?? 0;
  const overhead = Math.min(peak, overheadBytes);
  const memoryBytes = Math.max(job.spec.requests.memoryBytes, peak - overhead);
  const coreHours = Math.max(
    (job.spec.requests.cpuMillis / 1000) * hours,
    (job.cpuUsageNs ?? 0) / 1e9 / 3600,
  );
  const gib = 2 ** 30;
  return {
    memory: (memoryBytes / gib) * hours * prices.dollarsPerGiBHour,
    cpu: coreHours * prices.dollarsPerCoreHour,
    overhead: (overhead / gib) * hours * prices.dollarsPerGiBHour,
  };
}

const toMicro = (d: { memory: number; cpu: number; overhead: number }): JobPrice => {
  const p = { memory: dollars(d.memory), cpu: dollars(d.cpu), overhead: dollars(d.overhead) };
  return { ...p, total: dollars(d.memory + d.cpu + d.overhead) };
};

/** `overheadBytes`: the most the runtime adds to this job's measure (its driver's capabilities). */
export function priceJob(job: PricedJob, overheadBytes: number, prices: Prices): JobPrice {
  return toMicro(dollarsOf(job, overheadBytes, prices));
}

export const COST_GROUPS = ['tenant', 'repo', 'pipeline', 'runtime', 'trust'] as const;
export type CostGroup = (typeof COST_GROUPS)[number];

export interface CostLine extends JobPrice {
  key: string;
  jobs: number;
  /** What untrusted jobs cost above the same jobs on runc (no runtime share there): their overhead. */
  isolationPremium: Micro;
}

const keyOf = (job: PricedJob, by: CostGroup): string => {
  switch (by) {
    case 'tenant':
      return job.tenant;
    case 'repo':
      return job.origin.repository ?? job.spec.repository ?? '-';
    case 'pipeline':
      return job.origin.pipeline ?? job.origin.group ?? '-';
    case 'runtime':
      return job.runtime;
    case 'trust':
      return job.decision.trust;
  }
};

/** Finished jobs' prices summed by `by`, most expensive first. */
export function costReport(
  jobs: PricedJob[],
  by: CostGroup,
  overheadOf: (job: PricedJob) => number,
  prices: Prices,
): CostLine[] {
  const sums = new Map<
    string,
    { jobs: number; memory: number; cpu: number; overhead: number; premium: number }
  >();
  for (const job of jobs) {
    const key = keyOf(job, by);
    const p = dollarsOf(job, overheadOf(job), prices);
    const s = sums.get(key) ?? { jobs: 0, memory: 0, cpu: 0, overhead: 0, premium: 0 };
    s.jobs++;
    s.memory += p.memory;
    s.cpu += p.cpu;
    s.overhead += p.overhead;
    if (job.decision.trust === 'untrusted') s.premium += p.overhead;
    sums.set(key, s);
  }
  const lines = new Map<string, CostLine>();
  for (const [key, s] of sums)
    lines.set(key, { key, jobs: s.jobs, ...toMicro(s), isolationPremium: dollars(s.premium) });
  return [...lines.values()].sort((a, b) => b.total - a.total || a.key.localeCompare(b.key));
}

/**
 * Idle capacity, as OpenCost shows it: what a node's capacity cost over a window, less what the
 * jobs it ran were allocated in it (memory, CPU and their runtimes' share). The window starts
 * at `from` or at the node's first job, whichever is later: a new node has not been idle for
 * a week.
 */
export function idleCapacity(
  jobs: Array<PricedJob & Pick<JobRecord, 'createdAt'>>,
  capacity: { memoryBytes: number; cpuMillis: number },
  window: { from: number; to: number },
  overheadOf: (job: PricedJob) => number,
  prices: Prices,
): { from: number; to: number; capacity: Micro; allocated: Micro; idle: Micro } {
  const from = Math.max(window.from, Math.min(window.to, ...jobs.map((j) => j.createdAt)));
  const hours = Math.max(0, window.to - from) / 3_600_000;
  const capacityDollars =
    (capacity.memoryBytes / 2 ** 30) * hours * prices.dollarsPerGiBHour +
    (capacity.cpuMillis / 1000) * hours * prices.dollarsPerCoreHour;
  let allocated = 0;
  for (const job of jobs) {
    const p = dollarsOf(job, overheadOf(job), prices);
    allocated += p.memory + p.cpu + p.overhead;
  }
  return {
    from,
    to: window.to,
    capacity: dollars(capacityDollars),
    allocated: dollars(allocated),
    idle: dollars(Math.max(0, capacityDollars - allocated)),
  };
}

/** The newest finished jobs a report reads at most. */
const REPORT_JOBS_MAX = 100_000;

/**
 * What the jobs that finished in the last `sinceMs` cost (one tenant's, or all), summed by
 * `by`: for `boxcar cost` and `GET /v1/cost`.
 */
export async function finishedJobsCost(
  store: Pick<Store, 'listJobs'>,
  q: { by: CostGroup; sinceMs: number; tenant?: string },
  overheadOf: (job: PricedJob) => number,
  prices: Prices,
): Promise<CostLine[]> {
  return costReport(await finishedJobs(store, q), q.by, overheadOf, prices);
}

/** The jobs that finished in the last `sinceMs` and ran (one tenant's, or all). */
export async function finishedJobs(
  store: Pick<Store, 'listJobs'>,
  q: { sinceMs: number; tenant?: string },
): Promise<JobRecord[]> {
  const from = Date.now() - q.sinceMs;
  return (
    await store.listJobs({ tenant: q.tenant, states: [...TERMINAL_STATES], limit: REPORT_JOBS_MAX })
  ).filter((j) => j.durationMs !== null && (j.finishedAt ?? 0) >= from);
}
