/** Figures for the fleet page, from jobs' records: percentiles and histograms. */

/** The q-quantile (0..1) of `values` by nearest rank; null when there are none. */
export function percentile(values: readonly number[], q: number): number | null {
  if (!values.length) return null;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))] as number;
}

/** Upper bounds (ms) of the start-time buckets, as Prometheus' histograms count them (`le`). */
export const START_BUCKETS_MS = [50, 100, 250, 500, 1000, 2500, 5000, 10_000, Infinity];

/** How many values fall in each bucket: above the previous bound, up to and including this one. */
export function histogram(values: readonly number[], bounds: readonly number[]): number[] {
  const counts = bounds.map(() => 0);
  for (const v of values) {
    const i = bounds.findIndex((b) => v <= b);
    if (i >= 0) counts[i] = (counts[i] as number) + 1;
  }
  return counts;
}

export interface RuntimeFigures {
  runtime: string;
  jobs: number;
  live: number;
  untrusted: number;
  startupMs: number[];
  queueWaitMs: number[];
}

/** Per runtime: its jobs, how many run or wait now, their sandbox start times and queue waits. */
export function byRuntime(
  jobs: ReadonlyArray<{
    runtime: string;
    state: string;
    startupMs: number | null;
    createdAt: number;
    startedAt: number | null;
    decision: { trust: string };
  }>,
): RuntimeFigures[] {
  const out = new Map<string, RuntimeFigures>();
  for (const j of jobs) {
    const f = out.get(j.runtime) ?? {
      runtime: j.runtime,
      jobs: 0,
      live: 0,
      untrusted: 0,
      startupMs: [],
      queueWaitMs: [],
    };
    f.jobs++;
    if (j.state === 'queued' || j.state === 'starting' || j.state === 'running') f.live++;
    if (j.decision.trust === 'untrusted') f.untrusted++;
    if (j.startupMs !== null) f.startupMs.push(j.startupMs);
    if (j.startedAt !== null) f.queueWaitMs.push(j.startedAt - j.createdAt);
    out.set(j.runtime, f);
  }
  return [...out.values()].sort((a, b) => b.jobs - a.jobs || a.runtime.localeCompare(b.runtime));
}
