import type { Micro } from '../cost/money.js';

export const DAY_MS = 86_400_000;

export interface DailyCost {
  /** YYYY-MM-DD (UTC). */
  day: string;
  byRuntime: Map<string, Micro>;
}

/**
 * What jobs that finished on each of `days` UTC days from `from` (a midnight) cost, per
 * runtime; a job outside those days counts on none.
 */
export function costByDay<J extends { runtime: string; finishedAt: number | null }>(
  jobs: readonly J[],
  from: number,
  days: number,
  priceOf: (job: J) => Micro,
): DailyCost[] {
  const out: DailyCost[] = Array.from({ length: days }, (_, i) => ({
    day: new Date(from + i * DAY_MS).toISOString().slice(0, 10),
    byRuntime: new Map(),
  }));
  for (const j of jobs) {
    if (j.finishedAt === null || j.finishedAt < from) continue;
    const d = out[Math.floor((j.finishedAt - from) / DAY_MS)];
    if (d) d.byRuntime.set(j.runtime, (d.byRuntime.get(j.runtime) ?? 0) + priceOf(j));
  }
  return out;
}
